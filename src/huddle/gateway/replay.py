"""Bringing one socket up to date: replay after a `lastEventId`, then the events held meanwhile.

The caller marks the session syncing *before* it reads the relay's head, so
every event the relay handles from then on is held for the socket; the head
is the newest event already reflected in what the socket has (its fresh
`authenticated` data, or what it received live). `synchronize` then sends

1. with `replay_after`: the replay from the event log, in order — or
   `resync_required` when that point is older than the log keeps;
2. the held events newer than the head, in order, skipping any the replay
   already sent (room changes still apply);
3. with `replay_after`: `sync_complete {lastEventId}`;

and lets live events flow to the socket again only once nothing is held, with
no await in between, so no event is lost or sent twice.

The replay reads the event log (the database, or the API's `/api/events`),
which can be ahead of the bus this gateway's relay reads: under load, a
socket that reconnected after a restart was replayed through event N while
the relay was still at N - 17, and those 17 then came again, live (found by
tests/cluster/test_nginx.py's rolling restart). So when the replay ends past
the relay's head, the socket is marked *ahead* through the last id it was
sent, and the relay's room emits skip it until they pass that id.
"""

from __future__ import annotations

from dataclasses import dataclass

from huddle.errors import AuthError
from huddle.gateway.realtime.hub import Hub
from huddle.gateway.realtime.relay import EventRelay
from huddle.gateway.session import SocketSession
from huddle.gateway.sources.base import UserDataSource
from huddle.logging import get_logger

log = get_logger("huddle.gateway.replay")


@dataclass(frozen=True, slots=True)
class SyncResult:
    last_event_id: int
    replayed: int = 0
    resync_required: bool = False

    def wire(self) -> dict[str, object]:
        return {
            "lastEventId": self.last_event_id,
            "replayed": self.replayed,
            "resyncRequired": self.resync_required,
        }


async def synchronize(
    hub: Hub,
    relay: EventRelay,
    source: UserDataSource,
    session: SocketSession,
    *,
    head: int | None,
    replay_after: int | None,
) -> SyncResult:
    """Deliver what a syncing session is owed, then end its sync (see the module docstring)."""
    floor = head or 0
    sent = floor
    replayed = 0
    resync = False
    log_head: int | None = None
    try:
        if replay_after is not None and session.user_id is not None and session.token:
            after = replay_after
            while not session.closed:
                try:
                    page = await source.replay(session.user_id, session.token, after)
                except AuthError:
                    raise
                except Exception as exc:
                    # Without the log we cannot tell what was missed: the client reloads.
                    log.warning("replay_failed", sid=session.sid, error=type(exc).__name__)
                    resync = True
                    break
                log_head = page.last_event_id
                if page.resync_required:
                    resync = True
                    break
                for event in page.events:
                    if event.id is None or event.id <= after:
                        continue
                    await hub.send(session, event.type, event.payload)
                    replayed += 1
                    sent = max(sent, event.id)
                if not page.more or page.last_event_id is None or page.last_event_id <= after:
                    break
                after = page.last_event_id
            if resync:
                await _resync(hub, session, max(floor, log_head or 0))
        while not session.closed:
            if session.overflowed:
                if not resync:
                    resync = True
                    await _resync(hub, session, relay.head)
                break
            held = session.take_buffer()
            if not held:
                break
            for event in held:
                if event.id is None or event.id <= floor:
                    continue
                await relay.apply(session, event, emit=event.id > sent)
                sent = max(sent, event.id)
    finally:
        hub.sessions.unmark_syncing(session)
        if sent > (relay.head or 0) and not session.closed:
            hub.sessions.mark_ahead(session, sent)
    # An integer even when nothing was ever logged (SPEC §4.3: 0 for an empty log).
    last = max(sent, log_head or 0)
    if replay_after is not None and not resync:
        await hub.send(session, "sync_complete", {"lastEventId": last})
    return SyncResult(last, replayed, resync)


async def _resync(hub: Hub, session: SocketSession, last_event_id: int | None) -> None:
    await hub.send(session, "resync_required", {"lastEventId": last_event_id})
