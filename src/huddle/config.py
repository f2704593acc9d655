"""Settings: every variable of SPEC §2 and §5, typed and validated at start.

`Settings()` reads the environment and a `.env` file. `load_settings()` is what
the CLI calls: it turns a validation failure into `ConfigError`, whose message is
one line naming the variable, so the process can stop without a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from huddle.errors import ConfigError

# The placeholder the seed document and our docs show; refused in production.
SAMPLE_SECRETS = frozenset(
    {
        "your-super-secret-jwt-key-change-this-in-production",
        "change-me",
        "changeme",
        "secret",
    }
)
SERVICE_CREDENTIAL_LABEL = b"huddle/service-credential/v1"
"""The HMAC message the derived service credential is made with (not a JWT's signing input)."""
MIN_SECRET_BYTES = 32
MIN_SECRET_DISTINCT = 8
"""Distinct characters a production JWT_SECRET must have (any random one has far more)."""


def weak_secret(secret: str) -> str | None:
    """Why `secret` is too guessable for production, or None.

    Length alone says little: 32 x "a" is 32 bytes. Refused: a sample value in
    any letter case, a secret that repeats one shorter piece ("aaaa…",
    "abab…", "secretsecret…"), and one of fewer than MIN_SECRET_DISTINCT
    distinct characters ("0000…01"). The message never contains the secret.
    """
    if secret.lower() in SAMPLE_SECRETS:
        return "the sample value from the docs is refused"
    if len(secret) > 1 and secret in (secret + secret)[1:-1]:
        return "a repeated pattern has too little entropy"
    if len(set(secret)) < MIN_SECRET_DISTINCT:
        return f"fewer than {MIN_SECRET_DISTINCT} distinct characters is too little entropy"
    return None


def _require_strong_secret(name: str, value: str) -> None:
    """The production checks of a shared secret: long enough, and not a weak one."""
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"{name}: must be at least {MIN_SECRET_BYTES} bytes in production")
    weakness = weak_secret(value)
    if weakness is not None:
        raise ValueError(f"{name}: {weakness}; generate one with `openssl rand -base64 48`")


def trusts_everyone(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """A "proxy" network that holds every address (0.0.0.0/0, ::/0, 1.2.3.4/0…)."""
    return network.prefixlen == 0


Algorithm = Literal["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"]
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})


# DATABASE_URL schemes Huddle runs on, and the plain spellings it accepts for them
# (the form most hosting providers hand out): each driver is one Huddle ships with.
DATABASE_DRIVERS = {
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite": "sqlite+aiosqlite",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
DATABASE_EXAMPLES = (
    "postgresql+asyncpg://user:password@host/db or sqlite+aiosqlite:///path/huddle.db"
)


def database_url(value: str) -> str:
    """`value` with its driver made explicit, or ValueError naming what is wrong.

    The message shows the scheme only, never the rest (it may hold a password).
    """
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme:
        raise ValueError(f"not a database URL; expected {DATABASE_EXAMPLES}")
    driver = DATABASE_DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(f"{scheme!r} databases are not supported; use {DATABASE_EXAMPLES}")
    return f"{driver}://{rest}"


def _url_with_scheme(value: str | None, schemes: tuple[str, ...], example: str) -> str | None:
    """`value` (None when empty) if it is a URL of one of `schemes`; else a one-line
    reason showing the scheme only (the rest may hold a password)."""
    if not value:
        return None
    scheme, sep, _ = value.partition("://")
    if not sep or scheme.lower() not in schemes:
        kinds = ", ".join(f"{name}://" for name in schemes)
        raise ValueError(f"must be a URL starting with {kinds} (like {example})")
    return value


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Huddle's configuration; see the README for each variable."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    app_env: Literal["development", "production", "test"] = Field(
        "development", validation_alias=AliasChoices("APP_ENV", "NODE_ENV", "app_env")
    )

    jwt_secret: str | None = Field(None, repr=False)
    jwt_algorithm: Algorithm = "HS256"
    jwt_private_key_file: Path | None = None
    jwt_public_key_file: Path | None = None
    jwt_access_ttl: int = Field(900, gt=0)
    jwt_refresh_ttl: int = Field(1_209_600, gt=0)
    jwt_leeway: int = Field(10, ge=0)
    # Seconds after its rotation during which a refresh token presented again gets a
    # pair of the same family instead of revoking it (two tabs refreshing at once).
    refresh_reuse_grace: float = Field(10, ge=0)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None

    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "huddle"
    backend_url: str | None = Field(
        None, validation_alias=AliasChoices("BACKEND_URL", "PYTHON_BACKEND_URL", "backend_url")
    )
    huddle_data_dir: Path = Path("./data")
    port: int | None = Field(None, ge=0, le=65535)
    host: str = "127.0.0.1"
    cors_origin: Annotated[list[str], NoDecode] = ["http://localhost:3000"]
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] | None = None
    trusted_proxies: Annotated[list[str], NoDecode] = []

    auth_timeout: float = Field(10, gt=0)
    auth_grace: float = Field(30, gt=0)
    token_expiry_warning: float = Field(60, ge=0)
    event_retention_events: int = Field(10_000, gt=0)
    event_retention_hours: float = Field(24, gt=0)
    backend_timeout: float = Field(2, gt=0)
    ws_compression: bool = False
    # "auto": the accel modules whose libraries are at their tested versions run
    # (huddle/accel); "off": the libraries' own public paths only.
    accel: Literal["auto", "off"] = "auto"
    # Engine.IO heartbeat (seconds), as Socket.IO's pingInterval / pingTimeout:
    # a client that misses a pong for ping_timeout is disconnected.
    socket_ping_interval: float = Field(25, gt=0)
    socket_ping_timeout: float = Field(20, gt=0)
    # Milliseconds over which presence flips are gathered before `presence_changed`
    # goes out (one write per member per window, flaps cancel); 0 announces at once.
    presence_batch_ms: int = Field(50, ge=0)
    max_payload: int = Field(65_536, gt=0)
    # Bearer token for /metrics in production; without one, /metrics answers loopback only.
    metrics_token: str | None = Field(None, repr=False)
    # The credential `huddle gateway` shows the API's internal routes (batched
    # bootstrap). Unset with an HMAC JWT_ALGORITHM: derived from JWT_SECRET
    # (`service_credential`); unset with an asymmetric one: no internal routes.
    service_token: str | None = Field(None, repr=False)
    # Largest REST request body in bytes (413 above it; api/middleware.py BodyLimit).
    max_body: int = Field(1_048_576, gt=0)

    max_connections_per_ip: int = Field(10, gt=0)
    max_connections_localhost: int = Field(20, gt=0)
    connection_cooldown: int = Field(2000, gt=0)
    connection_cooldown_localhost: int = Field(500, gt=0)
    max_expired_attempts: int = Field(10, gt=0)
    max_expired_attempts_localhost: int = Field(50, gt=0)
    expired_token_cooldown: int = Field(1000, gt=0)
    connection_window: int = Field(60_000, gt=0)
    max_connections_per_user: int = Field(20, gt=0)
    socket_event_rate: float = Field(20, gt=0)
    socket_event_burst: int = Field(50, gt=0)
    login_rate: int = Field(10, gt=0)
    login_window: int = Field(900, gt=0)
    # Failed logins per LOGIN_WINDOW for one account from all IPs together (SPEC §5).
    login_account_rate: int = Field(100, gt=0)
    rate_limit_enabled: bool = True
    # `POST /bench/broadcast` for the benchmark harness (bench/, SPEC §8): writes
    # events through the real outbox -> bus -> gateway path on request, from
    # loopback only. Off by default and refused in production.
    bench_endpoints: bool = False

    @field_validator("cors_origin", "trusted_proxies", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        return _csv(value)

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        return database_url(value) if value else None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        return _url_with_scheme(value, ("redis", "rediss", "unix"), "redis://host:6379/0")

    @field_validator("backend_url")
    @classmethod
    def _backend_scheme(cls, value: str | None) -> str | None:
        return _url_with_scheme(value, ("http", "https"), "http://api-host:8000")

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR") from exc
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.is_production:
            if "*" in self.cors_origin:
                raise ValueError("CORS_ORIGIN: '*' is refused in production")
            if any(origin.lower() == "null" for origin in self.cors_origin):
                # The origin of sandboxed frames and file:// pages: anyone can send it.
                raise ValueError("CORS_ORIGIN: 'null' is refused in production")
            networks = (ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies)
            everyone = [str(n) for n in networks if trusts_everyone(n)]
            if everyone:
                raise ValueError(
                    f"TRUSTED_PROXIES: {everyone[0]} trusts every address (anyone could "
                    "set X-Forwarded-For); list your proxies' addresses"
                )
            if self.bench_endpoints:
                raise ValueError("BENCH_ENDPOINTS: refused in production")
            if self.jwt_algorithm in HMAC_ALGORITHMS:
                if not self.jwt_secret:
                    raise ValueError("JWT_SECRET: required in production")
                _require_strong_secret("JWT_SECRET", self.jwt_secret)
            if self.service_token is not None:
                _require_strong_secret("SERVICE_TOKEN", self.service_token)
        if self.service_token is not None:
            if not self.service_token:
                raise ValueError("SERVICE_TOKEN: empty; leave it unset or give a secret")
            if self.service_token == self.jwt_secret:
                raise ValueError("SERVICE_TOKEN: must differ from JWT_SECRET")
        if self.jwt_algorithm not in HMAC_ALGORITHMS and self.jwt_public_key_file is None:
            raise ValueError(f"JWT_PUBLIC_KEY_FILE: required for {self.jwt_algorithm}")
        return self

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def effective_log_format(self) -> Literal["console", "json"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.is_production else "console"

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.huddle_data_dir.resolve() / 'huddle.db'}"

    @cached_property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies)

    def signing_key(self) -> str | bytes:
        """The key the API signs access and refresh tokens with."""
        if self.jwt_algorithm in HMAC_ALGORITHMS:
            return self.hmac_secret()
        if self.jwt_private_key_file is None:
            raise ConfigError(f"JWT_PRIVATE_KEY_FILE: required to sign {self.jwt_algorithm}")
        return _read_key("JWT_PRIVATE_KEY_FILE", self.jwt_private_key_file)

    def verification_key(self) -> str | bytes:
        """The key every process verifies tokens with."""
        if self.jwt_algorithm in HMAC_ALGORITHMS:
            return self.hmac_secret()
        assert self.jwt_public_key_file is not None  # guaranteed by _production_rules
        return _read_key("JWT_PUBLIC_KEY_FILE", self.jwt_public_key_file)

    def service_credential(self) -> str | None:
        """What `huddle gateway` sends the API's internal routes, or None (no such routes).

        SERVICE_TOKEN when set. Otherwise, with an HMAC JWT_ALGORITHM, a key
        derived from JWT_SECRET (HMAC-SHA256 under a label of its own): every
        process that verifies tokens already holds the secret, so split mode
        needs no new setting, while the credential itself cannot sign a token
        nor give back the secret, and is never a JWT. With an asymmetric
        algorithm a gateway holds only the public key: no credential unless
        SERVICE_TOKEN is given.
        """
        if self.service_token:
            return self.service_token
        if self.jwt_algorithm not in HMAC_ALGORITHMS:
            return None
        return hmac.new(
            self.hmac_secret().encode(), SERVICE_CREDENTIAL_LABEL, hashlib.sha256
        ).hexdigest()

    def hmac_secret(self) -> str:
        """JWT_SECRET, or in development one generated once into the data directory."""
        if self.jwt_secret:
            return self.jwt_secret
        return _development_secret(self.huddle_data_dir)


def _read_key(variable: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from exc


def _development_secret(data_dir: Path) -> str:
    try:
        return _read_or_make_secret(data_dir)
    except OSError as exc:
        raise ConfigError(
            f"HUDDLE_DATA_DIR: cannot keep the development JWT secret in {data_dir}: "
            f"{exc.strerror or exc} (set JWT_SECRET, or a data directory Huddle can write)"
        ) from None


def _read_or_make_secret(data_dir: Path) -> str:
    path = data_dir / "jwt_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting together agree on the one that won.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning any validation error into a one-line ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if loc and not message.startswith(loc.upper()):
            message = f"{loc.upper()}: {message}"
        raise ConfigError(message) from None
