"""A circuit breaker for the gateway's calls to BACKEND_URL (SPEC §4.5).

    closed ──(threshold consecutive failures)──▶ open
    open ──(reset_after elapsed; one caller admitted)──▶ half-open
    half-open ──(that trial succeeds)──▶ closed
    half-open ──(that trial fails)──▶ open (the reset timer starts again)

While open, callers are refused at once instead of waiting on a dead backend;
while half-open, only the one trial call goes through. One call is one
logical operation (a whole `fetch`, a `rotate`, a `replay`, a probe), however
many HTTP requests it takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from huddle.logging import get_logger
from huddle.metrics import BREAKER_STATE

log = get_logger("huddle.gateway.sources.breaker")


class BreakerState(IntEnum):
    """The values of the `huddle_gateway_circuit_breaker_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int = 5,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or reset_after <= 0:
            raise ValueError("threshold must be >= 1 and reset_after > 0")
        self.threshold = threshold
        self.reset_after = reset_after
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False
        BREAKER_STATE.set(self._state)

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose reset time passed reads as half-open)."""
        if self._state is BreakerState.OPEN and self.retry_in() == 0:
            return BreakerState.HALF_OPEN
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker admits a trial; 0 when it would admit a call now."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_after - self._clock())

    def allow(self) -> bool:
        """May a call go to the backend now? Admitting the half-open trial reserves it."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if self.retry_in() > 0:
                return False
            self._set(BreakerState.HALF_OPEN)
            self._trial_out = False
        if self._trial_out:
            return False
        self._trial_out = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._trial_out = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)
            log.info("circuit_breaker_closed")

    def failure(self) -> None:
        self._trial_out = False
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self.threshold:
            self._open()

    def release(self) -> None:
        """A call that was admitted ended with neither verdict (cancelled): free the trial."""
        self._trial_out = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        if self._state is not BreakerState.OPEN:
            log.warning(
                "circuit_breaker_opened", failures=self._failures, retry_in=self.reset_after
            )
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        self._state = state
        BREAKER_STATE.set(state)
