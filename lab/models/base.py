"""Mixins shared by models: what the audit trail records and what may never change."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The server's current time, aware UTC. Every stored time comes from here."""
    return datetime.now(UTC)


class Audited:
    """Marks a model whose inserts and updates the audit trail records field by field.

    Rows of audited models are never deleted (records must keep naming what they name).
    ``__audit_ignore__`` lists bookkeeping columns whose changes are not worth an entry;
    ``__audit_redact__`` lists columns whose values must not be copied into the trail.
    """

    __audit_ignore__: frozenset[str] = frozenset()
    __audit_redact__: frozenset[str] = frozenset()

    @property
    def audit_batch_id(self) -> int | None:
        """The batch this row belongs to, so a batch's trail can be listed."""
        return None


class AppendOnly(Audited):
    """An audited model whose rows, once written, are never updated either."""
