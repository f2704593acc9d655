"""The objects one process runs with, built from settings inside the app's lifespan.

`Runtime` owns the engine, the bus, the services and the background tasks; the
REST routes and the gateway both reach the same instance, so `huddle serve`
runs everything in one process without a network hop.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from huddle import accel
from huddle.config import Settings
from huddle.db.checkpoint import Checkpointer
from huddle.db.queries import query_runner
from huddle.db.session import create_engine, create_sessionmaker
from huddle.events import outbox
from huddle.events.bus import EventBus, InProcessBus, RedisBus
from huddle.events.envelope import SESSIONS_REVOKED, Envelope
from huddle.logging import get_logger
from huddle.ops import Probe
from huddle.security.passwords import Passwords
from huddle.security.ratelimit import BucketStore, LoginLimiter, create_bucket_store
from huddle.security.revocation import Revocations
from huddle.security.tokens import TokenService
from huddle.services.auth import AuthService, load_revocations
from huddle.services.events import EventService
from huddle.services.tasks import TaskService
from huddle.services.teams import TeamService
from huddle.services.unit import Database
from huddle.services.users import UserService

log = get_logger("huddle.runtime")

PRUNE_INTERVAL = 60.0


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    db: Database
    bus: EventBus
    tokens: TokenService
    auth: AuthService
    teams: TeamService
    tasks: TaskService
    users: UserService
    buckets: BucketStore
    login_limiter: LoginLimiter
    revocations: Revocations
    tasks_running: list[asyncio.Task[None]] = field(default_factory=list)
    checkpointer: Checkpointer | None = None

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        engine = create_engine(settings)
        sessionmaker = create_sessionmaker(engine)

        async def fill_gap(after: int, before: int) -> list[Envelope]:
            async with sessionmaker() as session:
                return await outbox.events_between(session, after, before)

        last_id: int | None = None
        try:
            async with sessionmaker() as session:
                last_id = await outbox.last_event_id(session)
        except Exception as exc:  # the database may be down at start; /readyz will say so
            log.warning("event_counter_unavailable", error=type(exc).__name__)
        bus: EventBus
        if settings.redis_url:
            bus = RedisBus(
                settings.redis_url, prefix=settings.redis_prefix, last_id=last_id, fill_gap=fill_gap
            )
        else:
            bus = InProcessBus(last_id=last_id, fill_gap=fill_gap)
        speed = accel.load(settings.accel)
        db = Database(sessionmaker, bus, outbox.statements(speed), query_runner(speed))
        tokens = TokenService(settings)
        passwords = Passwords(fast=settings.app_env == "test")
        buckets = create_bucket_store(settings)
        revocations = Revocations(settings)
        try:
            loaded = await load_revocations(revocations, db)
            if loaded:
                log.info("revocations_loaded", count=loaded)
        except Exception as exc:  # the database may be down at start; /readyz will say so
            log.warning("revocations_unavailable", error=type(exc).__name__)
        runtime = cls(
            settings=settings,
            engine=engine,
            db=db,
            bus=bus,
            tokens=tokens,
            auth=AuthService(
                db,
                tokens,
                passwords,
                revocations=revocations,
                reuse_grace=settings.refresh_reuse_grace,
            ),
            teams=TeamService(db),
            tasks=TaskService(db),
            users=UserService(db),
            buckets=buckets,
            login_limiter=LoginLimiter(buckets, settings),
            revocations=revocations,
        )

        async def forget_revoked(event: Envelope) -> None:
            if event.type == SESSIONS_REVOKED and event.subject_user_id is not None:
                runtime.auth.forget(event.subject_user_id)

        bus.subscribe(revocations.handle)
        bus.subscribe(forget_revoked)
        await bus.start()
        runtime.tasks_running.append(asyncio.create_task(runtime._prune_forever()))
        database = engine.url.database
        if engine.url.get_backend_name() == "sqlite" and database and database != ":memory:":
            runtime.checkpointer = Checkpointer(Path(database))
            runtime.checkpointer.start()
        return runtime

    async def stop(self) -> None:
        for task in self.tasks_running:
            task.cancel()
        for task in self.tasks_running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.bus.stop()
        await self.buckets.aclose()
        if self.checkpointer is not None:
            await self.checkpointer.stop()
        self.db.queries.close()
        await self.engine.dispose()

    def readiness(self) -> dict[str, Probe]:
        """What `/readyz` checks in this process: the database, and Redis when configured."""
        probes: dict[str, Probe] = {"database": self._database_ok}
        if self.settings.redis_url:
            probes["redis"] = self._redis_ok
        return probes

    async def _database_ok(self) -> bool:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    async def _redis_ok(self) -> bool:
        return self.bus.healthy

    async def _prune_forever(self) -> None:
        retention = EventService(self.db)
        keep_for = timedelta(hours=self.settings.event_retention_hours)
        while True:
            await asyncio.sleep(PRUNE_INTERVAL)
            try:
                dropped = await retention.prune(
                    keep_events=self.settings.event_retention_events, keep_for=keep_for
                )
                if dropped:
                    log.info("events_pruned", count=dropped)
            except Exception as exc:
                log.warning("events_prune_failed", error=type(exc).__name__)
