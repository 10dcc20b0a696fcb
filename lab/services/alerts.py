"""What the dashboard must shout about on the release side: released batches put on hold by a
late failing result, batches waiting for QA, released batches with results still to come, and
products quarantined at a treatment site waiting for QA's decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload

from lab.extensions import db
from lab.models import Batch, Shipment
from lab.services.batch_summary import Listed, Listing, OpenDeviation, listed, summaries
from workflows.model import ProcessDefinition

#: How many batches past manufacturing are looked at, most recently changed first.
LIMIT = 200
#: The batches looked at.
PAST_MANUFACTURING = Listing(Batch.state.not_in(("scheduled", "in_process", "rejected")), Batch.updated_at, LIMIT)


@dataclass
class QualityAlerts:
    #: Batches released, then put on hold by a failing result: each with its open deviations.
    late_failures: list[tuple[Listed, tuple[OpenDeviation, ...]]] = field(default_factory=list)
    #: Batches whose results are in, waiting for a QA decision.
    awaiting_review: list[Listed] = field(default_factory=list)
    #: Released batches and the titles of the results still to come (sterility at day 14).
    results_to_come: list[tuple[Listed, tuple[str, ...]]] = field(default_factory=list)
    #: Shipments received with an excursion, a missing bag or a damaged shipper: QA decides.
    quarantined_shipments: list[Shipment] = field(default_factory=list)


def quality_alerts() -> QualityAlerts:
    """The release-side alerts over the batches past manufacturing, from their summaries
    (lab/services/batch_summary.py): a fixed number of queries."""
    alerts = QualityAlerts()
    batches = listed(PAST_MANUFACTURING)
    summary = summaries({b.id: b.mark for b in batches})
    review: dict[str, frozenset[str]] = {}  # process (by its file's digest) -> its states awaiting a QA decision
    for batch in batches:
        found = summary[batch.id]
        definition = found.definition
        rules = definition.release
        if rules is None:
            continue
        if found.held_from in rules.released_states:
            alerts.late_failures.append((batch, found.open_deviations))
        elif found.state in _review_states(review, definition):
            alerts.awaiting_review.append(batch)
        if found.tests_pending and found.state in rules.released_states:
            alerts.results_to_come.append((batch, found.tests_pending))
    alerts.quarantined_shipments = list(db.session.scalars(_quarantined_shipments()))
    return alerts


@lru_cache(maxsize=1)  # the same statement on every dashboard: it took longer to build than to run
def _quarantined_shipments() -> Select[tuple[Shipment]]:
    return (select(Shipment).where(Shipment.status == "quarantined")
            .options(selectinload(Shipment.site), selectinload(Shipment.receipt),
                     selectinload(Shipment.batch).selectinload(Batch.patient))
            .order_by(Shipment.id).limit(50))


def _review_states(known: dict[str, frozenset[str]], definition: ProcessDefinition) -> frozenset[str]:
    """The states in which a batch of ``definition`` waits for QA's decision to release it, worked
    out once per process in ``known``."""
    states = known.get(definition.sha256)
    if states is None:
        states = known[definition.sha256] = frozenset(
            state for decision in definition.decisions if decision.requires == "release" for state in decision.source)
    return states
