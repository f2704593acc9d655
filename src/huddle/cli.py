"""The `huddle` command: serve | api | gateway | migrate | user create | token | bench | deploy."""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from huddle.config import Settings, load_settings
from huddle.errors import ConfigError, HuddleError
from huddle.logging import configure_logging, get_logger

T = TypeVar("T")

cli = typer.Typer(
    name="huddle",
    help="Huddle: team collaboration backend (REST API and real-time gateway).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
user_cli = typer.Typer(help="Manage users.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")
deploy_cli = typer.Typer(help="Render deployment files.", no_args_is_help=True)
cli.add_typer(deploy_cli, name="deploy")


def _settings(*, quiet: bool = False, **overrides: Any) -> Settings:
    """Settings, or exit with the one-line reason (no traceback).

    `quiet`: a one-shot command (`user create`, `token`) whose output is its
    answer: it logs warnings only, unless LOG_LEVEL=debug asks for everything.
    """
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
        level = "warning" if quiet and settings.log_level == "info" else settings.log_level
        configure_logging(level, settings.effective_log_format)
        # Fail at start, not on the first request, when a key file is unreadable.
        settings.verification_key()
        return settings
    except ConfigError as exc:
        typer.echo(f"huddle: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except HuddleError as exc:
        typer.echo(f"huddle: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _prepare_database(settings: Settings) -> None:
    """Before a process opens the database (SPEC §3): migrate SQLite, refuse PostgreSQL behind.

    An unreachable PostgreSQL does not stop the process: it starts, `/readyz`
    says the database is down, and requests answer 503 until it is back (as
    when it goes away later). Its schema is then unchecked: the warning says so.
    """
    from huddle.db.migrate import SchemaBehind, prepare

    log = get_logger("huddle")
    try:
        state = prepare(settings)
    except SchemaBehind as exc:
        typer.echo(f"huddle: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        if settings.effective_database_url.startswith("sqlite"):
            typer.echo(f"huddle: cannot prepare the SQLite database: {_reason(exc)}", err=True)
            raise typer.Exit(1) from None
        log.warning("database_schema_unchecked", error=type(exc).__name__)
        return
    if state.behind:
        log.info(
            "database_migrated",
            from_revision=",".join(state.current) or None,
            to_revision=",".join(state.head),
        )


def _reason(exc: BaseException) -> str:
    """One line about `exc`: the driver's own message where there is one."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0]}" if text else type(inner).__name__


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts, or one line saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        why = exc.strerror or str(exc)
        typer.echo(f"huddle: configuration error: HOST: cannot listen on {host!r}: {why}", err=True)
        raise typer.Exit(2) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = "already in use by another process; stop it or choose another PORT"
        else:
            why = exc.strerror or str(exc)
        typer.echo(f"huddle: PORT: cannot listen on {host}:{port}: {why}", err=True)
        raise typer.Exit(1) from None
    return sock


def _serve(role: str, host: str | None, port: int | None, default_port: int) -> None:
    import uvicorn

    from huddle import accel
    from huddle.app import build_app

    settings = _settings(host=host, port=port)
    bind_port = settings.port if settings.port is not None else default_port
    listener = _listen(settings.host, bind_port)
    if role != "gateway":  # the gateway has no database
        _prepare_database(settings)
    try:
        app = build_app(settings, role)  # type: ignore[arg-type]
    except ConfigError as exc:
        typer.echo(f"huddle: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    log = get_logger("huddle")
    log.info("starting", role=role, host=settings.host, port=bind_port, env=settings.app_env)
    protocols: dict[str, Any] = {}
    if accel.load(settings.accel).uvicorn:
        from huddle.accel.uvicorn import FastHttpToolsProtocol, FastWebSocketProtocol

        # uvicorn's sans-I/O WebSocket protocol with the gateway's shared-frame write
        # path, and httptools handing upgrade requests over already parsed.
        protocols = {"ws": FastWebSocketProtocol, "http": FastHttpToolsProtocol}
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=bind_port,
        log_config=None,
        access_log=False,
        interface="asgi3",  # the app is ASGI 3; uvicorn's guess looks for a coroutine function
        ws_per_message_deflate=settings.ws_compression,
        ws_max_size=settings.max_payload + 1024,
        # Engine.IO pings every client itself (and closes it when the pong is
        # late); a second, WebSocket-level ping would cost a timer per connection.
        ws_ping_interval=None,
        proxy_headers=False,  # TRUSTED_PROXIES decides whom to believe, not uvicorn
        timeout_graceful_shutdown=10,
        lifespan="on",
        **protocols,
    )
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM, then raises the signal again once its own handler
    # is gone, so that the process would die of it (status 143). SPEC §4.5: a
    # drained shutdown exits 0. The handler it re-raises to is this one, which
    # lets the process end normally. (SIGINT keeps Python's: Ctrl-C exits 130.)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run(sockets=[listener])
    log.info("stopped", role=role)


HostOpt = Annotated[str | None, typer.Option(help="Bind address (HOST).")]
PortOpt = Annotated[int | None, typer.Option(help="Port (PORT).")]


@cli.command()
def serve(host: HostOpt = None, port: PortOpt = None) -> None:
    """REST API, real-time gateway and web client in one process (port 8000)."""
    _serve("serve", host, port, 8000)


@cli.command()
def api(host: HostOpt = None, port: PortOpt = None) -> None:
    """REST API only; publishes events to Redis (port 8000)."""
    _serve("api", host, port, 8000)


@cli.command()
def gateway(host: HostOpt = None, port: PortOpt = None) -> None:
    """Real-time gateway only; user data from BACKEND_URL, events from Redis (port 3001)."""
    _serve("gateway", host, port, 3001)


@cli.command()
def migrate(revision: str = "head") -> None:
    """Apply database migrations (Alembic)."""
    from huddle.db.migrate import upgrade

    settings = _settings()
    try:
        upgrade(settings, revision=revision)
    except Exception as exc:
        typer.echo(f"huddle: migration failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"database at {revision}")


ASKED = "Asked for when not given."


@user_cli.command("create")
def user_create(
    email: Annotated[str | None, typer.Option(prompt=True, help=ASKED)] = None,
    name: Annotated[str | None, typer.Option(prompt=True, help=ASKED)] = None,
    password: Annotated[
        str | None,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="Asked for (twice, hidden) when not given; at least 8 characters.",
        ),
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make an administrator.")] = False,
) -> None:
    """Create a user (--admin for an administrator). Prints its id."""
    from pydantic import TypeAdapter, ValidationError

    from huddle.schemas import RegisterIn

    try:
        body = TypeAdapter(RegisterIn).validate_python(
            {"email": email, "password": password, "name": name}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        typer.echo(f"huddle: {first['loc'][0]}: {first['msg']}", err=True)
        raise typer.Exit(2) from None
    settings = _settings(quiet=True)
    _prepare_database(settings)

    async def create() -> int:
        from huddle.runtime import Runtime

        runtime = await Runtime.start(settings)
        try:
            user = await runtime.auth.register(
                str(body.email), body.password, body.name, is_admin=admin
            )
            return user.id
        finally:
            await runtime.stop()

    user_id = _run(create)
    typer.echo(f"created user {user_id}{' (administrator)' if admin else ''}")


@cli.command()
def token(
    user: Annotated[int, typer.Option("--user", help="User id.")],
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds (JWT_ACCESS_TTL).")] = None,
) -> None:
    """Mint an access token for a user (development and tests). Prints only the token."""
    from huddle.errors import UserNotFound
    from huddle.security.tokens import TokenService

    settings = _settings(quiet=True)
    _prepare_database(settings)

    async def mint() -> str:
        from huddle.runtime import Runtime

        runtime = await Runtime.start(settings)
        try:
            if await runtime.users.get(user) is None:
                raise UserNotFound(f"no user has id {user}")
        finally:
            await runtime.stop()
        return TokenService(settings).issue_access(user, ttl=ttl).token

    typer.echo(_run(mint))


@cli.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,  # `huddle bench --help` is the harness's own
)
def bench(ctx: typer.Context) -> None:
    """Benchmark Huddle against the Node.js Socket.IO peer (see docs/benchmarks.md)."""
    import importlib
    from pathlib import Path

    # The harness lives beside the package (bench/), in a checkout: the one this
    # package was installed from (editable), or the working directory.
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "bench" / "main.py").is_file() and str(root) not in sys.path:
            sys.path.append(str(root))
    try:
        bench_main = importlib.import_module("bench.main").main
    except ImportError:
        typer.echo("huddle: the benchmark harness (bench/) is not available here", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(bench_main(list(ctx.args)))


@deploy_cli.command("nginx")
def deploy_nginx(
    api: Annotated[
        list[str],
        typer.Option(help="huddle api instances, host:port, comma-separated (or repeated)."),
    ],
    gateway: Annotated[
        list[str],
        typer.Option(help="huddle gateway instances, host:port, comma-separated (or repeated)."),
    ],
    listen: Annotated[str, typer.Option(help="nginx's listen: a port or address:port.")] = "8080",
) -> None:
    """Print the nginx configuration for these instances (sticky Socket.IO, X-Forwarded-For)."""
    from huddle.deploy import DeployError, render_nginx

    try:
        typer.echo(render_nginx(api, gateway, listen=listen), nl=False)
    except DeployError as exc:
        typer.echo(f"huddle: {exc}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
