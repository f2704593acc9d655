"""How many fan-out rounds a full benchmark measures (server CPU comes in 10 ms ticks)."""

from __future__ import annotations

from bench.main import MIN_MEASURED_MESSAGES, fanout_rounds


def test_small_rooms_get_enough_rounds_for_the_cpu_figure() -> None:
    assert fanout_rounds(3, 100 * 50, MIN_MEASURED_MESSAGES) == 10  # 50,000 messages
    assert fanout_rounds(3, 2000 * 50, MIN_MEASURED_MESSAGES) == 3  # as requested
    assert fanout_rounds(3, 7 * 50, MIN_MEASURED_MESSAGES) * 7 * 50 >= MIN_MEASURED_MESSAGES


def test_quick_runs_and_explicit_zero_are_left_alone() -> None:
    assert fanout_rounds(1, 20 * 5, 0) == 1
    assert fanout_rounds(0, 100 * 50, MIN_MEASURED_MESSAGES) == 0
