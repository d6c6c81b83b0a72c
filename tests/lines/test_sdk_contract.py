"""The contract between durable_semaphore._sdk_compat and the installed SDK line.

Every private read the compatibility module relies on is checked against what this SDK really
does: the ids in real execution histories (NESTED and FLAT maps, parallel), the map's name, and
the install-time refusal when a read is missing. Runs on every SDK line in the matrix.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import CompletionConfig, Duration, NestingType
from aws_durable_execution_sdk_python.config import MapConfig as SdkMapConfig
from aws_durable_execution_sdk_python.config import ParallelConfig as SdkParallelConfig
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

import durable_semaphore.sdk as sdk
from durable_semaphore import (
    DynamoDBLimiter,
    DynamoDBSemaphore,
    MapConfig,
    UnsupportedSDKVersionError,
    _sdk_compat,
)
from tests.lines.conftest import SDK_VERSION, RunScenario, digest, ok, run_timeout

N = 3
DEADLINE = 20.0


def _sub_type(value: Any) -> str:
    return str(getattr(value, "value", value))


def _ops(run: dict[str, Any]) -> list[tuple[str, str | None, str, str, str | None]]:
    return [
        (i, parent, kind, _sub_type(sub), name) for i, parent, kind, sub, name in run["operations"]
    ]


def _run(handler: Callable[..., Any], run_scenario: RunScenario) -> dict[str, Any]:
    def scenario() -> Any:
        with DurableFunctionTestRunner(handler=handler) as runner:
            return digest(runner.run(input="{}", **run_timeout(60)))

    result: dict[str, Any] = run_scenario(scenario, DEADLINE)
    return result


# -- install-time verification -----------------------------------------------------------------


def test_install_verified_this_line() -> None:
    assert sdk.is_installed()
    _sdk_compat.verify(f"{sdk.SDK_DISTRIBUTION} {SDK_VERSION}")  # does not raise


def _refused(match: str) -> Any:
    """install() must refuse, naming the SDK, its version and what is missing."""
    return pytest.raises(
        UnsupportedSDKVersionError,
        match=rf"{re.escape(sdk.SDK_DISTRIBUTION)} {re.escape(SDK_VERSION)} .*{match}",
    )


def test_install_refuses_without_peek(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(DurableContext, _sdk_compat.PEEK_NEXT_OPERATION_ID)
    with _refused("_peek_next_operation_id is missing"):
        sdk.install()


def test_install_refuses_without_step_id_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    original_init = DurableContext.__init__

    def init_without_prefix(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        del self._step_id_prefix

    monkeypatch.setattr(DurableContext, "__init__", init_without_prefix)
    with _refused("_step_id_prefix is missing"):
        sdk.install()


def test_install_refuses_a_changed_id_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DurableContext, "_peek_next_operation_id", lambda self: "op-1")
    with _refused("operation id derivation"):
        sdk.install()


# -- the reads against real execution histories ------------------------------------------------


@durable_execution
def _ids_handler(event: Any, context: DurableContext) -> Any:
    """Records what the compatibility module reads, next to what the SDK then does."""
    out: dict[str, Any] = {}
    for label, nesting in (("nested", NestingType.NESTED), ("flat", NestingType.FLAT)):
        peeked = _sdk_compat.next_operation_id(context)

        def item(ctx: DurableContext, x: int, i: int, items: Any, label: str = label) -> Any:
            ctx.step(lambda _: x, name=f"{label}-s{i}")
            return [i, _sdk_compat.branch_context_id(ctx)]

        config = SdkMapConfig(max_concurrency=N, nesting_type=nesting)
        batch = context.map(list(range(N)), item, name=label, config=config)
        out[label] = {"peeked": peeked, "branches": batch.get_results()}

    def branch_of(k: int) -> Callable[[DurableContext], Any]:
        return lambda ctx: [k, _sdk_compat.branch_context_id(ctx)]

    peeked = _sdk_compat.next_operation_id(context)
    par = context.parallel(
        [branch_of(k) for k in range(N)], name="par", config=SdkParallelConfig(max_concurrency=N)
    )
    out["parallel"] = {"peeked": peeked, "branches": par.get_results()}
    return out


def test_private_reads_match_the_history(limiter_env: Any, run_scenario: RunScenario) -> None:
    """next_operation_id is the id the map then takes; branch_operation_id is the id the SDK
    gives each branch (its container operation when NESTED, the prefix of its operations'
    ids when FLAT); branch_context_id is that id, read inside the branch."""
    run = _run(_ids_handler, run_scenario)
    seen = ok(run)
    ops = _ops(run)
    by_name = {name: op_id for op_id, _, _, _, name in ops}
    expect = _sdk_compat.branch_operation_id

    for label, container_type in (("nested", "Map"), ("flat", "Map"), ("par", "Parallel")):
        key = "parallel" if label == "par" else label
        parent = seen[key]["peeked"]
        assert by_name[label] == parent, label  # the peeked id is the one the map took
        assert (parent, container_type) in {(i, sub) for i, _, _, sub, _ in ops}
        branch_ids = [expect(parent, i) for i in range(N)]
        assert seen[key]["branches"] == [[i, branch_ids[i]] for i in range(N)], label
        containers = sorted(
            op_id
            for op_id, p, _, sub, _ in ops
            if p == parent and sub.endswith(("Iteration", "Branch"))
        )
        if label == "flat":
            assert containers == []  # virtual branches: no container operation
            for i in range(N):
                # A branch's first operation: id derived from the branch id, parent the map.
                step = [op for op in ops if op[4] == f"flat-s{i}"]
                assert [(op[0], op[1]) for op in step] == [(expect(branch_ids[i], 1), parent)]
        else:
            assert containers == sorted(branch_ids), label
        if label == "nested":
            for i in range(N):
                step = [op for op in ops if op[4] == f"nested-s{i}"]
                assert [(op[0], op[1]) for op in step] == [
                    (expect(branch_ids[i], 1), branch_ids[i])
                ]


def test_map_name_survives_the_gate(limiter_env: Any, run_scenario: RunScenario) -> None:
    """With no ``name=``, the SDK names a map after its function's attribute; the gated
    function carries it. The bare map is the control: it shows this line reads it."""

    def priced(ctx: DurableContext, x: int, i: int, items: Any) -> int:
        return x

    # What the SDK's own decorators (durable_step, durable_with_child_context) set.
    priced._original_name = "priced-items"  # type: ignore[attr-defined]

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        bare = context.map([1, 2], priced, config=MapConfig(max_concurrency=2))
        gated = context.map([3, 4], priced, config=MapConfig(max_concurrency=2, limiter="dynamodb"))
        return [bare.get_results(), gated.get_results()]

    run = _run(handler, run_scenario)
    assert ok(run) == [[1, 2], [3, 4]]
    maps = [name for _, _, _, sub, name in _ops(run) if sub == "Map"]
    assert maps == ["priced-items", "priced-items"]


# -- the run-time cross-check and holder ids ---------------------------------------------------


def test_branch_of_another_map_is_refused(
    limiter_env: Any,
    leases_left: Callable[[], list[Any]],
    run_scenario: RunScenario,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Control for the run-time cross-check: when the peeked id is not the map's (as when a
    context is shared by threads), every branch fails before taking a slot."""
    monkeypatch.setattr(_sdk_compat, "next_operation_id", lambda ctx: "not-this-map")

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        config = MapConfig(
            max_concurrency=N,
            completion_config=CompletionConfig(tolerated_failure_count=N),
            limiter="dynamodb",
        )
        batch = context.map(list(range(N)), lambda ctx, x, i, items: x, config=config)
        return [item.error.message if item.error else None for item in batch.all]

    errors = ok(_run(handler, run_scenario))
    assert len(errors) == N
    assert all("cannot tell which map" in str(message) for message in errors), errors
    assert leases_left() == []


class _RecordingSemaphore(DynamoDBSemaphore):
    """Records the holder ids of acquires and releases."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holders: dict[str, list[str]] = {"acquire": [], "release": []}
        self._lock = threading.Lock()

    def acquire(self, key: str, holder: str, limit: int, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.holders["acquire"].append(holder)
        return super().acquire(key, holder, limit, *args, **kwargs)

    def release_slot(self, key: str, holder: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.holders["release"].append(holder)
        return super().release_slot(key, holder, *args, **kwargs)


def test_holder_ids_name_the_map_and_the_index(
    limiter_env: Any, leases_left: Callable[[], list[Any]], run_scenario: RunScenario
) -> None:
    """A branch's holder id is ``<ARN>#<map op id>#<index>``: public inputs only. Each branch
    waits between acquire and release, so on SDK 1.x the release runs in a later invocation,
    which must compute the same id (a different one would leave the lease behind)."""
    table = limiter_env.table_name

    def scenario() -> Any:
        import boto3

        recording = _RecordingSemaphore(table_name=table, client=boto3.client("dynamodb"))
        limiter = DynamoDBLimiter(semaphore=recording)  # per operation, limit N
        seen: dict[str, Any] = {}

        @durable_execution
        def handler(event: Any, context: DurableContext) -> Any:
            seen["map"] = _sdk_compat.next_operation_id(context)
            seen["arn"] = sdk._execution_arn(context)

            def item(ctx: DurableContext, x: int, i: int, items: Any) -> int:
                ctx.wait(Duration.from_seconds(1))
                return x

            config = MapConfig(max_concurrency=N, limiter=limiter)
            return context.map(list(range(N)), item, config=config).get_results()

        with DurableFunctionTestRunner(handler=handler) as runner:
            run = digest(runner.run(input="{}", **run_timeout(60)))
        return {"run": run, "holders": recording.holders, **seen}

    outcome = run_scenario(scenario, DEADLINE)
    assert ok(outcome["run"]) == list(range(N))
    prefix = f"{outcome['arn']}#{outcome['map']}#"
    expected = {f"{prefix}{i}" for i in range(N)}
    assert set(outcome["holders"]["acquire"]) == expected
    assert set(outcome["holders"]["release"]) == expected
    assert leases_left() == []


def test_next_operation_and_terminal_reads_match_the_history(
    limiter_env: Any, run_scenario: RunScenario
) -> None:
    """``next_operation`` sees nothing at a branch's next position on the first run and the
    body's recorded operation on a replay (what the uncontended gate relies on), and
    ``operation_terminal`` sees a finished branch's container as terminal once its SUCCEED is
    checkpointed (what the release waits for). The observations travel in the result: on
    testing 1.2.1 the scenario runs in another process."""

    def shown(found: Any) -> list[Any] | None:
        return None if found is None else [found.name, found.kind]

    @durable_execution
    def handler(event: Any, context: DurableContext) -> Any:
        peeked = _sdk_compat.next_operation_id(context)

        def item(ctx: DurableContext, x: int, i: int, items: Any) -> Any:
            now = shown(_sdk_compat.next_operation(ctx))
            # The step keeps what the first run saw; a replay returns it and looks again.
            first = ctx.step(lambda _s: now, name="probe-step")
            ctx.wait(Duration.from_seconds(1))  # the branch is replayed after this
            return [first, now]

        out = context.map([5], item, config=MapConfig(max_concurrency=1)).get_results()
        branch = _sdk_compat.branch_operation_id(peeked, 0)
        under_map = _sdk_compat.subtree_terminal(context.state, peeked)
        return {
            "branch": out[0],
            "terminal": _sdk_compat.operation_terminal(context.state, branch),
            "under_map": sorted(under_map.values()),
        }

    result = ok(_run(handler, run_scenario))
    first, replayed = result["branch"]
    assert first is None
    assert replayed == ["probe-step", "STEP"]
    assert result["terminal"] is True
    assert result["under_map"] and all(result["under_map"]), result
