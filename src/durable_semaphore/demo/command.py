"""The bodies of ``durable-semaphore demo`` and ``durable-semaphore local-dynamodb``.

:mod:`durable_semaphore.cli` defines their arguments and imports this module inside the
commands, so the CLI starts (and ``--help`` works) without the ``demo`` extra. Nothing here
imports the CLI: it passes in how it builds a store (``semaphore_from_args``), which keeps the
package free of import cycles. Errors the CLI maps to its exit codes pass through; a missing
local prerequisite is a :class:`~durable_semaphore.errors.PrerequisiteError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TextIO

from durable_semaphore.demo import INSTALL_HINT
from durable_semaphore.demo.embedded import LOCAL_CREDENTIALS, LOCAL_REGION, embedded_dynamodb
from durable_semaphore.demo.quiet import QuietInterrupt, quiet_runner_leftovers
from durable_semaphore.demo.result import DemoResult, Progress
from durable_semaphore.errors import PrerequisiteError
from durable_semaphore.store import DynamoDBSemaphore, default_client_config

#: How the CLI builds a store from its ``--table/--endpoint-url/--region`` arguments.
SemaphoreFactory = Callable[..., DynamoDBSemaphore]
#: The CLI's exit codes for "yes" and "no" (the demo's verdict).
_EXIT_OK, _EXIT_NO = 0, 1


class ProgressLine:
    """The live progress line on stderr: rewritten in place on a terminal, else every few s.

    It writes to whatever ``sys.stderr`` is at the time (unless given a stream), so that once
    Ctrl-C silenced the other threads the progress thread goes quiet too. A new run (the
    limiter's, after the bare SDK's) starts a new line, so both runs' last counts stay visible.
    """

    def __init__(self, stream: TextIO | None = None, every: float = 5.0) -> None:
        self._stream = stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self._last = 0.0
        self._line = ""
        self._run: str | None = None
        self._shown = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def __call__(self, progress: Progress) -> None:
        from durable_semaphore.demo.report import format_progress

        line = format_progress(progress)
        new_run = progress.run != self._run
        self._run = progress.run
        if self.tty:
            prefix = "\n" if new_run and self._shown else "\r"
            self.stream.write(prefix + line.ljust(79))
            self._shown = True
        else:
            now = time.monotonic()
            finished = progress.done >= progress.total
            due = now - self._last >= self.every or finished or new_run
            if line == self._line or not due:
                return
            self._last, self._line = now, line
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


# -- demo --------------------------------------------------------------------------------------


def _require_demo_extra() -> None:
    try:
        import aws_durable_execution_sdk_python_testing  # noqa: F401
    except ImportError as exc:
        raise PrerequisiteError(f"the demo needs the 'demo' extra ({exc}); {INSTALL_HINT}") from exc


def _config(args: argparse.Namespace) -> tuple[Any, bool]:
    """The run's :class:`~.scenario.DemoConfig` (the user's options over the defaults for the
    installed SDK) and whether to compare with the bare SDK."""
    from durable_semaphore.demo import local_runner
    from durable_semaphore.demo.scenario import DemoConfig, default_scenario

    features = local_runner.detect()
    sdk_version, testing_version = local_runner.installed_versions()
    plan = default_scenario(
        sdk_version=sdk_version,
        can_skip_time=features.skip_time,
        items=args.items,
        executions=args.executions,
        clock=args.clock,
    )
    if plan.skip_unavailable:
        print(
            f"note: testing library {testing_version} cannot skip durable time, so the demo "
            "runs on the real clock",
            file=sys.stderr,
        )
    config = DemoConfig(
        items=plan.items,
        max_concurrency=args.max_concurrency,
        executions=plan.executions,
        use_limiter=not args.no_limiter,
        max_backoff_seconds=args.max_backoff,
        wake_timeout_seconds=args.wake_timeout,
        hand_off=not args.polling,
        real_time=plan.clock == "real",
    )
    return config, not (args.no_limiter or args.limiter_only)


def _announce(config: Any, compare: bool) -> None:
    """Say on stderr what is about to run, before the first progress line."""
    if config.executions > 1:
        what = (
            f"{config.executions} executions x {config.items} items sharing one limit of "
            f"{config.max_concurrency}"
        )
    else:
        what = f"{config.items} items, max_concurrency {config.max_concurrency}"
    runs = (
        "the bare SDK, then with the limiter"
        if compare
        else ("with the limiter" if config.use_limiter else "the bare SDK")
    )
    clock = "real clock" if config.real_time else "skip clock"
    print(f"demo: {what}, {clock}: {runs}", file=sys.stderr)


def _limiter_semaphore(
    args: argparse.Namespace, admin: DynamoDBSemaphore, *, dummy_credentials: bool
) -> DynamoDBSemaphore:
    """The limiter's store: the admin store's table, endpoint and region, with the library's
    client settings. The CLI's client gives up within seconds, which suits a person waiting on
    a command, not a limiter whose numbers should be the ones a deployment sees."""
    import boto3

    local = LOCAL_CREDENTIALS if dummy_credentials else {}
    client = boto3.session.Session().client(
        "dynamodb",
        endpoint_url=args.endpoint_url,
        region_name=admin.client.meta.region_name,
        config=default_client_config(),
        aws_access_key_id=local.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=local.get("AWS_SECRET_ACCESS_KEY"),
    )
    return DynamoDBSemaphore(admin.table_name, client=client)


@contextmanager
def _backend(
    args: argparse.Namespace, make_semaphore: SemaphoreFactory
) -> Iterator[tuple[DynamoDBSemaphore, str]]:
    """The limiter's store with its table ready, and where it lives: the embedded DynamoDB by
    default; a local endpoint (table created) or AWS (table must exist) when given."""
    if args.endpoint_url is not None or args.table is not None:
        admin = make_semaphore(args)
        if args.endpoint_url is not None:
            admin.create_table()  # a local endpoint is disposable
        else:
            admin.slot_count("durable-semaphore-demo-probe")  # TableNotFoundError if missing
        yield _limiter_semaphore(args, admin, dummy_credentials=False), args.endpoint_url or "AWS"
        return
    with embedded_dynamodb() as server:
        args.endpoint_url = server.endpoint
        admin = make_semaphore(args, dummy_credentials=True)
        admin.create_table()
        yield _limiter_semaphore(args, admin, dummy_credentials=True), "embedded ministack"


def _run(
    config: Any, compare: bool, semaphore: DynamoDBSemaphore
) -> tuple[DemoResult | None, DemoResult]:
    from durable_semaphore.demo.running import run_compare, run_demo

    progress = ProgressLine()
    try:
        if compare:
            return run_compare(config, semaphore, on_progress=progress)
        return None, run_demo(config, semaphore, on_progress=progress)
    finally:
        progress.close()


def _draw(args: argparse.Namespace, result: Any, bare: Any, *, tenants: bool = False) -> str | None:
    """The PNG of a run (``tenants``: of the tenants scenario), or None without one."""
    if args.no_png:
        return None
    from durable_semaphore.demo.plot import save_tenants_timeline, save_timeline
    from durable_semaphore.errors import PlottingUnavailableError

    draw = save_tenants_timeline if tenants else save_timeline
    try:
        return draw(result, args.png, bare=bare)
    except PlottingUnavailableError as exc:
        print(f"note: {exc}", file=sys.stderr)
        return None


def _print_json(
    result: DemoResult, bare: DemoResult | None, png: str | None, where: str, ok: bool
) -> None:
    from durable_semaphore.demo.report import limiter_adds

    out = result.to_json()
    out.update({"png": png, "backend": where, "limiter_adds": limiter_adds(result, bare)})
    if bare is not None:
        out["bare"] = bare.to_json()
        out["ok"] = ok
    print(json.dumps(out))


def _print_text(result: DemoResult, bare: DemoResult | None, png: str | None, where: str) -> None:
    from durable_semaphore.demo.report import format_adds, format_comparison, format_summary

    print(format_summary(result, adds=False))
    print(f"  {'backend':<20}{where}")
    if png:
        print(f"  {'timeline':<20}{png}")
    if bare is not None:
        print(format_comparison(bare, result))
    print(format_adds(result, bare))
    if result.peak_in_flight > result.limit:
        print(f"FAIL: peak in flight {result.peak_in_flight} > limit {result.limit}")
    if result.leases_left:
        print(f"FAIL: {result.leases_left} lease(s) left in the table")
    if result.waiters_left:
        print(f"FAIL: {result.waiters_left} waiter(s) left in the table")
    if result.invalid_pending_outputs:
        print(f"FAIL: {result.invalid_pending_outputs} invalid PENDING output(s)")
    if bare is not None and not bare.succeeded:
        print("FAIL: the bare run did not succeed, so there is nothing to compare with")


def run_demo_command(args: argparse.Namespace, make_semaphore: SemaphoreFactory) -> int:
    """``durable-semaphore demo``: run, judge, print, draw; exit 0 when the verdict is OK.

    Ctrl-C at any point ends it with the CLI's one "interrupted" line (:class:`QuietInterrupt`).
    Under a comparison the bare run's overshoot is the point, not a failure.
    """
    with QuietInterrupt():
        _require_demo_extra()
        quiet_runner_leftovers()
        if getattr(args, "scenario", "limit") == "rate":
            return _run_rate_scenario(args, make_semaphore)
        if getattr(args, "scenario", "limit") == "tenants":
            return _run_tenants_scenario(args, make_semaphore)
        config, compare = _config(args)
        _announce(config, compare)
        with _backend(args, make_semaphore) as (semaphore, where):
            bare, result = _run(config, compare, semaphore)
        png = _draw(args, result, bare)
        ok = result.ok and (bare is None or bare.succeeded)
        if args.json:
            _print_json(result, bare, png, where, ok)
        else:
            _print_text(result, bare, png, where)
        return _EXIT_OK if ok else _EXIT_NO


def _run_rate_scenario(args: argparse.Namespace, make_semaphore: SemaphoreFactory) -> int:
    """``demo --scenario rate``: executions sharing a rate of starts, bare SDK then limiter."""
    from durable_semaphore.demo.rate import RateDemo, format_rate, run_rate_compare

    demo = RateDemo(
        executions=args.executions or 3,
        items=args.items or 10,
        rate=args.rate,
        burst=args.burst,
        use_limiter=not args.no_limiter,
    )
    compare = not (args.no_limiter or args.limiter_only)
    print(
        f"demo: {demo.executions} executions x {demo.items} items sharing {demo.rate:g} starts "
        f"per second, burst {demo.burst}, real clock: "
        + ("the bare SDK, then with the rate limiter" if compare else "one run"),
        file=sys.stderr,
    )
    with _backend(args, make_semaphore) as (semaphore, _where):
        bare, result = run_rate_compare(demo, semaphore, compare=compare)
    if args.json:
        out = result.to_json()
        if bare is not None:
            out["bare"] = bare.to_json()
        print(json.dumps(out))
    else:
        print(format_rate(result, bare))
    return _EXIT_OK if result.ok else _EXIT_NO


def _run_tenants_scenario(args: argparse.Namespace, make_semaphore: SemaphoreFactory) -> int:
    """``demo --scenario tenants``: per-tenant and total limits, the total raised mid-run."""
    from durable_semaphore.demo.tenants import TenantsDemo, format_tenants, run_tenants

    demo = TenantsDemo(executions=args.executions or 4, use_limiter=not args.no_limiter)
    compare = not (args.no_limiter or args.limiter_only)
    print(
        f"demo: {demo.executions} executions x {len(demo.mix)} items of tenants "
        f"{', '.join(sorted(demo.counts))}, at most {demo.per_tenant} per tenant and "
        f"{demo.total} in total, raised to {demo.raised_to} after {demo.raise_after:g} s, "
        "real clock: " + ("the bare SDK, then the limiters" if compare else "one run"),
        file=sys.stderr,
    )
    with _backend(args, make_semaphore) as (semaphore, where):
        bare = None
        if compare:
            bare = run_tenants(dataclasses.replace(demo, use_limiter=False), semaphore)
        result = run_tenants(demo, semaphore)
    png = _draw(args, result, bare, tenants=True)
    if args.json:
        out = result.to_json()
        out.update({"png": png, "backend": where})
        if bare is not None:
            out["bare"] = bare.to_json()
        print(json.dumps(out))
    else:
        print(format_tenants(result, bare))
        if png:
            print(f"  timeline: {png}")
    return _EXIT_OK if result.ok else _EXIT_NO


# -- local-dynamodb ----------------------------------------------------------------------------


def local_dynamodb_lines(endpoint: str) -> list[str]:
    """What ``local-dynamodb`` prints once it answers: the endpoint, then the shell lines that
    point boto3 (and so this library and its CLI) at it."""
    keys = " ".join(f"{k}={v}" for k, v in LOCAL_CREDENTIALS.items())
    return [
        f"local DynamoDB (ministack, in memory) listening on {endpoint}",
        "to use it from another shell:",
        f"  export AWS_ENDPOINT_URL_DYNAMODB={endpoint}",
        f"  export {keys} AWS_DEFAULT_REGION={LOCAL_REGION}",
        "  durable-semaphore create-table",
        "Ctrl-C stops it (its data goes with it)",
    ]


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_local_dynamodb(args: argparse.Namespace) -> int:
    """``durable-semaphore local-dynamodb``: serve the embedded DynamoDB until Ctrl-C (or
    SIGTERM), then stop it and say so in one line; exit 0, since that is how it is meant to
    end. If the server dies on its own, the error says why (the CLI's prerequisite code)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)  # stop ministack too, not just us
    endpoint = ""
    try:
        with embedded_dynamodb(port=args.port) as server:
            endpoint = server.endpoint
            print("\n".join(local_dynamodb_lines(endpoint)), flush=True)
            while True:
                server.check_alive()
                time.sleep(0.5)
    except KeyboardInterrupt:
        print(f"stopped the local DynamoDB{' on ' + endpoint if endpoint else ''}", file=sys.stderr)
        return _EXIT_OK
