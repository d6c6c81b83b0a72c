"""Limits set at run time (``set-limit``): the override on the counter item, and the
conditions that make every admission count against the limit in force when it is written.

The override lives on the counter item itself (``ol``, and ``olt`` when it was set), so the
writes that admit a holder can check it in the same condition that checks the count, at no
extra request. Each writer keeps a belief per key (none, unless it has seen an override) and
every write that compares the count with a limit also carries that belief:
``attribute_not_exists(ol)`` when it believes none, ``ol = :ol`` otherwise. A stale belief is
refused by DynamoDB, the refusal returns the item (``ALL_OLD``), and the writer retries with
the override it now sees. No admission can therefore ever count against a limit other than
the one stored when it happens. The writes themselves are built in
:mod:`durable_semaphore.store.requests` (:func:`~.requests.set_override`).

An override is configuration, not state: while one is set the counter's TTL is pinned far in
the future (:data:`PINNED_LIFE`) and the idle clean-ups leave the item alone; clearing it
gives the item back an ordinary TTL.
"""

from __future__ import annotations

from dataclasses import dataclass

from durable_semaphore.store.expressions import Expr
from durable_semaphore.store.schema import OVERRIDE

#: The TTL of a counter that carries an override: 9999-12-31, never reached, so DynamoDB's
#: sweeper never deletes a key's configuration with its idle rows. Writes that move a TTL
#: later take the variant that leaves it alone (``#e >= :life``) while they believe in an
#: override, so a pinned counter costs no refused write either.
PINNED_LIFE = 253_402_300_799

#: The writer believes no override is set (the default belief, and the common case).
NO_OVERRIDE = "attribute_not_exists(#ol)"
#: The writer believes the override is ``:ol``.
OVERRIDE_IS = "#ol = :ol"


def believe(expr: Expr, override: int | None) -> None:
    """Make ``expr`` hold only while the override is what the writer believes it is."""
    expr.names["#ol"] = OVERRIDE
    if override is None:
        expr.conditions.append(NO_OVERRIDE)
    else:
        expr.conditions.append(OVERRIDE_IS)
        expr.values[":ol"] = {"N": str(override)}


def in_force(override: int | None, code_limit: int) -> int:
    """The limit an admission counts against: the override, else the code's limit."""
    return override if override is not None else code_limit


@dataclass(frozen=True, slots=True)
class StoredLimit:
    """What the counter item says about a key's limit (one read)."""

    #: The override, and when it was set (epoch seconds); None when none is set.
    override: int | None
    set_at: float | None
    #: The limit the code passed at the last admission or enqueue (``lim``), if any.
    code_limit: int | None
