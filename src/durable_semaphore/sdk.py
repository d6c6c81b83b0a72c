"""The hook on ``DurableContext.map`` and ``.parallel``: the SDK integration's entry point.

Importing :mod:`durable_semaphore` calls :func:`install`, which wraps ``DurableContext.map`` and
``DurableContext.parallel`` once. The wrappers do nothing unless the call's ``config`` is one of
our :class:`MapConfig` / :class:`ParallelConfig` with a ``limiter``: then every branch function is
wrapped by :func:`durable_semaphore.branch.run_gated` (gate, body, release after the branch's own
checkpoint; waiting lives in :mod:`durable_semaphore.waiting`). When the map or parallel itself
finishes, leases its branches still hold (branches abandoned by early completion) are swept by
holder-id prefix.

Why wrap branches instead of subclassing the executor: the SDK's plugins only observe, and the
executor has no admission hook, so gating there needs private names that changed between 1.x
and 3.x. Wrapping the branch function works on every line. The private reads the limiter needs
live in :mod:`durable_semaphore._sdk_compat`, are verified at install, and fail loudly if the SDK
changes them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

import aws_durable_execution_sdk_python.config as _sdk_config
from aws_durable_execution_sdk_python.config import ParallelBranch
from aws_durable_execution_sdk_python.context import DurableContext

from durable_semaphore import _sdk_compat
from durable_semaphore.branch import (
    HELD_KEYS,
    RELEASE_OPERATION_NAME,
    Scope,
    is_terminal,
    release_queue,
    run_gated,
    sweep,
)
from durable_semaphore.errors import (
    InvalidArgumentError,
    NestedLimiterError,
    UnsupportedSDKVersionError,
)
from durable_semaphore.pacing import Pace, run_paced
from durable_semaphore.spec import (
    LimiterSpec,
    resolve_limiters,
    resolve_rate_limiter,
    validate_limiter_spec,
)
from durable_semaphore.waiting import (
    ACQUIRE_OPERATION_NAME,
    POLL_OPERATION_NAME,
    RETRY_OPERATION_NAME,
    WAIT_OPERATION_NAME,
)

__all__ = [
    "ACQUIRE_OPERATION_NAME",
    "POLL_OPERATION_NAME",
    "RELEASE_OPERATION_NAME",
    "RETRY_OPERATION_NAME",
    "SUPPORTED_SDK_RANGE",
    "WAIT_OPERATION_NAME",
    "MapConfig",
    "NestedLimiterError",
    "ParallelConfig",
    "check_sdk_version",
    "install",
    "is_installed",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SDK_DISTRIBUTION = "aws-durable-execution-sdk-python"
#: Inclusive lower, exclusive upper bound; keep in step with pyproject's dependency.
SUPPORTED_SDK_RANGE: tuple[tuple[int, int], tuple[int, int]] = ((1, 7), (4, 0))
_HOOK_SENTINEL = "__durable_semaphore_hook__"


# -- version check ---------------------------------------------------------------------------


def _parse_version(version: str) -> tuple[int, int]:
    match = re.match(r"^\s*(\d+)(?:\.(\d+))?", version)
    if match is None:
        raise UnsupportedSDKVersionError(
            f"cannot parse {SDK_DISTRIBUTION} version {version!r}; "
            f"durable-semaphore supports >=1.7,<4"
        )
    return int(match.group(1)), int(match.group(2) or 0)


def check_sdk_version(version: str | None = None) -> str:
    """Raise :class:`UnsupportedSDKVersionError` unless the SDK version is in the supported range.

    The hook relies on how branch contexts and operation ids work; outside the tested range
    that may silently stop limiting, which is worse than failing at import.
    """
    if version is None:
        try:
            version = metadata.version(SDK_DISTRIBUTION)
        except metadata.PackageNotFoundError:
            from aws_durable_execution_sdk_python.__about__ import __version__

            version = str(__version__)
    low, high = SUPPORTED_SDK_RANGE
    parsed = _parse_version(version)
    if not (low <= parsed < high):
        raise UnsupportedSDKVersionError(
            f"{SDK_DISTRIBUTION} {version} is not supported by durable-semaphore "
            f"(supported: >={low[0]}.{low[1]},<{high[0]})"
        )
    return version


# -- configs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapConfig(_sdk_config.MapConfig[T], Generic[T]):
    """The SDK's ``MapConfig`` plus ``limiter``: None (SDK behaviour), ``"dynamodb"`` (lease per
    branch, limit ``max_concurrency``, scoped to this map of this execution) or a
    :class:`DynamoDBLimiter` (a named limit shared across executions)."""

    limiter: LimiterSpec = None

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        validate_limiter_spec(self.limiter, self.max_concurrency)


@dataclass(frozen=True)
class ParallelConfig(_sdk_config.ParallelConfig):
    """The SDK's ``ParallelConfig`` plus ``limiter`` (see :class:`MapConfig`)."""

    limiter: LimiterSpec = None

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        validate_limiter_spec(self.limiter, self.max_concurrency)


# -- per-call scope --------------------------------------------------------------------------


def _execution_arn(ctx: DurableContext) -> str:
    execution_context = getattr(ctx, "execution_context", None)
    arn = getattr(execution_context, "durable_execution_arn", None)
    if not arn:
        arn = ctx.state.durable_execution_arn
    return str(arn)


def _is_flat(config: object) -> bool:
    nesting = getattr(config, "nesting_type", None)
    return str(getattr(nesting, "name", nesting)).upper() == "FLAT"


def _open_scopes(
    ctx: DurableContext, config: MapConfig[Any] | ParallelConfig, sources: Sequence[Any]
) -> list[Scope]:
    """One scope per concurrency limit of the call (none: not gated). ``sources`` are what
    per-item keys are computed from: the map's items, or a parallel's branch indexes. Every
    key is computed and checked here, before any branch records anything, so a bad one is our
    error from the map call itself and nothing is written."""
    limiters = resolve_limiters(config.limiter)
    if not limiters:
        return []
    batcher = getattr(config, "item_batcher", None)  # SDK 1.x only
    batched = bool(getattr(batcher, "max_items_per_batch", 0)) or bool(
        getattr(batcher, "max_item_bytes_per_batch", 0)
    )
    if batched and any(limiter.per_item for limiter in limiters):
        raise InvalidArgumentError(
            "limiter",
            config.limiter,
            "a per-item key needs one item per branch, and item_batcher batches them",
        )
    arn = _execution_arn(ctx)
    operation_id = _sdk_compat.next_operation_id(ctx)
    held = HELD_KEYS.get()
    scopes = []
    for limiter in limiters:
        if limiter.per_item:
            keys = tuple(limiter.key_for(source, arn, operation_id) for source in sources)
        else:
            keys = (limiter.scope_key(arn, operation_id),)
        for key in set(keys) & held:
            raise NestedLimiterError(key)
        scopes.append(
            Scope(
                limiter=limiter,
                execution_arn=arn,
                operation_id=operation_id,
                keys=keys,
                limit=limiter.resolve_limit(config.max_concurrency),
                held_outside=held,
                state=ctx.state,
                flat=_is_flat(config),
            )
        )
    _refuse_shared_keys(scopes, len(sources))
    return scopes


def _refuse_shared_keys(scopes: list[Scope], branches: int) -> None:
    """Two limits of one branch on the same key would count it once against both."""
    if len(scopes) < 2:
        return
    for index in range(branches):
        keys = [scope.key_of(index) for scope in scopes]
        for key in keys:
            if keys.count(key) > 1:
                raise InvalidArgumentError(
                    "limiter",
                    [scope.limiter for scope in scopes],
                    f"two of its limits give branch {index} the same key {key!r}; each limit "
                    "of a branch needs its own key",
                )


def _open_pace(ctx: DurableContext, config: MapConfig[Any] | ParallelConfig) -> Pace | None:
    """The rate a map/parallel call is paced by, or None (no rate limiter)."""
    rate = resolve_rate_limiter(config.limiter)
    if rate is None:
        return None
    return Pace(rate, _execution_arn(ctx), _sdk_compat.next_operation_id(ctx))


#: How many times one invocation drives a map again for wake-ups it saw too late.
_MAX_REDRIVES = 20


def _call_and_sweep(ctx: DurableContext, scopes: list[Scope], call: Callable[[], R]) -> R:
    """Run the map; sweep when it is done.

    When it suspends although this invocation already saw an operation of a suspended branch
    complete (it came in a checkpoint response after that branch looked: a wake-up, an invoke
    result), drive it again: the service would not invoke the execution for a completion this
    invocation has seen, and the branch would sit with its slot until something else did.
    """
    scope = scopes[0]  # every limit of the call shares its operation id and state
    for attempt in range(_MAX_REDRIVES + 1):
        before = _sdk_compat.subtree_terminal(scope.state, scope.operation_id)
        try:
            result = call()
        except BaseException as exc:
            if is_terminal(exc):
                for each in scopes:
                    sweep(each)
                raise
            for each in scopes:
                release_queue.settle(each)
            unseen = _sdk_compat.progress_since(scope.state, scope.operation_id, before)
            if not unseen:
                raise
            if attempt == _MAX_REDRIVES or not _sdk_compat.rewind_to(ctx, scope.operation_id):
                logger.warning(
                    "durable-semaphore: %d completion(s) under %s arrived as the invocation "
                    "suspended; those branches resume at the next invocation",
                    unseen,
                    scope.key,
                )
                raise
            logger.debug(
                "durable-semaphore: %d completion(s) under %s came after their branch "
                "suspended; driving the map again",
                unseen,
                scope.key,
            )
            continue
        for each in scopes:
            sweep(each)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


# -- the hook --------------------------------------------------------------------------------

_install_lock = threading.Lock()


def is_installed() -> bool:
    """True once ``DurableContext.map`` and ``.parallel`` carry our wrappers."""
    return bool(getattr(DurableContext.map, _HOOK_SENTINEL, False)) and bool(
        getattr(DurableContext.parallel, _HOOK_SENTINEL, False)
    )


def _wrap_map(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def map_hook(self: DurableContext, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return original(self, *args, **kwargs)  # let the SDK report its own TypeError
        config = bound.arguments.get("config")
        if not isinstance(config, MapConfig) or config.limiter is None:
            return original(self, *args, **kwargs)  # untouched: identical history
        func = bound.arguments["func"]
        pace = _open_pace(self, config)
        scopes = _open_scopes(self, config, list(bound.arguments["inputs"]))

        def paced(child: DurableContext, index: int, body: Callable[[], Any]) -> Any:
            return body() if pace is None else run_paced(pace, child, index, body)

        if not scopes:

            def paced_item(
                child: DurableContext, item: Any, index: int, items: Sequence[Any]
            ) -> Any:
                return paced(child, index, lambda: func(child, item, index, items))

            bound.arguments["func"] = _sdk_compat.carry_attributes(paced_item, func)
            return original(*bound.args, **bound.kwargs)

        def gated_item(child: DurableContext, item: Any, index: int, items: Sequence[Any]) -> Any:
            # The slot first, then the start: a branch books its start only once it may run.
            body = lambda: paced(child, index, lambda: func(child, item, index, items))  # noqa: E731
            return run_gated(scopes, child, index, body, item)

        # The SDK names an unnamed map after an attribute of its function; keep them all.
        bound.arguments["func"] = _sdk_compat.carry_attributes(gated_item, func)
        return _call_and_sweep(self, scopes, lambda: original(*bound.args, **bound.kwargs))

    setattr(map_hook, _HOOK_SENTINEL, True)
    return map_hook


def _gate_branch(
    run: Callable[[DurableContext, int, Callable[[], Any]], Any], index: int, branch: Any
) -> Any:
    """``branch`` run through ``run`` (gated by a lease, or paced by a rate)."""
    if isinstance(branch, ParallelBranch):
        inner = branch.func

        def gated_named(child: DurableContext) -> Any:
            return run(child, index, lambda: inner(child))

        return dataclasses.replace(branch, func=gated_named)

    def gated(child: DurableContext) -> Any:
        return run(child, index, lambda: branch(child))

    return gated


def _wrap_parallel(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def parallel_hook(self: DurableContext, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return original(self, *args, **kwargs)
        config = bound.arguments.get("config")
        if not isinstance(config, ParallelConfig) or config.limiter is None:
            return original(self, *args, **kwargs)
        functions = list(bound.arguments["functions"])
        pace = _open_pace(self, config)
        scopes = _open_scopes(self, config, range(len(functions)))

        def run(child: DurableContext, index: int, body: Callable[[], Any]) -> Any:
            inner = body if pace is None else lambda: run_paced(pace, child, index, body)
            if not scopes:
                return inner()
            return run_gated(scopes, child, index, inner)

        bound.arguments["functions"] = [
            _gate_branch(run, i, branch) for i, branch in enumerate(functions)
        ]
        if not scopes:
            return original(*bound.args, **bound.kwargs)
        return _call_and_sweep(self, scopes, lambda: original(*bound.args, **bound.kwargs))

    setattr(parallel_hook, _HOOK_SENTINEL, True)
    return parallel_hook


def install() -> None:
    """Check the SDK version and the private reads we rely on, then wrap
    ``DurableContext.map``/``.parallel`` (idempotent)."""
    version = check_sdk_version()
    _sdk_compat.verify(f"{SDK_DISTRIBUTION} {version}")
    with _install_lock:
        if not getattr(DurableContext.map, _HOOK_SENTINEL, False):
            DurableContext.map = _wrap_map(DurableContext.map)  # type: ignore[method-assign]
        if not getattr(DurableContext.parallel, _HOOK_SENTINEL, False):
            DurableContext.parallel = _wrap_parallel(  # type: ignore[method-assign]
                DurableContext.parallel
            )
