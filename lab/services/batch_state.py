"""Moving a batch between states: the definition's automatic transitions, and holds that
remember where the batch was held from so that lifting the hold returns it there."""

from __future__ import annotations

from datetime import datetime

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
