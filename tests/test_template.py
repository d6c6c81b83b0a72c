"""template.yaml and the IAM policies agree with what the library actually does.

* The table's key schema and TTL attribute are the store's constants.
* Every DynamoDB statement names only the lease table's ARN, never ``*``.
* The granted DynamoDB actions are exactly the IAM actions behind the calls the store makes,
  recorded through a botocore hook while the store runs against DynamoDB Local. A new call in
  store.py without a policy change (or a stale grant) fails here, not in production.
* infra/iam/*.json say the same as template.yaml.
* The hand-off: the functions that release slots of the example's named limiter (the example
  itself and the reaper) have the hand-off switched on and may complete the callbacks of exactly
  the executions of the function that waits on it (the example may also look them up) -- by
  ARN, never ``*``. Those are exactly the Lambda calls a limiter's and the reaper's wake-ups
  make, recorded through a botocore hook.
* The example function runs the seed scenario under the local durable runner, polling and with
  the hand-off.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.stub import Stubber

from durable_semaphore import DynamoDBLimiter, DynamoDBSemaphore
from durable_semaphore.limiter import WAKER_ENV_VAR
from durable_semaphore.reaper import Reaper
from durable_semaphore.store import ATTRIBUTE_DEFINITIONS, KEY_SCHEMA, TTL_ATTRIBUTE, Grant
from durable_semaphore.wake import LambdaCallbackWaker, WakeOutcome
from tests.conftest import FakeClock

ROOT = Path(__file__).resolve().parent.parent
TABLE_ARN = {"Fn::GetAtt": ["LeaseTable", "Arn"]}
WAKE = "lambda:SendDurableExecutionCallbackSuccess"
#: What a limiter calls to wake a waiter, and to ask whether a waiter whose callback is gone
#: still runs. The reaper only wakes (its lookups are its ExecutionStatus statement).
WAKE_ACTIONS = {
    "ExampleFunctionRole": {WAKE, "lambda:GetDurableExecution"},
    "ReaperFunctionRole": {WAKE},
}
#: The functions that wait on the example's named limiter: the example itself.
WAITING_FUNCTIONS = ["ExampleFunction"]
#: The roles whose functions release slots of that limiter, and so must wake its waiters.
RELEASING_ROLES = {"ExampleFunctionRole": "ExampleFunction", "ReaperFunctionRole": "ReaperFunction"}


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short-form tags as their long forms."""


def _cfn_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)
    return loaded


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role, statement) for every inline policy statement of every role and function."""
    for name, role in resources(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for stmt in policy["PolicyDocument"]["Statement"]:
                yield name, stmt
    for name, fn in resources(template, "AWS::Serverless::Function").items():
        for policy in _listify(fn["Properties"].get("Policies", [])):
            if isinstance(policy, dict) and "Statement" in policy:
                for stmt in policy["Statement"]:
                    yield name, stmt


def ddb_actions_of(template: dict[str, Any], role: str) -> set[str]:
    return {
        action
        for name, stmt in statements(template)
        if name == role
        for action in _listify(stmt["Action"])
        if action.startswith("dynamodb:")
    }


def policy_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "infra" / "iam" / name).read_text())
    return loaded


def file_actions(name: str, prefix: str) -> set[str]:
    return {
        action
        for stmt in policy_file(name)["Statement"]
        for action in _listify(stmt["Action"])
        if action.startswith(prefix)
    }


# ----------------------------------------------------------------------------- the table


def test_table_key_schema_and_ttl_match_the_store(template: dict[str, Any]) -> None:
    table = template["Resources"]["LeaseTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["KeySchema"] == KEY_SCHEMA
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(ATTRIBUTE_DEFINITIONS, key=str)
    assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert "GlobalSecondaryIndexes" not in props and "LocalSecondaryIndexes" not in props


def test_table_billing_recovery_encryption_and_protection(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    props = template["Resources"]["LeaseTable"]["Properties"]
    assert params["BillingMode"]["Default"] == "PAY_PER_REQUEST"
    assert props["BillingMode"] == {"Ref": "BillingMode"}
    provisioned = props["ProvisionedThroughput"]["Fn::If"]
    assert provisioned[0] == "IsProvisioned"
    assert provisioned[1] == {
        "ReadCapacityUnits": {"Ref": "ReadCapacityUnits"},
        "WriteCapacityUnits": {"Ref": "WriteCapacityUnits"},
    }
    assert provisioned[2] == {"Ref": "AWS::NoValue"}
    assert props["PointInTimeRecoverySpecification"] == {
        "PointInTimeRecoveryEnabled": {"Fn::If": ["PitrEnabled", True, False]}
    }
    assert template["Conditions"]["PitrEnabled"] == {
        "Fn::Equals": [{"Ref": "PointInTimeRecovery"}, "true"]
    }
    assert params["PointInTimeRecovery"]["Default"] == "true"
    assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS"}
    assert params["DeletionProtection"]["AllowedValues"] == ["true", "false"]
    assert props["DeletionProtectionEnabled"] == {"Fn::If": ["DeletionProtected", True, False]}
    assert template["Conditions"]["DeletionProtected"] == {
        "Fn::Equals": [{"Ref": "DeletionProtection"}, "true"]
    }
    assert template["Outputs"]["LeaseTableName"]["Value"] == {"Ref": "LeaseTable"}


def test_functions_get_the_table_and_the_durable_config(template: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["DURABLE_SEMAPHORE_TABLE"] == {"Ref": "LeaseTable"}
    example = template["Resources"]["ExampleFunction"]["Properties"]
    assert set(example["DurableConfig"]) == {"ExecutionTimeout", "RetentionPeriodInDays"}
    assert template["Parameters"]["ExecutionTimeoutSeconds"]["MaxValue"] == 31_622_400
    for name in ("ExampleFunction", "ReaperFunction", "TargetFunction"):
        code = ROOT / template["Resources"][name]["Properties"]["CodeUri"]
        assert (code / "app.py").is_file() and (code / "requirements.txt").is_file()
    for name in ("ExampleFunction", "ReaperFunction"):
        code = ROOT / template["Resources"][name]["Properties"]["CodeUri"]
        assert "durable-semaphore" in (code / "requirements.txt").read_text()
    reaper = template["Resources"]["ReaperFunction"]["Properties"]
    assert reaper["Events"]["Sweep"]["Type"] == "Schedule"
    assert reaper["Events"]["Sweep"]["Properties"]["Schedule"] == {"Ref": "ReaperSchedule"}


# ----------------------------------------------------------------------------- the policies


def test_dynamodb_statements_name_only_the_table(template: dict[str, Any]) -> None:
    found = 0
    for role, stmt in statements(template):
        actions = _listify(stmt["Action"])
        if not any(a.startswith("dynamodb:") for a in actions):
            continue
        found += 1
        assert all(a.startswith("dynamodb:") and "*" not in a for a in actions), (role, actions)
        assert _listify(stmt["Resource"]) == [TABLE_ARN], (role, stmt["Resource"])
    assert found == 2  # the example function and the reaper


def test_no_statement_grants_wildcards(template: dict[str, Any]) -> None:
    for role, stmt in statements(template):
        assert stmt["Effect"] == "Allow"
        assert "NotAction" not in stmt and "NotResource" not in stmt
        for action in _listify(stmt["Action"]):
            assert "*" not in action, (role, action)
        for resource in _listify(stmt["Resource"]):
            assert resource != "*", (role, stmt)
            if action_is_lambda(stmt):
                # Durable execution actions are authorized on <function>:<qualifier>/..., so a
                # scoped grant is "<function arn>:*" -- but never a bare "*" or "function:*".
                text = json.dumps(resource)
                assert "function:*" not in text, (role, resource)


def action_is_lambda(stmt: dict[str, Any]) -> bool:
    return any(a.startswith("lambda:") for a in _listify(stmt["Action"]))


def test_reaper_may_only_look_up_executions_and_wake_waiters(template: dict[str, Any]) -> None:
    lambda_actions = {
        a
        for role, stmt in statements(template)
        if role == "ReaperFunctionRole"
        for a in _listify(stmt["Action"])
        if a.startswith("lambda:")
    }
    assert (
        lambda_actions
        == {"lambda:GetDurableExecution", WAKE}
        == file_actions("reaper-policy.json", "lambda:")
    )


# ----------------------------------------------------------------------------- the hand-off


def _statements_with(template: dict[str, Any], role: str, action: str) -> list[dict[str, Any]]:
    return [
        stmt
        for name, stmt in statements(template)
        if name == role and action in _listify(stmt["Action"])
    ]


def _execution_arns_of(template: dict[str, Any], function: str) -> str:
    """The IAM resource covering every durable execution of a function of this stack.

    Durable execution actions are authorized on ``<function arn>:<version>/durable-execution/
    <name>/<id>``, so the grant is the function's ARN plus ``:*`` (an unqualified ARN matches
    no execution). Built from the function's fixed name: !GetAtt would be circular.
    """
    name = template["Resources"][function]["Properties"]["FunctionName"]["Fn::Sub"]
    assert "*" not in name and "${AWS::StackName}" in name, name
    return f"arn:${{AWS::Partition}}:lambda:${{AWS::Region}}:${{AWS::AccountId}}:function:{name}:*"


@pytest.mark.parametrize("role", sorted(RELEASING_ROLES))
def test_releasers_may_wake_exactly_the_waiting_functions(
    template: dict[str, Any], role: str
) -> None:
    function = template["Resources"][RELEASING_ROLES[role]]["Properties"]
    assert function["Role"] == {"Fn::GetAtt": [role, "Arn"]}
    # The hand-off is on: named limiters of this function wake their waiters through Lambda.
    assert function["Environment"]["Variables"][WAKER_ENV_VAR] == "lambda"

    found = _statements_with(template, role, WAKE)
    assert len(found) == 1, found
    stmt = found[0]
    assert stmt["Sid"] == "WakeWaiters" and stmt["Effect"] == "Allow"
    assert set(_listify(stmt["Action"])) == WAKE_ACTIONS[role]
    assert "Condition" not in stmt and "NotResource" not in stmt
    resources = _listify(stmt["Resource"])
    for resource in resources:
        assert isinstance(resource, dict) and set(resource) == {"Fn::Sub"}, resource
        text = resource["Fn::Sub"]
        assert isinstance(text, str), text  # a plain Sub: no parameters, no conditions
        assert text.count("*") == 1 and text.endswith(":*"), text  # only the qualifier
        assert "function:*" not in text and "${AWS::StackName}-*" not in text, text
    assert sorted(r["Fn::Sub"] for r in resources) == sorted(
        _execution_arns_of(template, name) for name in WAITING_FUNCTIONS
    )


def test_no_function_without_the_grant_turns_the_hand_off_on(template: dict[str, Any]) -> None:
    assert template["Globals"]["Function"]["Environment"]["Variables"].get(WAKER_ENV_VAR) is None
    for name, fn in resources(template, "AWS::Serverless::Function").items():
        env = fn["Properties"].get("Environment", {}).get("Variables", {})
        if env.get(WAKER_ENV_VAR) == "lambda":
            role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
            assert _statements_with(template, role, WAKE), name


@pytest.mark.parametrize(
    ("name", "role"),
    [("limiter-policy.json", "ExampleFunctionRole"), ("reaper-policy.json", "ReaperFunctionRole")],
)
def test_wake_statement_of_the_policy_files_matches_the_template(
    template: dict[str, Any], name: str, role: str
) -> None:
    expected = _statements_with(template, role, WAKE)[0]
    wake = [s for s in policy_file(name)["Statement"] if s.get("Sid") == "WakeWaiters"]
    assert len(wake) == 1, name
    assert wake[0]["Effect"] == "Allow"
    assert set(_listify(wake[0]["Action"])) == set(_listify(expected["Action"]))
    assert _listify(wake[0]["Resource"]) == [
        "arn:aws:lambda:REGION:ACCOUNT_ID:function:WAITING_FUNCTION_NAME:*"
    ]
    if role == "ExampleFunctionRole":
        assert file_actions(name, "lambda:") == WAKE_ACTIONS[role]


def _record_lambda_calls(client: Any) -> set[str]:
    """The IAM actions behind every request made through a Lambda client, from now on."""
    called: set[str] = set()

    def record(model: Any, **_: Any) -> None:
        called.add(f"lambda:{model.name}")

    client.meta.events.register("provide-client-params.lambda", record)
    return called


def test_wake_policy_covers_exactly_the_limiter_wake_calls(
    template: dict[str, Any],
    make_semaphore: Callable[..., DynamoDBSemaphore],
) -> None:
    """Every path of a limiter's wake-up, through a stubbed Lambda client: delivered; callback
    gone and the waiter alive (its slot is kept for it); callback gone and the waiter dead (its
    slot is taken back). The Lambda calls made are exactly the example role's grant."""
    arn = "arn:aws:lambda:us-east-1:123456789012:function:x-example:7/durable-execution/r/1"
    lam = boto3.client("lambda", region_name="us-east-1")
    called = _record_lambda_calls(lam)
    limiter = DynamoDBLimiter(
        name="k", limit=1, semaphore=make_semaphore(), waker=LambdaCallbackWaker(lam)
    )
    grant = Grant(key="k", holder=f"{arn}#m#1", execution_arn=arn, callback_id="Y2I=")
    gone = {"Error": {"Code": "ResourceNotFoundException", "Message": "gone"}}
    execution = {
        "DurableExecutionArn": arn,
        "DurableExecutionName": "r",
        "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:x-example",
        "StartTimestamp": time.time(),
    }
    stub = Stubber(lam)
    stub.add_response("send_durable_execution_callback_success", {})
    for status in ("RUNNING", "FAILED"):
        stub.add_client_error(
            "send_durable_execution_callback_success",
            "ResourceNotFoundException",
            http_status_code=404,
            response_meta=gone,
        )
        stub.add_response("get_durable_execution", {**execution, "Status": status})
    with stub:
        assert limiter.wake(grant) is WakeOutcome.DELIVERED
        assert limiter.wake(grant) is WakeOutcome.GONE  # alive: kept for a grace period
        assert limiter.wake(grant) is WakeOutcome.GONE  # dead: revoked (nothing to pass on)
        stub.assert_no_pending_responses()
    granted = {
        a
        for stmt in _statements_with(template, "ExampleFunctionRole", WAKE)
        for a in _listify(stmt["Action"])
    }
    assert called == granted == WAKE_ACTIONS["ExampleFunctionRole"]


def test_policy_files_match_the_template(template: dict[str, Any]) -> None:
    assert ddb_actions_of(template, "ExampleFunctionRole") == file_actions(
        "limiter-policy.json", "dynamodb:"
    )
    assert ddb_actions_of(template, "ReaperFunctionRole") == file_actions(
        "reaper-policy.json", "dynamodb:"
    )


# ----------------------------------------------------------------------------- drift


_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


class CallRecorder:
    """The IAM actions behind every DynamoDB request made through a client.

    IAM authorizes each item of a TransactWriteItems as its own PutItem/UpdateItem/DeleteItem
    (ConditionCheckItem for a ConditionCheck), so transactions are recorded item by item.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.actions: set[str] = set()
        self.operations: set[str] = set()

    def _hook(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.operations.add(model.name)
        if model.name == "TransactWriteItems":
            for item in params["TransactItems"]:
                self.actions.update(_ITEM_ACTIONS[kind] for kind in item)
        else:
            self.actions.add(f"dynamodb:{model.name}")

    def __enter__(self) -> CallRecorder:
        self.client.meta.events.register(
            "provide-client-params.dynamodb", self._hook, unique_id="policy-drift"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.meta.events.unregister(
            "provide-client-params.dynamodb", unique_id="policy-drift"
        )


def test_limiter_policy_covers_exactly_the_store_calls_of_the_sdk_integration(
    template: dict[str, Any],
    make_semaphore: Callable[..., DynamoDBSemaphore],
    clock: FakeClock,
    ddb_client: Any,
) -> None:
    sem = make_semaphore(clock=clock)  # creates the table before recording starts
    with CallRecorder(ddb_client) as rec:
        # The calls sdk.py makes: try_acquire, renew, holders, release -- through every path.
        assert sem.try_acquire("k", "a", 2, ttl_seconds=10) is not None
        assert sem.try_acquire("k", "a", 2, ttl_seconds=10) is not None  # idempotent re-acquire
        assert sem.renew("k", "a", 100) is not None
        assert sem.try_acquire("k", "b", 2, ttl_seconds=10) is not None
        assert sem.try_acquire("k", "c", 2) is None  # full: reconcile finds nothing to free
        clock.advance(20 + sem.clock_skew_seconds)  # b expires, beyond the skew margin
        assert sem.try_acquire("k", "c", 2) is not None  # full by counter: reconcile frees b
        assert [lease.holder for lease in sem.holders("k")] == ["a", "c"]
        assert sem.release("k", "a") is True
        assert sem.release("k", "a") is False
        assert sem.try_acquire("k", "d", 2, ttl_seconds=5) is not None
        clock.advance(10)
        assert sem.release("k", "d") is False  # expired: cleaned up on the way
        assert sem.reclaim_expired("k") == 0
        assert sem.release("k", "c") is True
        assert sem.forget_if_idle("k") is True  # the sweep drops a finished map's counter
        # Waiting on a named limit: join the queue, check in (it checks the key in the same
        # transaction), be handed the slot, claim it.
        assert sem.try_acquire("q", "holder", 1) is not None
        waiting = sem.acquire("q", "waiter", 1, callback_id="Y2I=")
        assert waiting.queued
        assert sem.acquire("q", "waiter", 1, position=waiting.position).queued
        assert sem.release_slot("q", "holder").grant is not None
        assert sem.acquire("q", "waiter", 1, position=waiting.position).held
        assert sem.release("q", "waiter") is True
    assert rec.actions == ddb_actions_of(template, "ExampleFunctionRole")
    assert "Scan" not in rec.operations  # only the reaper scans


def test_reaper_policy_covers_exactly_the_reaper_calls(
    template: dict[str, Any],
    make_semaphore: Callable[..., DynamoDBSemaphore],
    clock: FakeClock,
    ddb_client: Any,
) -> None:
    sem = make_semaphore(clock=clock)
    arn = "arn:aws:lambda:us-east-1:123456789012:function:x:$LATEST/durable-execution/r/1"
    assert sem.try_acquire("k", f"{arn}#m#1", 5, execution_arn=arn) is not None
    assert sem.try_acquire("k", "expiring", 5, ttl_seconds=5) is not None
    # A named limit full with the dead execution's lease, and a waiter (no ARN: no lookup) on
    # a callback: the release hands it the slot, and the reaper wakes it.
    assert sem.try_acquire("w", f"{arn}#m#2", 1, execution_arn=arn) is not None
    assert sem.acquire("w", "waiter", 1, callback_id="Y2I=", queue_ttl_seconds=3600).queued
    clock.advance(10 + sem.clock_skew_seconds)
    lam = boto3.client("lambda", region_name="us-east-1")
    called = _record_lambda_calls(lam)
    stub = Stubber(lam)
    stub.add_response(
        "get_durable_execution",
        {
            "DurableExecutionArn": arn,
            "DurableExecutionName": "r",
            "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:x",
            "StartTimestamp": time.time(),
            "Status": "FAILED",
        },
    )
    stub.add_response("send_durable_execution_callback_success", {})
    with stub, CallRecorder(ddb_client) as rec:
        report = Reaper(
            DynamoDBLimiter(semaphore=sem, waker=None), lam, waker=LambdaCallbackWaker(lam)
        ).reap(page_size=10)
        stub.assert_no_pending_responses()
    assert (report.released_terminal, report.released_expired) == (2, 1)
    assert (report.slots_handed_over, report.waiters_woken) == (1, 1)
    assert rec.actions == ddb_actions_of(template, "ReaperFunctionRole")
    granted = {
        a
        for role, stmt in statements(template)
        if role == "ReaperFunctionRole"
        for a in _listify(stmt["Action"])
        if a.startswith("lambda:")
    }
    assert called == granted


# ----------------------------------------------------------------------------- the example


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("waker", ["poll", "lambda"])
def test_example_function_runs_the_seed_scenario(
    semaphore: DynamoDBSemaphore,
    ddb_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    waker: str,
) -> None:
    """Three executions at once share the example's named limit of 3: as deployed
    (DURABLE_SEMAPHORE_WAKER=lambda; callbacks completed through the testing library's Lambda
    API, the same call as on AWS) and without the env var (waiters poll)."""
    sdk = pytest.importorskip("aws_durable_execution_sdk_python")
    from aws_durable_execution_sdk_python.__about__ import __version__

    if int(__version__.split(".")[0]) < 2:
        pytest.skip("the local runner's chained invokes need SDK >= 2.1")
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

    from durable_semaphore import spec as spec_module
    from durable_semaphore.demo.embedded import free_port
    from durable_semaphore.demo.lambda_endpoint import local_lambda_endpoint
    from durable_semaphore.demo.observer import all_operations
    from durable_semaphore.sdk import WAIT_OPERATION_NAME
    from tests.sdk.observe import peak_of

    monkeypatch.setenv("DURABLE_SEMAPHORE_TABLE", semaphore.table_name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint)
    monkeypatch.setenv("TARGET_FUNCTION", "target")
    monkeypatch.setenv("MAX_CONCURRENCY", "3")
    monkeypatch.setenv("WORK_SECONDS", "0")
    monkeypatch.delenv(WAKER_ENV_VAR, raising=False)
    spec_module._default_limiters.clear()
    example = _load(ROOT / "infra/functions/example/app.py", "example_app")
    target = _load(ROOT / "infra/functions/target/app.py", "target_app")
    # The local runner misses a completion that lands while the waiter's invocation runs (as
    # Lambda may); such a waiter resumes at its callback timeout. Keep that short here, as the
    # demo does, so a lost wake-up costs the test seconds, not a minute.
    monkeypatch.setattr(example.LIMITER, "wake_timeout_seconds", 2)

    @sdk.durable_execution
    def target_as_durable(event: Any, context: Any) -> Any:
        # The runner only hosts durable targets; a 1 s durable wait stands in for the work.
        context.wait(sdk.config.Duration.from_seconds(1))
        return target.handler(event, None)

    executions = 3
    try:
        with DurableFunctionTestRunner(handler=example.handler) as runner:
            runner.register_durable_function("target", target_as_durable)
            with contextlib.ExitStack() as stack:
                if waker == "lambda":
                    endpoint = stack.enter_context(local_lambda_endpoint(runner, free_port()))
                    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", endpoint)
                    monkeypatch.setenv(WAKER_ENV_VAR, "lambda")
                arns = [
                    runner.run_async(
                        input=json.dumps({"items": [k * 10 + i for i in range(6)]}),
                        execution_timeout=120,
                        function_name="example",
                        execution_name=f"example-{k}",
                    )
                    for k in range(executions)
                ]
                results = [runner.wait_for_result(arn, timeout=120) for arn in arns]
    finally:
        spec_module._default_limiters.clear()

    assert example.LIMITER.name is not None  # a named limit: the kind that hands off
    assert (example.LIMITER.waker is not None) == (waker == "lambda")
    for k, res in enumerate(results):
        assert res.status.name == "SUCCEEDED", res.error
        assert json.loads(res.result) == [(k * 10 + i) * 2 for i in range(6)]
    assert 2 <= peak_of(results, "InvokeOperation") <= 3  # over all three executions
    assert list(semaphore.scan_leases()) == []
    assert list(semaphore.scan_waiters()) == []
    waits = [
        op
        for res in results
        for op in all_operations(res)
        if type(op).__name__ == "CallbackOperation" and op.name == WAIT_OPERATION_NAME
    ]
    # 18 branches, 3 slots: with the hand-off, waiting branches suspend on callbacks.
    assert bool(waits) == (waker == "lambda")
