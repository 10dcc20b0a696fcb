"""Printing container labels: every print is on record, and a reprint needs a reason.

Builds the plain data labels/ renders (``LabelData``) from the stored batch; the PDF or
ZPL itself is made by labels/, which knows nothing of the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from flask import current_app

from lab import audit
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Batch, Container, LabelPrint, User, utcnow
from lab.permissions import require
from lab.services.progress import definition_for
from lab.services.signatures import current_values
from labels.data import LabelData, Stock

MAX_REASON = 500
OUTPUTS = ("pdf", "sheet", "zpl")


def print_labels(containers: Sequence[Container], *, actor: User, output: str, reason: str = "",
                 now: datetime | None = None) -> list[LabelData]:
    """Record one print of each container's label and return what to print on it.

    A container printed before is a reprint: it needs ``reason``, and its label says
    REPRINT. Raises InvalidInput (no reason, reason too long) or NotAllowed (role).
    """
    require(actor, "print_labels", "print labels")
    if output not in OUTPUTS:
        raise ValueError(f"unknown label output {output!r}")
    now = now or utcnow()
    reason = " ".join(reason.split())
    reprints = [c.code for c in containers if c.prints]
    if reprints and not reason:
        raise InvalidInput(
            f"{len(reprints)} of these labels were printed before ({', '.join(reprints)}): a reprint needs a reason.",
            {"reason": "Say why the label is printed again (damaged, smudged, lost...)."},
        )
    if len(reason) > MAX_REASON:
        raise InvalidInput("Reason too long.", {"reason": f"Use at most {MAX_REASON} characters."})
    labels = []
    with audit.action("label.print", actor=actor, reason=reason or None):
        for container in containers:
            reprint = bool(container.prints)
            labels.append(label_data(container, reprint=reprint, now=now))
            db.session.add(LabelPrint(container=container, batch_id=container.batch_id, printed_at=now,
                                      printed_by_id=actor.id, is_reprint=reprint,
                                      reason=reason if reprint else None, output=output))
    return labels


def label_data(container: Container, *, reprint: bool, now: datetime) -> LabelData:
    """What the label of ``container`` says, from the batch as recorded now."""
    batch = container.batch
    zone = ZoneInfo(current_app.config["TIMEZONE"])
    definition = definition_for(batch)
    kind = definition.container_kinds.get(container.kind)
    patient = batch.patient
    return LabelData(
        code=container.code,
        kind=kind.title if kind else container.kind,
        stock=Stock(kind.stock) if kind else Stock.BAG,
        coi=patient.coi,
        batch_number=batch.batch_number,
        product=definition.product,
        printed_at=now.astimezone(zone),
        patient_ref=patient.patient_ref,
        patient_initials=patient.initials,
        patient_dob=patient.date_of_birth,
        bag_number=container.number if container.count > 1 else None,
        bag_count=container.count if container.count > 1 else None,
        volume_ml=Decimal(f"{container.volume_ml:.1f}") if container.volume_ml is not None else None,
        collected_on=_collected_on(batch, zone),
        filled_on=container.created_at.astimezone(zone).date() if container.kind == "product_bag" else None,
        storage=kind.storage or None if kind else None,
        facility_name=current_app.config["FACILITY_NAME"],
        facility_address=tuple(current_app.config["FACILITY_ADDRESS"]),
        regulatory_lines=kind.regulatory if kind else (),
        reprint=reprint,
    )


def _collected_on(batch: Batch, zone: ZoneInfo) -> date | None:
    """The day (in the lab's zone) the starting material was collected, from the receipt."""
    receipt = next((e for e in batch.entries if e.step_key == "receipt"), None)
    value = current_values(receipt).get("collection_end") if receipt else None
    return datetime.fromisoformat(value.text).astimezone(zone).date() if value else None
