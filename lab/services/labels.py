"""Printing container labels: every print is on record, and a reprint needs a reason.

Builds the plain data labels/ renders (``LabelData``) from the stored batch; the PDF or
ZPL itself is made by labels/, which knows nothing of the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from flask import current_app

from lab import audit
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Batch, Container, LabelPrint, User, utcnow
from lab.permissions import require
from lab.services.progress import definition_for
from lab.services.signatures import current_values
from labels.data import Dose, LabelData, LabelDate, Stock
from workflows.formatting import decimal
from workflows.model import ContainerKind

MAX_REASON = 500
OUTPUTS = ("pdf", "sheet", "zpl")
#: The field of the entry that fills product bags holding their CAR+ viable T cells per mL.
CONCENTRATION = "car_t_per_ml"


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
    """What the label of ``container`` says, from the batch as recorded now and its container kind.

    Batches pinned to a definition without label descriptions or dates (version 1) print
    the product as the description (a tube its kind), the collection time, and the fill
    time on product bags.
    """
    batch = container.batch
    definition = definition_for(batch)
    kind = definition.container_kinds.get(container.kind)
    patient = batch.patient
    dates = label_dates(container, kind)
    is_product = not (kind and kind.description)  # the container holds the product itself
    numbered = container.count > 1 or any(d.what == "filled" for d in dates)
    return LabelData(
        code=container.code,
        kind=kind.title if kind else container.kind,
        stock=Stock(kind.stock) if kind else Stock.BAG,
        coi=patient.coi,
        batch_number=batch.batch_number,
        description=_description(kind, definition.product),
        printed_at=now.astimezone(UTC),
        patient_ref=patient.patient_ref,
        patient_initials=patient.initials,
        patient_dob=patient.date_of_birth,
        bag_number=container.number if numbered else None,
        bag_count=container.count if numbered else None,
        volume_ml=decimal(container.volume_ml) if container.volume_ml is not None else None,
        dose=bag_dose(container),
        dates=dates,
        storage=kind.storage or None if kind else None,
        facility_name=current_app.config["FACILITY_NAME"],
        facility_address=tuple(current_app.config["FACILITY_ADDRESS"]),
        regulatory_lines=kind.regulatory if kind else (),
        warnings=kind.warnings if kind else (),
        investigational=definition.investigational or None if is_product else None,
        reprint=reprint,
    )


def _description(kind: ContainerKind | None, product: str) -> str:
    """What the container holds: its kind's description; without one (version 1), the product on a
    bag and the kind's title on a tube (a sample of the product, which a tube has no room to name)."""
    if kind is None:
        return product
    if kind.description:
        return kind.description
    return kind.title if kind.stock == Stock.TUBE else product


def label_dates(container: Container, kind: ContainerKind | None) -> tuple[LabelDate, ...]:
    """The dates the container kind's label prints, in UTC as every printed document writes
    them (the record and the certificate too), so a bag and its papers read the same text.

    Collected: the end of the apheresis collection (the receipt); filled and sampled: the
    entry that made the container; expires: the fill plus the kind's shelf life.
    """
    wanted = kind.dates if kind and kind.dates else _v1_dates(container)
    made = container.created_entry.performed_at.astimezone(UTC)
    collected = _collected_at(container.batch)
    moments: dict[str, datetime | None] = {
        "collected": collected.astimezone(UTC) if collected else None,
        "filled": made,
        "sampled": made,
        "expires": made + timedelta(days=kind.shelf_life_days) if kind and kind.shelf_life_days else None,
    }
    return tuple(LabelDate(what, moment) for what in wanted if (moment := moments.get(what)) is not None)


def _v1_dates(container: Container) -> tuple[str, ...]:
    """What labels printed before definitions said it: the collection, and the fill on product bags."""
    return ("collected", "filled") if container.kind == "product_bag" else ("collected",)


def _collected_at(batch: Batch) -> datetime | None:
    """When the collection of the starting material ended, from the receipt."""
    receipt = next((e for e in batch.entries if e.step_key == "receipt"), None)
    value = current_values(receipt).get("collection_end") if receipt else None
    return datetime.fromisoformat(value.text) if value else None


def bag_dose(container: Container) -> Dose | None:
    """The CAR+ viable T cells in the bag: the concentration its entry recorded times its volume.

    None for a container whose entry records no CAR+ T-cell concentration (not a product
    bag). The total counts every container of the same kind the entry made.
    """
    concentration = current_values(container.created_entry).get(CONCENTRATION)
    weight = container.batch.patient.weight_kg
    if concentration is None or container.volume_ml is None or not weight:
        return None
    per_ml = decimal(concentration.text)
    siblings = [c for c in container.batch.containers
                if c.created_entry_id == container.created_entry_id and c.kind == container.kind]
    total = sum((per_ml * decimal(c.volume_ml) for c in siblings if c.volume_ml is not None), Decimal(0))
    return Dose(per_ml * decimal(container.volume_ml), decimal(weight), total if len(siblings) > 1 else None)
