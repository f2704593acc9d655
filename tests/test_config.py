"""Settings are validated at start: one clear line naming the variable, never a traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from huddle.config import Settings, load_settings
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
        ({"JWT_SECRET": GOOD_SECRET, "SERVICE_TOKEN": "short-service-token"}, "SERVICE_TOKEN"),
        ({"JWT_SECRET": GOOD_SECRET, "SERVICE_TOKEN": "s" * 40}, "SERVICE_TOKEN"),
        ({"JWT_SECRET": GOOD_SECRET, "SERVICE_TOKEN": GOOD_SECRET}, "SERVICE_TOKEN"),
        ({"JWT_SECRET": GOOD_SECRET, "REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"JWT_SECRET": GOOD_SECRET, "HOST": "no-such-host.invalid"}, "HOST"),
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
    if "SERVICE_TOKEN" in env:
        assert env["SERVICE_TOKEN"] not in result.stderr


def test_the_service_credential_is_derived_apart_from_the_jwt_secret(tmp_path: Path) -> None:
    """No SERVICE_TOKEN with HS256: every process sharing JWT_SECRET derives the same
    credential, which is neither the secret nor anything a token could be."""
    settings = Settings(
        _env_file=None, app_env="test", huddle_data_dir=tmp_path, jwt_secret=GOOD_SECRET
    )  # type: ignore[call-arg]
    again = Settings(
        _env_file=None, app_env="test", huddle_data_dir=tmp_path, jwt_secret=GOOD_SECRET
    )  # type: ignore[call-arg]
    other = Settings(
        _env_file=None, app_env="test", huddle_data_dir=tmp_path, jwt_secret=GOOD_SECRET + "x"
    )  # type: ignore[call-arg]
    credential = settings.service_credential()
    assert credential is not None and credential == again.service_credential()
    assert credential != other.service_credential()
    assert GOOD_SECRET not in credential and "." not in credential
    given = Settings(
        _env_file=None,
        app_env="test",
        huddle_data_dir=tmp_path,
        jwt_secret=GOOD_SECRET,
        service_token="t" * 8,
    )  # type: ignore[call-arg]
    assert given.service_credential() == "t" * 8


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
    with pytest.raises(ConfigError, match=r"^BACKEND_URL: must be a URL starting with http://"):
        load_settings(backend_url="api:8000")
    with pytest.raises(ConfigError, match=r"^DATABASE_URL: 'mysql' databases are not supported"):
        load_settings(database_url="mysql://root:hunter2@db/huddle")
    aliases = {
        "postgres://u@h/d": "postgresql+asyncpg://u@h/d",
        "sqlite:///x": "sqlite+aiosqlite:///x",
    }
    for given, meant in aliases.items():
        assert load_settings(database_url=given).database_url == meant


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
    assert missing.returncode == 1 and "USER_NOT_FOUND" in missing.stderr
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


def _production_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(app_env="production", **{"jwt_secret": GOOD_SECRET, **overrides})
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "secret",
    [
        "a" * 32,
        "a" * 64,
        "ab" * 16,
        "secretsecret" * 3,
        "0" * 31 + "1",
        "YOUR-SUPER-SECRET-JWT-KEY-CHANGE-THIS-IN-PRODUCTION",
        "Your-Super-Secret-Jwt-Key-Change-This-In-Production",
    ],
)
def test_production_refuses_a_secret_of_little_entropy(secret: str) -> None:
    message = _production_error(jwt_secret=secret)
    assert message.startswith("JWT_SECRET: ")
    assert secret not in message


@pytest.mark.parametrize(
    "secret",
    [GOOD_SECRET, "kQ8v1ZtR4mW9pX2cL7nB5yH3dF6gJ0sA", "0123456789abcdef" * 2 + "x"],
)
def test_production_accepts_a_random_looking_secret(secret: str, tmp_path: Path) -> None:
    settings = load_settings(app_env="production", jwt_secret=secret, huddle_data_dir=tmp_path)
    assert settings.jwt_secret == secret


@pytest.mark.parametrize(
    "proxies",
    [
        ["0.0.0.0/0"],
        ["::/0"],
        ["10.0.0.0/8", "0.0.0.0/0"],
        ["1.2.3.4/0"],  # a network of every address, however it is written
        ["2001:db8::/0"],
    ],
)
def test_production_refuses_trusted_proxies_that_trust_everyone(proxies: list[str]) -> None:
    message = _production_error(trusted_proxies=proxies)
    assert message.startswith("TRUSTED_PROXIES: ")


def test_production_accepts_real_proxy_networks(tmp_path: Path) -> None:
    proxies = ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]
    settings = load_settings(
        app_env="production",
        jwt_secret=GOOD_SECRET,
        trusted_proxies=proxies,
        huddle_data_dir=tmp_path,
    )
    assert settings.trusted_proxies == proxies


@pytest.mark.parametrize("origins", [["null"], ["https://app.example", "NULL"]])
def test_production_refuses_the_null_origin(origins: list[str]) -> None:
    assert _production_error(cors_origin=origins).startswith("CORS_ORIGIN: ")


def test_development_keeps_its_easy_settings(tmp_path: Path) -> None:
    settings = load_settings(
        app_env="development",
        jwt_secret="a" * 32,
        trusted_proxies=["0.0.0.0/0"],
        cors_origin=["null"],
        huddle_data_dir=tmp_path,
    )
    assert settings.jwt_secret == "a" * 32


def test_a_weak_secret_stops_the_process_with_one_line(tmp_path: Path) -> None:
    """The refusals above go through the same one-line path as every other (one CLI run)."""
    env = {"APP_ENV": "production", "HUDDLE_DATA_DIR": str(tmp_path), "JWT_SECRET": "a" * 32}
    result = run_cli(["serve"], env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "JWT_SECRET" in lines[0], result.stderr
    assert "a" * 32 not in result.stderr
