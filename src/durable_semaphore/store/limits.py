"""Setting a key's limit at run time: the store's ``set_limit``, ``clear_limit`` and
``read_limit`` (the rules are in :mod:`durable_semaphore.store.overrides`)."""

from __future__ import annotations

from durable_semaphore.errors import ContentionError
from durable_semaphore.store import requests
from durable_semaphore.store.acquiring import Acquiring
from durable_semaphore.store.client import ConditionFailed
from durable_semaphore.store.core import MAX_ATTEMPTS, backoff
from durable_semaphore.store.model import Grant
from durable_semaphore.store.overrides import StoredLimit
from durable_semaphore.store.schema import Meta, life_of
from durable_semaphore.store.validate import validate_key, validate_limit


class Overriding(Acquiring):
    """A limit set at run time that takes precedence over the one the code passes."""

    def set_limit(self, key: str, limit: int) -> tuple[Grant, ...]:
        """Make ``limit`` the limit of ``key`` whatever its callers pass, until cleared.

        Raising it hands the new room to the oldest waiters at once: the grants this call
        made come back, for the caller to wake. Lowering it revokes nobody: admissions (and
        hand-offs of released slots) stop until the units held are under the new limit, and
        a release meanwhile just frees. One write, plus the hand-offs. Nothing is written on
        bad input.
        """
        validate_key(key)
        validate_limit(limit)
        out = self.io.update(**requests.set_override(key, limit, self._clock()))
        meta = Meta.parse(out.get("Attributes"))
        self._learn(key, meta)
        if meta.nwait > 0 and meta.count < limit:
            return tuple(self._fill(key, meta.limit or limit))
        return ()

    def clear_limit(self, key: str, code_limit: int | None = None) -> tuple[Grant, ...]:
        """Return ``key`` to the limit its callers pass; its counter is an ordinary one again
        (the idle clean-ups and the TTL remove it once nobody uses the key).

        The waiters are then served up to ``code_limit`` when given, else up to the limit
        the code last passed (what the counter records); the grants come back, to be woken.
        One read and one write (a few more if others write the key meanwhile).
        """
        validate_key(key)
        if code_limit is not None:
            validate_limit(code_limit)
        for attempt in range(MAX_ATTEMPTS):
            meta = self._read_meta(key)
            if meta.override is None:
                return ()
            latest = max((lease.expires_at for lease in meta.leases.values()), default=0.0)
            life = life_of(max(self._clock(), latest))
            try:
                out = self.io.update(**requests.clear_override(key, meta.version, life))
            except ConditionFailed:
                backoff(attempt)  # written meanwhile: its leases may have moved
                continue
            after = Meta.parse(out.get("Attributes"))
            self._learn(key, after)
            code = code_limit or after.limit
            if code and after.nwait > 0 and after.count < code:
                return tuple(self._fill(key, code))
            return ()
        raise ContentionError(f"clear_limit({key!r}) lost {MAX_ATTEMPTS} races")

    def read_limit(self, key: str) -> StoredLimit:
        """The override of ``key`` (and when it was set), and the limit the code last
        passed, from one strong read."""
        validate_key(key)
        meta = self._read_meta(key)
        return StoredLimit(meta.override, meta.override_at, meta.limit)
