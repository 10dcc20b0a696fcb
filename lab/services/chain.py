"""Where a patient's product is, from collection to infusion: read only, a fixed number of
queries whatever the number of patients (tests/test_chain.py counts them).

The chain closes when every bag shipped for the patient's newest batch is infused,
returned, destroyed or kept unused; the vein-to-vein clock (DOMAIN §1.2) then ends at the
end of the last infusion.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from lab.extensions import db
from lab.models import Batch, Patient, StepEntry
from lab.models.clinic import Administration, Shipment, ShipmentBag
from lab.services.progress import definition_for
from lab.services.signatures import current_values
from workflows.engine import typed_value

#: The field that holds the end of collection: vein-to-vein time starts there.
COLLECTION_END = "collection_end"
#: What a bag's trail ends with after it was shipped.
BAG_ENDS = ("infused", "returned", "destroyed", "unused")
#: Stages in the order a product passes them (the dashboards sort by it).
STAGES = ("collection", "manufacture", "qc", "released", "in transit", "at site", "quarantined at site",
          "infused", "closed", "rejected", "on hold")
_BY_STATE = {"scheduled": "collection", "in_process": "manufacture", "qc_testing": "qc", "qa_review": "qc",
             "released": "released", "rejected": "rejected", "on_hold": "on hold", "shipped": "released"}
_BY_SHIPMENT = {"packed": "released", "in_transit": "in transit", "received": "at site",
                "quarantined": "quarantined at site", "rejected": "rejected"}


@dataclass(frozen=True)
class ChainPosition:
    patient: Patient
    batch: Batch | None  # the newest batch
    stage: str  # one of STAGES
    collection_end: datetime | None  # end of leukapheresis (the receipt step's collection_end value)
    infused_at: datetime | None  # end of the last infusion once the chain is closed
    closed: bool  # every shipped bag infused, returned, destroyed or unused
    vein_to_vein: timedelta | None  # collection_end -> infused_at (None while open)

    @property
    def stage_title(self) -> str:
        return self.stage[:1].upper() + self.stage[1:]


def position(patient: Patient) -> ChainPosition:
    return positions([patient])[0]


def positions(patients: Sequence[Patient]) -> list[ChainPosition]:
    """The position of each of ``patients`` (in their order), in a bounded number of queries."""
    if not patients:
        return []
    ids = [p.id for p in patients]
    batches = db.session.scalars(
        select(Batch).where(Batch.patient_id.in_(ids))
        .options(selectinload(Batch.definition), selectinload(Batch.entries).selectinload(StepEntry.values))
        .order_by(Batch.id)).all()
    newest: dict[int, Batch] = {}
    for batch in batches:
        newest[batch.patient_id] = batch  # ordered by id: the last one wins
    batch_ids = [b.id for b in newest.values()]
    shipments: dict[int, list[Shipment]] = defaultdict(list)
    infusions: dict[int, list[datetime]] = defaultdict(list)
    if batch_ids:
        for shipment in db.session.scalars(
                select(Shipment).where(Shipment.batch_id.in_(batch_ids))
                .options(selectinload(Shipment.bags).selectinload(ShipmentBag.container))
                .order_by(Shipment.id)):
            shipments[shipment.batch_id].append(shipment)
        for batch_id, end in db.session.execute(
                select(Administration.batch_id, Administration.infusion_end)
                .where(Administration.batch_id.in_(batch_ids))):
            infusions[batch_id].append(end)
    return [_position(p, newest.get(p.id), shipments, infusions) for p in patients]


def _position(patient: Patient, batch: Batch | None, shipments: dict[int, list[Shipment]],
              infusions: dict[int, list[datetime]]) -> ChainPosition:
    if batch is None:
        return ChainPosition(patient, None, "collection", None, None, False, None)
    collection_end = collection_end_of(batch)
    own = shipments.get(batch.id, [])
    shipped = [bag.container for s in own if s.status != "packed" for bag in s.bags]
    ends = infusions.get(batch.id, [])
    closed = bool(shipped) and all(c.status in BAG_ENDS for c in shipped)
    infused_at = max(ends) if closed and ends else None
    if closed:
        stage = "closed"
    elif ends:
        stage = "infused"
    elif batch.state in ("on_hold", "rejected"):
        stage = _BY_STATE[batch.state]
    elif own:
        stage = _BY_SHIPMENT.get(own[-1].status, "released")
    else:
        stage = _BY_STATE.get(batch.state, batch.state)
    vein_to_vein = infused_at - collection_end if infused_at is not None and collection_end is not None else None
    return ChainPosition(patient, batch, stage, collection_end, infused_at, closed, vein_to_vein)


def collection_end_of(batch: Batch) -> datetime | None:
    """The end of collection as recorded (its current value), or None while not recorded."""
    definition = None
    for entry in batch.entries:
        value = current_values(entry).get(COLLECTION_END)
        if value is None:
            continue
        definition = definition or definition_for(batch)
        stored = typed_value(definition.step(entry.step_key).field(COLLECTION_END), value.text)
        if isinstance(stored, datetime):
            return stored
    return None
