"""The end of a map waits for every release of its branches, whoever runs it.

A finished branch's release waits in the process's release queue for the branch's checkpoint;
the queue's watcher thread runs it, or the map's end does (``settle``) before its sweep reads
the key. When the watcher took a release between settle's snapshot and settle's own attempt to
take it, settle used to go on without waiting: the sweep then found that lease still held,
freed it itself, and the branch's fenced release reported its lease lost (a false alarm, and
one write more: 13 instead of 12 in the cost test of tests/sdk/test_flow.py, under load).
Here the interleaving is forced; the control turns the wait off and sees settle return early.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

import durable_semaphore.branch as branch
from durable_semaphore.branch import ReleaseQueue, _Pending

RELEASE_SECONDS = 0.3


def settle_while_the_watcher_takes_it(monkeypatch: pytest.MonkeyPatch) -> tuple[bool, bool]:
    """(was the release done when settle returned, did settle run it itself)."""
    monkeypatch.setattr(branch._sdk_compat, "operation_terminal", lambda state, op: True)
    scope = SimpleNamespace(state=None)
    slot = SimpleNamespace(scope=scope, execution_arn="arn", key="k")
    pending = _Pending(
        slot=slot,  # type: ignore[arg-type]
        holder="h",
        token="t",
        waited=False,
        operation_id="op",
        added=time.monotonic(),
    )
    queue = ReleaseQueue()
    queue._pending.append(pending)
    ran_by: list[str] = []

    def slow_release(p: _Pending, *, release: bool) -> None:
        ran_by.append(threading.current_thread().name)
        time.sleep(RELEASE_SECONDS)  # a slow answer from DynamoDB
        with queue._lock:
            queue._running.remove(p)
        p.done.set()

    monkeypatch.setattr(queue, "_run", slow_release)
    real_take = queue._take
    watcher_took = threading.Event()

    def watcher() -> None:
        assert real_take(pending)
        watcher_took.set()
        slow_release(pending, release=True)

    def take_after_the_watcher(p: _Pending) -> bool:
        # settle has its snapshot; the watcher takes the release first.
        threading.Thread(target=watcher, name="watcher", daemon=True).start()
        assert watcher_took.wait(5)
        return real_take(p)

    monkeypatch.setattr(queue, "_take", take_after_the_watcher)
    queue.settle(scope)  # type: ignore[arg-type]
    done = pending.done.is_set()
    pending.done.wait(5)
    return done, ran_by == ["MainThread"]


def test_settle_waits_for_a_release_the_watcher_took_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done, ran_itself = settle_while_the_watcher_takes_it(monkeypatch)
    assert done is True
    assert ran_itself is False  # the watcher ran it, once


def test_control_without_the_wait_settle_returns_while_it_is_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(branch, "_WAIT_FOR_TAKEN", False)
    done, _ = settle_while_the_watcher_takes_it(monkeypatch)
    assert done is False


def test_a_release_left_queued_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A drain (not the map's end) leaves a release whose checkpoint is not accepted queued:
    it must not wait for it (nobody runs it until the checkpoint is accepted)."""
    monkeypatch.setattr(branch._sdk_compat, "operation_terminal", lambda state, op: False)
    slot: Any = SimpleNamespace(scope=SimpleNamespace(state=None), execution_arn="arn", key="k")
    pending = _Pending(slot=slot, holder="h", token=None, waited=False, operation_id="op", added=0)
    queue = ReleaseQueue()
    queue._pending.append(pending)
    started = time.monotonic()
    queue.drain("arn", "k")
    assert time.monotonic() - started < 1 and pending in queue._pending
