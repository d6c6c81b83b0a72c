"""The independent observer: per-process event logs, and the peak overlap computed from them.

It never asks the limiter. Each process appends one JSON line per event to its own file with a
single unbuffered ``os.write``, so a SIGKILL loses nothing already written. Times are
``time.monotonic()``, which on Linux is CLOCK_MONOTONIC, one clock for every process.

A holder's interval opens after ``acquire`` returned a lease ("in") and closes just before its
release is sent ("out"), so it lies inside the real holding time. It is clipped at the lease's
own end (the limiter promises exclusion only within a lease's lifetime, and a worker stalled
beyond it is noted as an overrun; a lease that came back already expired adds no interval, and
the run reports it). A process killed while holding leaves its interval open:
it ends when the lease could have expired, or when the same holder, replayed from a fresh
process, released it, whichever comes first. Intervals of one holder are merged (a replay
re-enters the same lease), and the peak is the most distinct holders open at one instant.

The same intervals also judge liveness: per key, the longest stretch during which someone
waited (from its "try" to its "in"; a waiter killed, or giving up, stops at its last event)
while fewer than ``limit`` leases were in force. A slot free that long was one nobody could
take: this is how long a dead holder's or a dead waiter's slot stayed lost to the queue.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from durable_semaphore.demo.observer import overlap_steps, peak_overlap


class EventLog:
    """Append-only JSON lines, one ``os.write`` each (atomic enough, and SIGKILL-safe).

    Every event carries a monotonic ``t`` (its own, if the caller gives one): a process that
    dies leaves its last moment in the log, which is where its wait ends for the observer.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, event: str, **fields: Any) -> None:
        line = {"ev": event, "t": time.monotonic(), **fields}
        os.write(self._fd, (json.dumps(line) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of one log; a torn last line (a kill mid-write) is ignored."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


class LogTail:
    """Reads the lines a log gained since the last call (the parent polls progress)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def new_events(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # leave a line still being written for next time
        self._offset += end
        for line in data[:end].splitlines():
            yield json.loads(line)


@dataclass
class _Stay:
    """One process's stay in the critical section as one holder."""

    start: float
    deadline: float
    out: float | None = None


@dataclass
class Verdict:
    """What the observer saw, per key."""

    peaks: dict[str, int]
    stays: int
    open_at_kill: int
    overruns: int
    per_key_stays: Counter[str] = field(default_factory=Counter)
    #: Per key, the longest (start, end) during which someone waited while fewer than the
    #: limit's leases were in force (only when :func:`judge` was given the limit).
    free_while_waiting: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: The longest single wait, from "try" to "in" (or to the waiter's end), in seconds.
    longest_wait: float = 0.0

    @property
    def longest_free_slot(self) -> float:
        """Seconds of the longest such stretch on any key (0 when a free slot never waited)."""
        return max((end - start for start, end in self.free_while_waiting.values()), default=0.0)


def judge(logs: Iterable[list[dict[str, Any]]], limit: int | None = None) -> Verdict:
    """Peak overlap per key from every process's events (workers and replays alike); with
    ``limit``, also the longest stretch a slot sat free while someone waited."""
    stays: dict[tuple[str, str], list[_Stay]] = defaultdict(list)
    waits: dict[str, list[tuple[float, float]]] = defaultdict(list)
    overruns = 0
    for events in logs:
        current: dict[str, _Stay] = {}
        waiting: dict[str, tuple[str, float]] = {}
        for ev in events:
            kind = ev["ev"]
            if kind == "try":
                waiting[ev["h"]] = (ev["k"], ev["t"])
            elif kind == "timeout" and ev["h"] in waiting:
                key, since = waiting.pop(ev["h"])
                waits[key].append((since, ev["t"]))
            if kind == "in":
                if ev["h"] in waiting:
                    key, since = waiting.pop(ev["h"])
                    waits[key].append((since, ev["t"]))
                stay = _Stay(ev["t"], ev["end"])
                current[ev["h"]] = stay
                stays[(ev["k"], ev["h"])].append(stay)
            elif kind == "renew" and ev["h"] in current:
                current[ev["h"]].deadline = max(current[ev["h"]].deadline, ev["end"])
            elif kind == "out" and ev["h"] in current:
                stay = current.pop(ev["h"])
                stay.out = ev["t"]
                overruns += stay.out > stay.deadline
        # Killed (or failed) while waiting: it waited until its last sign of life.
        last = max((ev["t"] for ev in events if "t" in ev), default=0.0)
        for key, since in waiting.values():
            waits[key].append((since, max(since, last)))
    per_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    per_key_stays: Counter[str] = Counter()
    open_at_kill = 0
    for (key, _holder), holder_stays in stays.items():
        holder_stays.sort(key=lambda s: s.start)
        spans = []
        for i, stay in enumerate(holder_stays):
            end = stay.deadline
            if stay.out is not None:
                end = min(end, stay.out)
            else:
                open_at_kill += 1
                # A later process of the same holder released the lease: it ended no later.
                later = [s.out for s in holder_stays[i + 1 :] if s.out is not None]
                if later:
                    end = min(end, later[0])
            if end > stay.start:
                spans.append((stay.start, end))
        per_key[key].extend(_merge(spans))
        per_key_stays[key] += len(holder_stays)
    return Verdict(
        peaks={key: peak_overlap(spans) for key, spans in per_key.items()},
        stays=sum(per_key_stays.values()),
        open_at_kill=open_at_kill,
        overruns=overruns,
        per_key_stays=per_key_stays,
        free_while_waiting=(
            {}
            if limit is None
            else {
                key: stretch
                for key, key_waits in waits.items()
                if (stretch := _longest_free(per_key[key], key_waits, limit)) is not None
            }
        ),
        longest_wait=max((end - start for w in waits.values() for start, end in w), default=0.0),
    )


def _longest_free(
    leases: list[tuple[float, float]], waits: list[tuple[float, float]], limit: int
) -> tuple[float, float] | None:
    """The longest (start, end) with a wait open and fewer than ``limit`` leases in force.

    Both are step functions of time (``overlap_steps``); they are walked together over the
    union of their change points, so a hand-off (one wait ends as one lease starts, the same
    event) opens no stretch.
    """
    held, waiting = overlap_steps(leases), overlap_steps(waits)
    best: tuple[float, float] | None = None
    start: float | None = None
    i = j = in_force = waiters = 0
    for at in sorted({t for t, _ in held} | {t for t, _ in waiting}):
        while i < len(held) and held[i][0] <= at:
            in_force = held[i][1]
            i += 1
        while j < len(waiting) and waiting[j][0] <= at:
            waiters = waiting[j][1]
            j += 1
        free = waiters > 0 and in_force < limit
        if free and start is None:
            start = at
        elif not free and start is not None:
            if best is None or at - start > best[1] - best[0]:
                best = (start, at)
            start = None
    return best


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of one holder's spans: the same holder is one slot, however many processes."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
