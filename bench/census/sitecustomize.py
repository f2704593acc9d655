"""Loaded into `huddle serve` by `bench/memory_census.py` (this directory on PYTHONPATH).

With HUDDLE_CENSUS set to a file path, SIGUSR1 writes a census of the objects
the cyclic collector tracks there (appending `.<n>` for the n-th census): per
kind of object, how many and their bytes (`sys.getsizeof`, plus the instance
dictionary). A kind is the type, refined where that says who holds it: a
coroutine or generator by its code's name, a method or function by its
qualified name, a dict by its first keys, a set or list by what it holds.
Strings, bytes and numbers are not tracked by the collector, so not counted.
SIGUSR2 runs a full collection and writes how many unreachable objects it found
to `<path>.collected`.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections import Counter
from typing import Any


def _kind(obj: Any) -> str:
    kind = type(obj)
    name = kind.__qualname__
    try:
        if kind is dict:
            keys = ",".join(sorted(map(str, list(obj)[:6])))
            return f"dict{{{keys}}} size {min(len(obj), 50)}"
        if kind is set:
            first = next(iter(obj), None)
            return f"set of {type(first).__qualname__} size {min(len(obj), 50)}"
        if kind is list:
            first = obj[0] if obj else None
            return f"list of {type(first).__qualname__} size {min(len(obj), 50)}"
        if kind is tuple:
            return "tuple(" + ",".join(type(item).__qualname__ for item in obj[:4]) + ")"
        if name == "coroutine":
            return "coroutine " + obj.cr_code.co_qualname
        if name == "generator":
            return "generator " + obj.gi_code.co_qualname
        if name == "method":
            return "method " + getattr(obj.__func__, "__qualname__", "?")
        if name == "function":
            return "function " + obj.__qualname__
        if name == "cell":
            return "cell of " + type(obj.cell_contents).__qualname__
    except Exception:  # noqa: S110 - an empty cell, an odd object: its type will do
        pass
    return f"{kind.__module__}.{name}"


def _census(signum: int, frame: Any) -> None:
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = _kind(obj)
        counts[kind] += 1
        try:
            size = sys.getsizeof(obj)
            if not isinstance(obj, type):
                own = getattr(obj, "__dict__", None)
                if isinstance(own, dict):
                    size += sys.getsizeof(own)
        except Exception:  # noqa: S112 - a proxy that refuses: count it, size unknown
            continue
        sizes[kind] += size
    global _taken
    _taken += 1
    with open(f"{os.environ['HUDDLE_CENSUS']}.{_taken}", "w") as out:
        for kind, count in counts.most_common():
            out.write(f"{count}\t{sizes[kind]}\t{kind}\n")


def _collect(signum: int, frame: Any) -> None:
    """SIGUSR2: a full collection; how many unreachable objects it found (objects
    that only the cyclic collector frees: reference cycles)."""
    found = gc.collect()
    with open(f"{os.environ['HUDDLE_CENSUS']}.collected", "w") as out:
        out.write(f"{found}\n")


_taken = 0
if os.environ.get("HUDDLE_CENSUS"):
    signal.signal(signal.SIGUSR1, _census)
    signal.signal(signal.SIGUSR2, _collect)
