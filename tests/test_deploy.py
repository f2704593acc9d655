"""`huddle deploy nginx`: the nginx configuration rendered from the package's template.

What an operator relies on: every instance given is an upstream server, the
gateways are chosen by client address (Socket.IO long-polling needs its
requests on one instance), WebSocket upgrades pass, X-Forwarded-For is
appended (never replaced), bad addresses are refused in one line, and nginx
itself accepts the result (`nginx -t`, where nginx is installed: `make
nginx-deps`). The shipped example, deploy/nginx.conf, is that command's output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from huddle.cli import cli
from huddle.deploy import DeployError, render_nginx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _upstream(config: str, name: str) -> str:
    match = re.search(r"upstream " + name + r" \{(.*?)\n    \}", config, re.S)
    assert match, f"no upstream {name}"
    return match.group(1)


def _location(config: str, path: str) -> str:
    match = re.search(r"location " + re.escape(path) + r" \{(.*?)\n        \}", config, re.S)
    assert match, f"no location {path}"
    return match.group(1)


def test_every_instance_becomes_an_upstream_server_and_the_gateways_are_sticky() -> None:
    config = render_nginx(
        "127.0.0.1:8001,10.0.0.2:8002,[::1]:8003",
        ["gw-1.internal:3001", "127.0.0.1:3002"],
        listen="127.0.0.1:9090",
    )
    api = _upstream(config, "huddle_api")
    gateway = _upstream(config, "huddle_gateway")
    assert re.findall(r"server (\S+) ", api) == ["127.0.0.1:8001", "10.0.0.2:8002", "[::1]:8003"]
    assert re.findall(r"server (\S+) ", gateway) == ["gw-1.internal:3001", "127.0.0.1:3002"]
    # A restarted API is taken back 2 s after it answers (nginx's default: 10 s); a
    # gateway is never marked down, or a restarted one stays marked while its
    # WebSockets live (docs/operations.md "Rolling restart").
    assert all(
        line.strip().endswith("max_fails=1 fail_timeout=2s;")
        for line in api.splitlines()
        if line.strip().startswith("server ")
    )
    assert all(
        line.strip().endswith(" max_fails=0;")
        for line in gateway.splitlines()
        if line.strip().startswith("server ")
    )
    # The whole client address picks the gateway (ip_hash would use only a /24).
    assert "hash $remote_addr consistent;" in gateway and "ip_hash" not in gateway
    assert "hash" not in api  # REST is stateless: any instance
    assert re.search(r"^\s*listen 127\.0\.0\.1:9090;", config, re.M)
    assert "@@" not in config  # every placeholder filled


def test_socketio_location_upgrades_websockets_and_appends_x_forwarded_for() -> None:
    config = render_nginx("127.0.0.1:8001", "127.0.0.1:3001")
    socketio = _location(config, "/socket.io/")
    rest = _location(config, "/")
    assert "proxy_pass http://huddle_gateway;" in socketio
    assert "proxy_pass http://huddle_api;" in rest
    assert "proxy_http_version 1.1;" in socketio
    assert "proxy_set_header Upgrade $http_upgrade;" in socketio
    assert "proxy_set_header Connection $connection_upgrade;" in socketio
    for block in (socketio, rest):
        # Appended, so Huddle can take the right-most untrusted hop.
        assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in block
    # Longer than Engine.IO's ping interval + timeout (25 s + 20 s): a held poll or an
    # idle WebSocket is not cut by nginx.
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", socketio)
    assert read_timeout and int(read_timeout.group(1)) > 45
    assert "proxy_buffering off;" in socketio
    assert re.search(r"^\s*listen 8080;", config, re.M)


@pytest.mark.parametrize(
    ("api", "gateway", "listen", "message"),
    [
        ("127.0.0.1", "127.0.0.1:3001", "8080", "--api: '127.0.0.1' is not host:port"),
        ("127.0.0.1:0", "127.0.0.1:3001", "8080", "no valid port"),
        ("127.0.0.1:8001", "::1:3001", "8080", "IPv6 address in brackets"),
        ("127.0.0.1:8001", "bad host;:3001", "8080", "not a valid host name"),
        ("127.0.0.1:8001,127.0.0.1:8001", "127.0.0.1:3001", "8080", "more than once"),
        ("127.0.0.1:8001", ",", "8080", "--gateway: give at least one address"),
        ("127.0.0.1:8001", "127.0.0.1:3001", "70000", "--listen"),
    ],
)
def test_bad_addresses_are_refused_with_the_option_named(
    api: str, gateway: str, listen: str, message: str
) -> None:
    with pytest.raises(DeployError, match=re.escape(message)):
        render_nginx(api, gateway, listen=listen)


def test_the_command_prints_the_config_and_refuses_bad_input_in_one_line() -> None:
    runner = CliRunner()
    args = ["deploy", "nginx", "--api", "127.0.0.1:8001,127.0.0.1:8002"]
    ok = runner.invoke(cli, [*args, "--gateway", "127.0.0.1:3001", "--gateway", "127.0.0.1:3002"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == render_nginx(
        ["127.0.0.1:8001,127.0.0.1:8002"], ["127.0.0.1:3001", "127.0.0.1:3002"]
    )
    bad = runner.invoke(cli, [*args, "--gateway", "localhost"])
    assert bad.exit_code == 2
    assert bad.stdout == ""
    assert bad.stderr == "huddle: --gateway: 'localhost' is not host:port\n"


def test_the_shipped_example_is_the_commands_output() -> None:
    """deploy/nginx.conf never drifts from the template (re-render it with its first line)."""
    example = EXAMPLE.read_text()
    command = re.search(r"^#   (huddle deploy nginx .*)$", example, re.M)
    assert command, "deploy/nginx.conf names the command that rendered it"
    done = subprocess.run(
        [sys.executable, "-m", "huddle.cli", *command.group(1).split()[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == example


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (`make nginx-deps`)")
@pytest.mark.skipif(os.geteuid() != 0, reason="nginx -t opens the system's log paths: needs root")
def test_nginx_accepts_the_rendered_config(tmp_path: Path) -> None:
    config = tmp_path / "nginx.conf"
    config.write_text(
        render_nginx(
            "127.0.0.1:8001,127.0.0.1:8002", "127.0.0.1:3001,[::1]:3002", listen="127.0.0.1:18080"
        )
    )
    assert NGINX is not None
    done = subprocess.run(
        [
            NGINX,
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(config),
            "-e",
            str(tmp_path / "error.log"),
            "-g",
            f"pid {tmp_path / 'nginx.pid'};",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
