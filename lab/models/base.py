"""Mixins shared by models: what the audit trail records and what may never change; and the
one clock every stored time is read from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from flask import has_request_context
from sqlalchemy import event, inspect
from sqlalchemy.orm import InstrumentedAttribute

from lab.exceptions import ImmutableRecordError


class SimulatedClock:
    """The demo's clock: seed-demo records its history at past times on it, so that every
    stored time of one action (the entry, its values, its signature, its audit entries)
    is the same instant. It only moves forward and never reaches past the real time."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self.set(start)

    @property
    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        """Move the clock to ``moment``; refused backwards (audit ids must follow time) or
        into the future (a simulated history ends before the real present)."""
        if moment < self._now:
            raise ValueError(f"The simulated clock cannot go back from {self._now} to {moment}.")
        if moment > datetime.now(UTC):
            raise ValueError(f"The simulated clock cannot run ahead of the real time ({moment}).")
        self._now = moment


#: Per thread and task, so a clock simulated by the command line never reaches a request served elsewhere.
_SIMULATED: ContextVar[SimulatedClock | None] = ContextVar("simulated_clock", default=None)


def simulated_now() -> datetime | None:
    """The simulated clock's time, or None when the real clock applies. A request always
    reads the real clock: nothing a client sends can move the time of what it writes."""
    clock = _SIMULATED.get()
    if clock is None or has_request_context():
        return None
    return clock.now


def utcnow() -> datetime:
    """The current time, aware UTC. Every stored time comes from here: the server's clock,
    or seed-demo's simulated clock while it records the demo's history."""
    return simulated_now() or datetime.now(UTC)


@contextmanager
def simulated_clock(start: datetime) -> Iterator[SimulatedClock]:
    """Run the block on a clock starting at ``start`` (a past time) that the block moves
    forward. For seed-demo only; refused while serving a request."""
    if has_request_context():
        raise RuntimeError("A request cannot simulate the clock.")
    if _SIMULATED.get() is not None:
        raise RuntimeError("The clock is already simulated.")
    clock = SimulatedClock(start)
    token = _SIMULATED.set(clock)
    try:
        yield clock
    finally:
        _SIMULATED.reset(token)


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


def fixed_once_stored(message: str, *columns: InstrumentedAttribute[Any]) -> None:
    """Refuse, with ``message``, any change to ``columns`` of a row already stored: what prints
    them, signs over them or keeps them per process (lab/services/record_marks.py) relies on them
    never changing. Set while the row is new, as its constructor does, they are free."""
    def refuse(target: object, value: object, old: object, initiator: object) -> None:
        if inspect(target).persistent:
            raise ImmutableRecordError(message)

    for column in columns:
        event.listen(column, "set", refuse)
