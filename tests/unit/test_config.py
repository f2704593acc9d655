"""Settings are validated at start: one clear line naming the variable, never a traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from huddle.config import load_settings
from huddle.errors import ConfigError

HUDDLE = [sys.executable, "-m", "huddle.cli"]
GOOD_SECRET = "a-production-secret-that-is-long-enough-0123456789"


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JWT_", "APP_", "NODE_ENV", "CORS"))
    }
    return subprocess.run(
        [*HUDDLE, *args], env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "JWT_SECRET"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"JWT_SECRET": "your-super-secret-jwt-key-change-this-in-production"}, "JWT_SECRET"),
        ({"JWT_SECRET": GOOD_SECRET, "CORS_ORIGIN": "*"}, "CORS_ORIGIN"),
        ({"JWT_SECRET": GOOD_SECRET, "JWT_ALGORITHM": "none"}, "JWT_ALGORITHM"),
        ({"JWT_SECRET": GOOD_SECRET, "PORT": "http"}, "PORT"),
        ({"JWT_SECRET": GOOD_SECRET, "TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES"),
    ],
)
def test_production_refuses_bad_settings_with_one_line(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    result = run_cli(
        ["serve"], {"APP_ENV": "production", "HUDDLE_DATA_DIR": str(tmp_path), **env}, tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr
    if "JWT_SECRET" in env:
        assert env["JWT_SECRET"] not in result.stderr


def test_gateway_without_backend_url_is_one_line(tmp_path: Path) -> None:
    env = {"APP_ENV": "test", "HUDDLE_DATA_DIR": str(tmp_path), "JWT_SECRET": GOOD_SECRET}
    result = run_cli(["gateway"], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "huddle: configuration error: BACKEND_URL: required for huddle gateway"
    ]


def test_node_env_alias_is_honoured(tmp_path: Path) -> None:
    result = run_cli(
        ["serve"], {"NODE_ENV": "production", "HUDDLE_DATA_DIR": str(tmp_path)}, tmp_path
    )
    assert result.returncode == 2 and "JWT_SECRET" in result.stderr


def test_development_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = load_settings(app_env="development", huddle_data_dir=tmp_path)
    first = settings.hmac_secret()
    path = tmp_path / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_settings(app_env="development", huddle_data_dir=tmp_path).hmac_secret() == first


def test_load_settings_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="JWT_ACCESS_TTL"):
        load_settings(jwt_access_ttl=0)


def test_asymmetric_algorithm_needs_a_public_key() -> None:
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY_FILE"):
        load_settings(jwt_algorithm="RS256")


def test_cli_migrate_user_create_and_token(tmp_path: Path) -> None:
    env = {"APP_ENV": "test", "HUDDLE_DATA_DIR": str(tmp_path), "JWT_SECRET": GOOD_SECRET}
    assert run_cli(["migrate"], env, tmp_path).returncode == 0
    created = run_cli(
        [
            "user",
            "create",
            "--email",
            "root@example.com",
            "--name",
            "Root",
            "--password",
            "a-long-password",
            "--admin",
        ],
        env,
        tmp_path,
    )
    assert created.returncode == 0, created.stderr
    assert "created user 1 (administrator)" in created.stdout
    assert "a-long-password" not in created.stdout + created.stderr
    token = run_cli(["token", "--user", "1"], env, tmp_path)
    assert token.returncode == 0, token.stderr
    from huddle.security.tokens import TokenService

    claims = TokenService(
        load_settings(**{"jwt_secret": GOOD_SECRET, "huddle_data_dir": tmp_path})
    ).verify_access(token.stdout.strip())
    assert claims.user_id == 1
    missing = run_cli(["token", "--user", "99"], env, tmp_path)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    dup = run_cli(
        [
            "user",
            "create",
            "--email",
            "ROOT@example.com",
            "--name",
            "Root",
            "--password",
            "a-long-password",
        ],
        env,
        tmp_path,
    )
    assert dup.returncode == 1 and "EMAIL_TAKEN" in dup.stderr
