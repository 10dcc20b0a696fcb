"""Moving a batch between states: the definition's automatic transitions, and holds that
remember where the batch was held from so that lifting the hold returns it there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from lab.exceptions import ConcurrentChangeError
from lab.extensions import db
from lab.models import Batch, User
from lab.services.progress import batch_progress
from lab.services.release_status import as_current, current_results
from workflows.engine import next_state
from workflows.model import ProcessDefinition
from workflows.release import results_in


def automatic_state(batch: Batch, definition: ProcessDefinition, start: str | None = None) -> str:
    """The state the automatic transitions carry ``batch`` to from ``start`` (default: its state)."""
    results = {key: as_current(result) for key, result in current_results(batch).items()}
    return next_state(definition, start or batch.state, batch_progress(batch, definition),
                      results_in=results_in(definition, results))


def move(batch: Batch, definition: ProcessDefinition, state: str) -> bool:
    """Put ``batch`` in ``state``; True when that is a change. Entering a hold state (one a
    resuming decision leaves) remembers the state held from; leaving it forgets."""
    if state == batch.state:
        return False
    holds = {source for d in definition.decisions if d.target is None for source in d.source}
    if state in holds and batch.state not in holds:
        batch.held_from = batch.state
    elif batch.state in holds and state not in holds:
        batch.held_from = None
    batch.state = state
    return True


def touch(batch: Batch, actor: User, now: datetime) -> None:
    """Mark the batch changed by ``actor`` (this bumps its version: open forms must reload)."""
    batch.updated_at = now
    batch.updated_by_id = actor.id


@contextmanager
def one_writer(batch_id: int) -> Iterator[None]:
    """Around a write that changes a batch: losing a race for its row (its version changed, or a
    unique row was written by someone else first; SQLite has no row lock to wait on) rolls back
    and raises ConcurrentChangeError naming who changed the batch, never a server error."""
    try:
        yield
    except (StaleDataError, IntegrityError):
        db.session.rollback()
        batch = db.session.get(Batch, batch_id)
        assert batch is not None
        raise ConcurrentChangeError(batch.updated_by.full_name, batch.updated_at, batch.updated_by_id) from None
