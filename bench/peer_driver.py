"""Drive the Node.js side of the benchmark from Python.

Starts and stops the Node.js Socket.IO peer (``bench/peer/server.js``), runs
the load generator (``bench/loadgen/loadgen.js``) and parses its JSON result,
and reads any server process's RSS and CPU time from ``/proc`` so that Node
and Huddle are measured the same way. Linux only; loopback only.

Secrets travel to the Node processes in the environment, never on a command
line (which any local user can read in ``ps``), and nothing here logs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit

BENCH_DIR: Final = Path(__file__).resolve().parent
PEER_SCRIPT: Final = BENCH_DIR / "peer" / "server.js"
LOADGEN_SCRIPT: Final = BENCH_DIR / "loadgen" / "loadgen.js"
# One package.json serves both the peer and the load generator.
NODE_PACKAGE_DIRS: Final = (BENCH_DIR,)

LOADGEN_MODES: Final = frozenset({"handshake", "reject", "fanout", "idle", "storm"})
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})

JSONObject: TypeAlias = dict[str, Any]
LoadgenOption: TypeAlias = str | int | float | bool | None


class BenchDriverError(RuntimeError):
    """A benchmark process could not be set up, started, or gave no usable result."""


# ---------------------------------------------------------------------------
# Node dependencies
# ---------------------------------------------------------------------------


def node_executable() -> str:
    """Path of ``node``; raises when Node.js is not installed."""
    node = shutil.which("node")
    if node is None:
        raise BenchDriverError("node is not on PATH: the benchmark needs Node.js 20 or later")
    return node


def _deps_are_current(package_dir: Path) -> bool:
    # `npm ci` writes node_modules/.package-lock.json; an older one means the
    # lock file changed since the last install.
    installed = package_dir / "node_modules" / ".package-lock.json"
    lock = package_dir / "package-lock.json"
    return installed.is_file() and installed.stat().st_mtime >= lock.stat().st_mtime


def ensure_node_deps(*, force: bool = False, timeout: float = 600.0) -> None:
    """Run ``npm ci`` in each bench package folder whose node_modules is missing or stale."""
    for package_dir in NODE_PACKAGE_DIRS:
        if not force and _deps_are_current(package_dir):
            continue
        npm = shutil.which("npm")
        if npm is None:
            raise BenchDriverError(
                "npm is not on PATH: cannot install the benchmark's Node packages"
            )
        try:
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=package_dir,
                check=True,
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.CalledProcessError as exc:
            raise BenchDriverError(
                f"npm ci failed in {package_dir}: {_tail(exc.stderr.decode(errors='replace'))}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise BenchDriverError(
                f"npm ci timed out after {timeout:.0f} s in {package_dir}"
            ) from exc


# ---------------------------------------------------------------------------
# Processes: ports, readiness, limits, pinning, stopping
# ---------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def require_loopback(url: str) -> None:
    """Refuse any URL whose host is not a loopback address."""
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise BenchDriverError(f"benchmark traffic stays on loopback; refusing host {host!r}")


def raise_fd_limit() -> int:
    """Raise this process's open-file soft limit to the hard limit; children inherit it.

    Each benchmark connection holds a descriptor in the server and one in the
    load generator, so 10,000 connections need more than the usual 1,024.
    Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_to_cpu(pid: int, cpu: int) -> None:
    """Pin every thread of ``pid`` to one CPU; threads it starts later inherit the pin."""
    task_dir = Path(f"/proc/{pid}/task")
    tids = [int(entry.name) for entry in task_dir.iterdir()] if task_dir.is_dir() else [pid]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, {cpu})


def wait_http_ready(
    url: str, *, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``url`` until it answers 2xx; fail early if ``process`` exits meanwhile."""
    require_loopback(url)
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise BenchDriverError(f"process {process.pid} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 (loopback only)
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() >= deadline:
            raise BenchDriverError(f"{url} not ready after {timeout:.0f} s")
        time.sleep(0.05)


@dataclass
class ServerProcess:
    """A server started for a benchmark run; stop it with :func:`stop_process`."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> ProcStats:
        """This server's RSS and CPU time now."""
        return read_proc_stats(self.pid)


def start_server(
    argv: Sequence[str],
    *,
    name: str,
    port: int,
    health_url: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    cpu: int | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 20.0,
) -> ServerProcess:
    """Start any server (the Node peer or Huddle) and wait until ``health_url`` answers.

    Its stdout and stderr go to ``log_path`` (a new temporary file by
    default), whose tail is quoted if it fails to start.
    """
    raise_fd_limit()
    if log_path is None:
        fd, temp_name = tempfile.mkstemp(prefix=f"huddle-bench-{name}-", suffix=".log")
        os.close(fd)
        log_path = Path(temp_name)
    child_env = {**os.environ, **(env or {})}
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for the driver does not hit the server first
        )
    server = ServerProcess(name=name, popen=popen, port=port, log_path=log_path)
    try:
        if cpu is not None:
            pin_to_cpu(popen.pid, cpu)
        wait_http_ready(health_url, timeout=ready_timeout, process=popen)
    except BaseException as exc:
        stop_process(server)
        if isinstance(exc, BenchDriverError):
            log_tail = _tail(log_path.read_text(errors="replace"))
            raise BenchDriverError(f"{name} did not start: {exc}; log: {log_tail}") from exc
        raise
    return server


def start_peer(
    secret: str,
    *,
    port: int | None = None,
    cpu: int | None = None,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> ServerProcess:
    """Start the Node.js Socket.IO peer on a free loopback port (or ``port``)."""
    if not secret:
        raise BenchDriverError("the peer needs a JWT secret")
    ensure_node_deps()
    chosen = port if port is not None else free_port()
    peer_env = {**(env or {}), "JWT_SECRET": secret, "PORT": str(chosen), "HOST": "127.0.0.1"}
    return start_server(
        [node_executable(), str(PEER_SCRIPT)],
        name="node-peer",
        port=chosen,
        health_url=f"http://127.0.0.1:{chosen}/healthz",
        env=peer_env,
        cwd=BENCH_DIR,
        cpu=cpu,
        log_path=log_path,
    )


def stop_process(target: ServerProcess | subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """Stop one process by its PID: SIGTERM, then SIGKILL after ``timeout``; its exit code."""
    popen = target.popen if isinstance(target, ServerProcess) else target
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGKILL)
            popen.wait(timeout=timeout)
    return popen.returncode


@contextlib.contextmanager
def running_peer(secret: str, **kwargs: Any) -> Iterator[ServerProcess]:
    """The peer for the duration of a ``with`` block."""
    server = start_peer(secret, **kwargs)
    try:
        yield server
    finally:
        stop_process(server)


def peer_stats(server: ServerProcess) -> JSONObject:
    """The peer's own view: ``process.memoryUsage()``, ``process.cpuUsage()``, connections."""
    with urllib.request.urlopen(f"{server.base_url}/bench/stats", timeout=5.0) as response:  # noqa: S310
        data: JSONObject = json.load(response)
        return data


# ---------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStats:
    """A process's resident memory and CPU time (all threads) at one moment."""

    pid: int
    rss_bytes: int
    user_seconds: float
    system_seconds: float
    threads: int
    taken_at: float = field(default_factory=time.monotonic)

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.system_seconds


_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")


def read_proc_stats(pid: int) -> ProcStats:
    """RSS and CPU time of ``pid`` from /proc/<pid>/stat; raises if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise BenchDriverError(f"process {pid} is gone") from exc
    # Field 2, the command name, may contain spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5): utime is field 14, stime 15, threads 20, rss 24.
    return ProcStats(
        pid=pid,
        rss_bytes=int(fields[21]) * _PAGE_SIZE,
        user_seconds=int(fields[11]) / _CLOCK_TICKS,
        system_seconds=int(fields[12]) / _CLOCK_TICKS,
        threads=int(fields[17]),
    )


def cpu_between(before: ProcStats, after: ProcStats) -> float:
    """CPU seconds ``pid`` used between two readings."""
    if before.pid != after.pid:
        raise BenchDriverError("readings of two different processes")
    return after.cpu_seconds - before.cpu_seconds


# ---------------------------------------------------------------------------
# The load generator
# ---------------------------------------------------------------------------


def loadgen_argv(mode: str, options: Mapping[str, LoadgenOption]) -> list[str]:
    """Command line for one load-generator run.

    ``options`` maps long option names (``"clients"``, ``"trigger-url"``; an
    underscore stands for a dash) to values; ``True`` gives a bare flag,
    ``False`` and ``None`` leave the option out.
    """
    if mode not in LOADGEN_MODES:
        raise BenchDriverError(f"unknown load generator mode {mode!r}")
    argv = [node_executable(), str(LOADGEN_SCRIPT), mode]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        else:
            argv.extend([flag, str(value)])
    for key in ("url", "trigger-url", "trigger_url"):
        url = options.get(key)
        if isinstance(url, str):
            require_loopback(url.replace("{{i}}", "0"))
    return argv


def _loadgen_env(secret: str, env: Mapping[str, str] | None) -> dict[str, str]:
    if not secret:
        raise BenchDriverError("the load generator needs the JWT secret the server uses")
    return {**os.environ, **(env or {}), "JWT_SECRET": secret}


def _parse_result(stdout: bytes, stderr: bytes, returncode: int | None) -> JSONObject:
    for line in reversed(stdout.decode(errors="replace").strip().splitlines()):
        if line.startswith("{"):
            try:
                result: JSONObject = json.loads(line)
            except json.JSONDecodeError:
                break
            return result
    error_tail = _tail(stderr.decode(errors="replace"))
    raise BenchDriverError(f"load generator gave no result (exit {returncode}): {error_tail}")


def run_loadgen(
    mode: str,
    options: Mapping[str, LoadgenOption],
    *,
    secret: str,
    env: Mapping[str, str] | None = None,
    cpu: int | None = None,
    timeout: float | None = None,
) -> JSONObject:
    """Run the load generator to completion and return its JSON result.

    A run that measured but missed its target (``"ok": false``, exit 1) still
    returns its result; no result at all raises :class:`BenchDriverError`.
    ``timeout`` defaults to the generator's own ``--timeout`` plus a margin.
    """
    if mode == "idle":
        raise BenchDriverError("idle mode holds connections: use start_idle_load()")
    argv = loadgen_argv(mode, options)
    raise_fd_limit()
    own_timeout = float(options.get("timeout") or 120)
    popen = subprocess.Popen(
        argv,
        cwd=BENCH_DIR,
        env=_loadgen_env(secret, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if cpu is not None:
        pin_to_cpu(popen.pid, cpu)
    try:
        out, err = popen.communicate(timeout=timeout if timeout is not None else own_timeout + 30)
    except subprocess.TimeoutExpired as exc:
        stop_process(popen)
        raise BenchDriverError(f"load generator ({mode}) did not finish in time") from exc
    except BaseException:  # Ctrl-C or an error while waiting: never leave it running
        stop_process(popen)
        raise
    return _parse_result(out, err, popen.returncode)


@dataclass
class IdleLoad:
    """An ``idle`` load generator holding its connections open; call :meth:`finish`."""

    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def finish(self, timeout: float = 60.0) -> JSONObject:
        """Close the connections (by closing the generator's stdin) and return its result."""
        try:
            out, err = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            stop_process(self.popen)
            raise BenchDriverError("idle load generator did not stop in time") from exc
        except BaseException:
            stop_process(self.popen)
            raise
        return _parse_result(out, err, self.popen.returncode)

    def stop(self) -> None:
        """Stop it by PID without waiting for a result (cleanup after an error)."""
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        stop_process(self.popen)


def hold_users_online(
    url: str,
    server_pid: int,
    users: str,
    *,
    clients: int,
    concurrency: int,
    quiet_ms: int,
    secret: str,
    cpu: int | None = None,
    ready_timeout: float = 600.0,
) -> IdleLoad:
    """`start_idle_load` for `clients` distinct users of the range `users` ("1-2000"),
    `concurrency` connecting at a time, held (up to an hour) once the wire has been
    quiet for `quiet_ms`: how the idle scenario and the profiling tools bring users
    online and keep them there."""
    return start_idle_load(
        {
            "url": url,
            "clients": clients,
            "concurrency": concurrency,
            "users": users,
            "server_pid": server_pid,
            "connect_timeout": 120,
            "quiet": quiet_ms,
            "drain_timeout": 600,
            "hold": 3600,
            "timeout": 7200,
        },
        secret=secret,
        cpu=cpu,
        ready_timeout=ready_timeout,
    )


def start_idle_load(
    options: Mapping[str, LoadgenOption],
    *,
    secret: str,
    env: Mapping[str, str] | None = None,
    cpu: int | None = None,
    ready_timeout: float = 300.0,
) -> IdleLoad:
    """Open the idle connections and return once the generator prints READY.

    The generator holds them until :meth:`IdleLoad.finish` closes its stdin
    (or its ``--hold`` seconds pass), so measure the server in between.
    """
    argv = loadgen_argv("idle", options)
    raise_fd_limit()
    popen = subprocess.Popen(
        argv,
        cwd=BENCH_DIR,
        env=_loadgen_env(secret, env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if cpu is not None:
        pin_to_cpu(popen.pid, cpu)
    load = IdleLoad(popen)
    if popen.stderr is None:
        load.stop()
        raise BenchDriverError("no stderr pipe")
    try:
        _wait_for_line(popen.stderr.fileno(), "READY", ready_timeout)
    except BenchDriverError:
        if popen.stdin is not None:
            popen.stdin.close()
        result = load.finish(timeout=30.0)
        raise BenchDriverError(
            f"idle load generator never got READY: {json.dumps(result)[:500]}"
        ) from None
    except BaseException:
        load.stop()
        raise
    return load


def _wait_for_line(fd: int, wanted: str, timeout: float) -> None:
    # Raw reads on the descriptor: a buffered readline could hold the wanted
    # line in its buffer while select() waits on the empty pipe.
    deadline = time.monotonic() + timeout
    pending = b""
    target = wanted.encode()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchDriverError(f"no {wanted} line after {timeout:.0f} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise BenchDriverError(f"stream closed before {wanted}")
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if any(line.strip() == target for line in lines):
            return


def _tail(text: str, limit: int = 800) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]
