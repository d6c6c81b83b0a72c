"""An update expression being built (SET/REMOVE clauses, conditions, names, values): the one
shape every request builder fills in, kept apart so that the builders of every kind of
request (``requests``, ``queue_requests``, ``ordering``, ``overrides``) share it without
importing one another."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Expr"]


@dataclass
class Expr:
    """One update expression being built: SET/REMOVE clauses, conditions, names, values."""

    sets: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def update(self, key: dict[str, Any], *, return_old: bool = True) -> dict[str, Any]:
        """UpdateItem arguments (without the table)."""
        clauses = []
        if self.sets:
            clauses.append("SET " + ", ".join(self.sets))
        if self.removes:
            clauses.append("REMOVE " + ", ".join(self.removes))
        kwargs: dict[str, Any] = {"Key": key, "UpdateExpression": " ".join(clauses)}
        self._add_condition(kwargs)
        if return_old:
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return kwargs

    def check(self, key: dict[str, Any]) -> dict[str, Any]:
        """ConditionCheck/Delete arguments (without the table)."""
        kwargs: dict[str, Any] = {"Key": key}
        self._add_condition(kwargs)
        return kwargs

    def _add_condition(self, kwargs: dict[str, Any]) -> None:
        if self.conditions:
            kwargs["ConditionExpression"] = " AND ".join(self.conditions)
        if self.names:
            kwargs["ExpressionAttributeNames"] = dict(self.names)
        if self.values:
            kwargs["ExpressionAttributeValues"] = dict(self.values)
