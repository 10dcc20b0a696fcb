"""What a clinician's dashboard shows for their site: shipments on their way, products in the
site's storage (quarantine shown), infusions due, and notices to acknowledge.

Read only, a fixed number of queries whatever the number of shipments and bags
(tests/test_clinic_dashboard.py counts them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import joinedload, selectinload

from lab.extensions import db
from lab.models import (
    Administration,
    BagDisposal,
    Batch,
    BedsideCheck,
    Container,
    Patient,
    Shipment,
    ShipmentBag,
    Site,
    SiteNotice,
    User,
    utcnow,
)
from lab.services.lab_alerts import Listed, first_rows

#: Shipments on their way listed (the oldest first), with the number of all.
IN_TRANSIT_LIMIT = 20
#: A bag received at the site and still there (not infused, returned or destroyed).
AT_SITE = "at site"
#: Shipments whose bags may be in the site's storage: accepted, quarantined, or rejected (until disposed of).
STORED_STATUSES = ("received", "quarantined", "rejected")


@dataclass(frozen=True)
class StoredBag:
    container: Container
    shipment: Shipment
    patient: Patient
    checked: bool  # a bedside check was recorded for it (not yet infused)

    @property
    def usable(self) -> bool:
        return self.shipment.status == "received"

    @property
    def state(self) -> str:
        """Why the bag may not be used, in capitals ("" when it may)."""
        if self.shipment.status == "quarantined":
            reason = self.shipment.receipt.quarantine_reason if self.shipment.receipt else ""
            return "QUARANTINED at the site until QA decides" + (f": {reason}" if reason else "")
        if self.shipment.status == "rejected":
            return "REJECTED by QA: do not infuse; return or destroy it"
        return ""


@dataclass(frozen=True)
class DueInfusion:
    """One patient's usable bags at the site."""

    patient: Patient
    batch: Batch
    bags: list[StoredBag]


@dataclass(frozen=True)
class ClinicDashboard:
    site: Site | None
    now: datetime
    in_transit: Listed[Shipment] = field(default_factory=Listed)  # the first IN_TRANSIT_LIMIT, soonest departed
    in_storage: list[StoredBag] = field(default_factory=list)
    due: list[DueInfusion] = field(default_factory=list)
    notices: list[SiteNotice] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return sum(1 for bag in self.in_storage if bag.shipment.status == "quarantined")


def clinic_dashboard(actor: User, now: datetime | None = None) -> ClinicDashboard:
    """The dashboard of ``actor``'s site (empty when they belong to none)."""
    now = now or utcnow()
    site = db.session.get(Site, actor.site_id) if actor.site_id is not None else None
    if site is None:
        return ClinicDashboard(site=None, now=now)
    in_transit = first_rows(
        select(Shipment).where(Shipment.site_id == site.id, Shipment.status == "in_transit")
        .options(joinedload(Shipment.batch).joinedload(Batch.patient), selectinload(Shipment.bags))
        .order_by(Shipment.departed_at, Shipment.id), IN_TRANSIT_LIMIT)
    in_storage = _stored_bags(site)
    return ClinicDashboard(site=site, now=now, in_transit=in_transit, in_storage=in_storage,
                           due=_due(in_storage), notices=_open_notices(site))


def _stored_bags(site: Site) -> list[StoredBag]:
    """Bags of the site's received, quarantined or rejected shipments still at the site.

    Read from the containers at a site, any site (a few, by ``ix_containers_status``), not from
    this site's shipments, which grow with every patient it ever treated: their ids first, so that
    the planner starts from them."""
    at_site = db.session.scalars(select(Container.id).where(Container.status == AT_SITE)).all()
    if not at_site:
        return []
    infused = exists().where(Administration.container_id == Container.id)
    disposed = exists().where(BagDisposal.container_id == Container.id)
    checked = exists().where(BedsideCheck.container_id == Container.id)
    rows = db.session.execute(
        select(Container, Shipment, checked.label("checked"))
        .join(ShipmentBag, ShipmentBag.container_id == Container.id)
        .join(Shipment, Shipment.id == ShipmentBag.shipment_id)
        .where(Container.id.in_(at_site), Shipment.site_id == site.id, Shipment.status.in_(STORED_STATUSES),
               ~infused, ~disposed)
        .options(joinedload(Shipment.batch).joinedload(Batch.patient), joinedload(Shipment.receipt))
        .order_by(Shipment.departed_at, Shipment.id, Container.code)).all()
    return [StoredBag(container, shipment, shipment.batch.patient, bool(was_checked))
            for container, shipment, was_checked in rows]


def _due(stored: list[StoredBag]) -> list[DueInfusion]:
    """Usable bags grouped by patient and batch, in the order of their shipment."""
    groups: dict[int, DueInfusion] = {}
    for bag in stored:
        if bag.usable:
            batch = bag.shipment.batch
            groups.setdefault(batch.id, DueInfusion(bag.patient, batch, [])).bags.append(bag)
    return list(groups.values())


def _open_notices(site: Site) -> list[SiteNotice]:
    return list(db.session.scalars(
        select(SiteNotice).where(SiteNotice.site_id == site.id, SiteNotice.acknowledged_at.is_(None))
        .options(joinedload(SiteNotice.batch).joinedload(Batch.patient))
        .order_by(SiteNotice.created_at, SiteNotice.id)))
