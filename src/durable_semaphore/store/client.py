"""Talking to DynamoDB: the client, calls and transactions, and what their errors mean.

Everything below the decision logic goes through :class:`StoreIO`, so a lost race is one of
two exceptions (:class:`Cancelled` for a transaction, :class:`ConditionFailed` for a single
write), each carrying what DynamoDB returned, and a table that cannot serve us is one of ours
(:class:`~durable_semaphore.errors.TableNotFoundError`, :class:`TableSchemaError`).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, InvalidRegionError, NoRegionError

from durable_semaphore import retry
from durable_semaphore.errors import (
    ConfigurationError,
    DurableSemaphoreError,
    InvalidArgumentError,
    TableNotFoundError,
    TableSchemaError,
)
from durable_semaphore.retry import client_config
from durable_semaphore.store.schema import EXPECTED_KEY, table_schema_problem

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
else:
    DynamoDBClient = Any


def default_client_config() -> Config:
    """The library's client: botocore's standard retry mode rides out throttling, 5xx and
    connection resets (:data:`durable_semaphore.retry.STORE`)."""
    return client_config(retry.STORE)


def admin_client_config() -> Config:
    """For commands a person waits on (the CLI): an unreachable endpoint fails in seconds
    (:data:`durable_semaphore.retry.ADMIN`)."""
    return client_config(retry.ADMIN)


#: What a malformed endpoint URL is told; the example is what DynamoDB Local listens on.
ENDPOINT_URL_HINT = "must be a URL like http://localhost:8000"


def endpoint_url_problem(url: object) -> str | None:
    """Why ``url`` cannot be a DynamoDB endpoint (None if it can): http(s), a host, a port.

    Stricter than botocore, which rejects ``localhost:8000`` with a bare ``ValueError`` at
    client creation but lets ``ftp://host`` or ``http://host:abc`` through to fail per request.
    """
    if not isinstance(url, str) or not url:
        return ENDPOINT_URL_HINT
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return ENDPOINT_URL_HINT
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
        return ENDPOINT_URL_HINT
    return None


def _configured_endpoint_source(url: str) -> str:
    """Where boto3 found an endpoint URL nobody passed (its precedence order)."""
    for var in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"):
        if os.environ.get(var) == url:
            return f"${var}"
    return "the AWS config file (endpoint_url)"


_NO_REGION = (
    "no AWS region configured for DynamoDB; set AWS_REGION or AWS_DEFAULT_REGION (or region in "
    "the AWS config file), or pass region_name"
)


def create_client(
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    config: Config | None = None,
    session: boto3.session.Session | None = None,
    **kwargs: Any,
) -> DynamoDBClient:
    """A DynamoDB client, or our error instead of botocore's for what makes one impossible.

    botocore raises ``NoRegionError`` or a bare ``ValueError("Invalid endpoint")`` here, which
    name no remedy (and end the CLI in a traceback). A bad ``endpoint_url``/``region_name``
    argument raises :class:`InvalidArgumentError`; a missing or bad region or endpoint from the
    environment or config file, :class:`ConfigurationError`. Nothing is sent to DynamoDB.

    botocore reads ``AWS_DEFAULT_REGION`` but not ``AWS_REGION``, which the other AWS SDKs and
    the Lambda runtime set; when nothing else names a region, ``AWS_REGION`` is used, so the
    variable our error names works.
    """
    if endpoint_url is not None and (problem := endpoint_url_problem(endpoint_url)):
        raise InvalidArgumentError("endpoint_url", endpoint_url, problem)
    if region_name is not None and not region_name.strip():
        raise InvalidArgumentError("region_name", region_name, "must not be empty")
    if session is None:  # what boto3.client() uses
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        session = boto3.DEFAULT_SESSION
        assert session is not None
    region_name, region_from_env = _region(session, region_name)
    try:
        client = session.client(
            "dynamodb",
            endpoint_url=endpoint_url,
            region_name=region_name,
            config=config if config is not None else default_client_config(),
            **kwargs,
        )
    except NoRegionError:
        raise ConfigurationError("region", _NO_REGION) from None
    except InvalidRegionError as exc:
        if region_name is not None and not region_from_env:
            raise InvalidArgumentError("region_name", region_name, str(exc)) from None
        raise ConfigurationError(
            "region",
            f"the configured AWS region is malformed: {exc}; fix AWS_REGION or "
            "AWS_DEFAULT_REGION (or region in the AWS config file)",
        ) from None
    except ValueError as exc:
        _raise_endpoint_error(exc, endpoint_url)
    configured = client.meta.endpoint_url
    if endpoint_url is None and (problem := endpoint_url_problem(configured)):
        raise ConfigurationError(
            "endpoint_url",
            f"the DynamoDB endpoint {configured!r} from "
            f"{_configured_endpoint_source(configured)} {problem}; fix or unset it",
        )
    return client


def _region(session: boto3.session.Session, region_name: str | None) -> tuple[str | None, bool]:
    """The region to pass, and whether it came from ``AWS_REGION`` (which botocore ignores)."""
    if region_name is not None or session.region_name:
        return region_name, False
    from_env = os.environ.get("AWS_REGION", "").strip() or None
    if from_env is None and session.region_name == "":
        # botocore would build the endpoint "dynamodb..amazonaws.com" and call it invalid.
        raise ConfigurationError("region", f"{_NO_REGION} (the configured region is empty)")
    return from_env, from_env is not None


def _raise_endpoint_error(exc: ValueError, endpoint_url: str | None) -> NoReturn:
    """botocore's bare ``ValueError("Invalid endpoint")`` as ours, naming where it came from."""
    if not str(exc).startswith("Invalid endpoint"):
        raise exc
    if endpoint_url is not None:  # one botocore refuses that passed our check
        raise InvalidArgumentError("endpoint_url", endpoint_url, ENDPOINT_URL_HINT) from None
    url = str(exc).partition(": ")[2]
    raise ConfigurationError(
        "endpoint_url",
        f"the DynamoDB endpoint {url!r} from {_configured_endpoint_source(url)} "
        f"{ENDPOINT_URL_HINT}; fix or unset it",
    ) from None


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _message(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Message", "")) or str(err)


def failed(reason: Mapping[str, Any]) -> bool:
    """Whether one item of a cancelled transaction failed its condition."""
    return reason.get("Code") == "ConditionalCheckFailed"


class Cancelled(Exception):
    """A cancelled transaction, with DynamoDB's per-item reasons in request order.

    Only for outcomes a retry can change (failed conditions, conflicts): a ``ValidationError``
    reason is raised by :meth:`StoreIO.transact` as a configuration error instead.
    """

    def __init__(self, reasons: list[Mapping[str, Any]]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons


class ConditionFailed(Exception):
    """A single conditional write refused; ``item`` is the item as it was (None if absent).

    ``retried``: botocore sent the request more than once, so an earlier attempt may have
    been applied and this refusal be its own effect (a single write has no idempotency token).
    """

    def __init__(self, item: Mapping[str, Any] | None, *, retried: bool = False) -> None:
        super().__init__("condition failed")
        self.item = item
        self.retried = retried


class StoreIO:
    """Requests on one table, with our errors for a table that cannot serve them."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def transact(self, items: list[dict[str, Any]]) -> None:
        """TransactWriteItems with a fresh idempotency token.

        botocore resends the same token when it retries a timed-out request, so a write that
        landed but whose answer was lost is not applied twice, and reports success.

        A cancellation with a ``ValidationError`` reason is not a lost race: the request can
        never succeed (typically the table's key types differ from ours), so it is raised as
        a configuration error at once instead of a :class:`Cancelled` that callers retry.
        """
        try:
            self.client.transact_write_items(
                TransactItems=items,  # type: ignore[arg-type]
                ClientRequestToken=uuid.uuid4().hex,
            )
        except ClientError as err:
            if error_code(err) == "TransactionCanceledException":
                reasons = err.response.get("CancellationReasons") or [{} for _ in items]
                for reason in reasons:
                    if reason.get("Code") == "ValidationError":
                        self.raise_invalid(err, str(reason.get("Message") or _message(err)))
                raise Cancelled(list(reasons)) from None
            self.raise_table_missing(err)
            raise

    def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self.client, method)(**kwargs)
            return result
        except ClientError as err:
            self.raise_table_missing(err)
            raise

    def raise_table_missing(self, err: ClientError) -> None:
        """Raise ours for the errors that mean the table cannot serve us: it is missing, or it
        called a request invalid (:meth:`raise_invalid`). Anything else is left to the caller."""
        code = error_code(err)
        if code == "ResourceNotFoundException":
            raise TableNotFoundError(self.table_name) from err
        if code == "ValidationException":
            self.raise_invalid(err, _message(err))

    def raise_invalid(self, err: ClientError, message: str) -> NoReturn:
        """DynamoDB called a request of ours invalid: say whether the table is the cause.

        Our requests are well-formed for a lease table, so the usual cause is a table of
        another schema. One DescribeTable tells which key differs (:class:`TableSchemaError`);
        a table whose schema is right gets a plain :class:`DurableSemaphoreError` with
        DynamoDB's message instead of a false schema claim. When the table cannot be described
        (least-privilege roles have no ``dynamodb:DescribeTable``), DynamoDB's own message
        decides: one about keys or the schema is a schema error. Never retried: an invalid
        request stays invalid.
        """
        try:
            desc = self.client.describe_table(TableName=self.table_name)["Table"]
        except ClientError as describe_err:
            if error_code(describe_err) == "ResourceNotFoundException":
                raise TableNotFoundError(self.table_name) from err
            unchecked = f"DescribeTable failed: {error_code(describe_err)}"
        except BotoCoreError as describe_err:
            unchecked = f"DescribeTable failed: {describe_err}"
        else:
            problem = table_schema_problem(desc)
            if problem is not None:
                raise TableSchemaError(self.table_name, problem) from err
            raise DurableSemaphoreError(
                f"DynamoDB refused a request on table {self.table_name!r} as invalid, though "
                f"its key schema is right ({EXPECTED_KEY}): {message}"
            ) from err
        if re.search(r"\bkey|schema", message, re.IGNORECASE):
            raise TableSchemaError(
                self.table_name,
                f"DynamoDB refused our key ({message}; {unchecked}, so the table's key is not "
                f"known), expected {EXPECTED_KEY}",
            ) from err
        raise DurableSemaphoreError(
            f"DynamoDB refused a request on table {self.table_name!r} as invalid: {message} "
            f"({unchecked}; a lease table's key is {EXPECTED_KEY})"
        ) from err

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """A conditional UpdateItem; a refusal raises :class:`ConditionFailed` with the item
        as it was (the request must ask for ``ReturnValuesOnConditionCheckFailure``)."""
        return self._conditional("update_item", kwargs)

    def delete(self, **kwargs: Any) -> dict[str, Any]:
        """A conditional DeleteItem; a refusal raises :class:`ConditionFailed`."""
        return self._conditional("delete_item", kwargs)

    def _conditional(self, method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.call(method, TableName=self.table_name, **kwargs)
        except ClientError as err:
            if error_code(err) != "ConditionalCheckFailedException":
                raise
            old: Mapping[str, Any] | None = err.response.get("Item")  # type: ignore[assignment]
            attempts = err.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            raise ConditionFailed(old, retried=bool(attempts)) from None

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """One item, strongly read."""
        out = self.call("get_item", TableName=self.table_name, Key=key, ConsistentRead=True)
        item: dict[str, Any] | None = out.get("Item")
        return item

    def call_pages(self, method: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every page of a Query or Scan, with our errors for a table that cannot serve it."""
        try:
            yield from self.client.get_paginator(method).paginate(**kwargs)  # type: ignore[call-overload]
        except ClientError as err:
            self.raise_table_missing(err)
            raise
