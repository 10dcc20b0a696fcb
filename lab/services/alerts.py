"""What the dashboard must shout about on the release side: released batches put on hold by a
late failing result, batches waiting for QA, released batches with results still to come, and
products quarantined at a treatment site waiting for QA's decision."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from lab.extensions import db
from lab.models import Batch, Deviation, Patient, QcResult, Shipment
from lab.services.progress import definition_for
from lab.services.release_status import as_current, current_results
from workflows.release import pending


@dataclass
class QualityAlerts:
    #: Batches released, then put on hold by a failing result: each with its open deviations.
    late_failures: list[tuple[Batch, list[Deviation]]] = field(default_factory=list)
    #: Batches whose results are in, waiting for a QA decision.
    awaiting_review: list[Batch] = field(default_factory=list)
    #: Released batches and the titles of the results still to come (sterility at day 14).
    results_to_come: list[tuple[Batch, list[str]]] = field(default_factory=list)
    #: Shipments received with an excursion, a missing bag or a damaged shipper: QA decides.
    quarantined_shipments: list[Shipment] = field(default_factory=list)


def quality_alerts() -> QualityAlerts:
    """The release-side alerts over the batches past manufacturing."""
    alerts = QualityAlerts()
    batches = db.session.scalars(
        select(Batch).where(Batch.state.not_in(("scheduled", "in_process", "rejected")))
        .options(selectinload(Batch.patient).selectinload(Patient.batches), selectinload(Batch.definition),
                 selectinload(Batch.deviations), selectinload(Batch.results).selectinload(QcResult.recorded_by))
        .order_by(Batch.updated_at.desc()).limit(200))
    for batch in batches:
        definition = definition_for(batch)
        rules = definition.release
        if rules is None:
            continue
        released = batch.state in rules.released_states
        if batch.held_from in rules.released_states:
            alerts.late_failures.append((batch, [d for d in batch.deviations if d.is_open]))
        elif any(batch.state in d.source and d.requires == "release" for d in definition.decisions):
            alerts.awaiting_review.append(batch)
        if released:
            results = {key: as_current(r) for key, r in current_results(batch).items()}
            to_come = [t.title for t in pending(definition, results)]
            if to_come:
                alerts.results_to_come.append((batch, to_come))
    alerts.quarantined_shipments = list(db.session.scalars(
        select(Shipment).where(Shipment.status == "quarantined")
        .options(selectinload(Shipment.site), selectinload(Shipment.receipt),
                 selectinload(Shipment.batch).selectinload(Batch.patient))
        .order_by(Shipment.id).limit(50)))
    return alerts
