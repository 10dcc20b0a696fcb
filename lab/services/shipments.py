"""Shipping a released batch's product bags to a treatment site (DOMAIN §5, 21 CFR 1271.290(d)-(f)).

A technician packs every product bag of the batch into a dry shipper, scanning each bag (a
bag of another patient or batch is a custody mismatch: refused, its scan kept), the shipper
and its temperature logger, for one consignee site. A second technician or supervisor
verifies the packing with a signature: the shipment is then in transit, its bags shipped and
the batch ``shipped``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from sqlalchemy import select

from lab import audit
from lab.exceptions import InvalidInput, NotAllowed
from lab.extensions import db
from lab.models import Batch, Container, CustodyEvent, Shipment, ShipmentBag, Site, User, utcnow
from lab.permissions import require
from lab.services.batch_state import move, one_writer, touch
from lab.services.containers import CustodyMismatch, Scan, canonical_container
from lab.services.progress import definition_for
from lab.services.sequences import next_value
from lab.services.signatures import Credentials, reauthenticate, register_signed, sign
from lab.services.sites import active_sites
from lab.services.steps import lock_batch
from workflows.engine import parse_datetime

register_signed(Shipment)

#: The kind of container that travels to the patient.
PRODUCT_KIND = "product_bag"
PACK_EVENT = "packed into shipper"
MAX_CODE = 64
MAX_COURIER = 128
#: How far a departure may lie before packing (a late entry) or after it (a planned pick-up).
DEPARTURE_BEFORE = timedelta(days=1)
DEPARTURE_AFTER = timedelta(days=7)



@dataclass(frozen=True)
class PackInput:
    bag_codes: list[str]          # scanned codes (bare code, label payload or URL ending in one), one per bag
    shipper_code: str             # the dry shipper's code as scanned
    logger_code: str              # its temperature logger's code as scanned
    site_id: int                  # consignee (an active Site)
    departed_at: datetime         # aware
    courier: str


# --- helpers shared with site_receipt ----------------------------------------------------------

def parse_moment(text: str, field: str, label: str, zone: tzinfo) -> datetime:
    """A date and time typed on a form (``2026-11-25 08:30`` or a datetime-local value), in
    ``zone`` (the lab's) unless it carries its own offset; InvalidInput on ``field`` otherwise."""
    text = (text or "").strip()
    try:
        return parse_datetime(text, zone)
    except ValueError:
        raise InvalidInput(f"{label}: enter a date and time.",
                           {field: f"Enter a date and time such as 2026-11-25 08:30, not {text[:40]!r}."
                            if text else f"Enter the {label.lower()}."}) from None


def split_codes(text: str) -> list[str]:
    """The codes of a scan box, one per line (a handheld scanner types each and Enter)."""
    return [line.strip() for line in re.split(r"[\r\n]+", text or "") if line.strip()]


def distinct_codes(codes: list[str]) -> tuple[list[str], list[str]]:
    """The container codes scanned (payloads, bare codes or URLs ending in one), each once in the
    order scanned; and, in words, the scans that are not container codes or repeat one."""
    found: list[str] = []
    problems: list[str] = []
    for raw in codes:
        code = canonical_container(raw)
        if not code:
            problems.append(f"{raw[:40]!r} is not a container code: scan the bag's label again.")
        elif code in found:
            problems.append(f"{code} was scanned twice.")
        else:
            found.append(code)
    return found, problems


def clean_line(text: str, field: str, label: str, errors: dict[str, str], *, limit: int) -> str:
    """One line of text as typed or scanned: required, printable, at most ``limit`` characters."""
    value = " ".join((text or "").split())
    if not value:
        errors[field] = f"Enter the {label}."
    elif any(unicodedata.category(c).startswith("C") for c in value):
        errors[field] = f"The {label} holds a control character (from a scanner or a paste): retype it."
    elif len(value) > limit:
        errors[field] = f"The {label} is limited to {limit} characters; this has {len(value)}."
    return value


def _container(code: str) -> Container | None:
    return db.session.scalar(select(Container).where(Container.code == code))


def packed_in(container: Container) -> Shipment | None:
    """The shipment ``container`` was packed into, if any."""
    return db.session.scalar(select(Shipment).join(ShipmentBag).where(ShipmentBag.container_id == container.id)
                             .order_by(Shipment.id.desc()).limit(1))


def product_bags(batch: Batch) -> list[Container]:
    return [c for c in batch.containers if c.kind == PRODUCT_KIND]


def consignee_choices(batch: Batch) -> list[Site]:
    """The sites ``batch`` may be shipped to: the patient's treating site once set, else any active one."""
    sites = active_sites()
    treating = batch.patient.treating_site_id
    return [s for s in sites if s.id == treating] if treating is not None else sites


def _next_number(now: datetime) -> str:
    return f"SHP-{now.year}-{next_value(f'SHP-{now.year % 100:02d}'):04d}"


def lock_shipment(shipment: Shipment) -> None:
    """Hold the shipment's row until the transaction ends (and read it afresh): two people acting
    on one shipment at once go one after the other, and the second sees what the first did."""
    db.session.execute(select(Shipment).where(Shipment.id == shipment.id).with_for_update()
                       .execution_options(populate_existing=True))


def release_problem(batch: Batch) -> str:
    """Why nothing of ``batch`` may be packed now, or ''."""
    if batch.state == "released":
        return ""
    if batch.state == "on_hold":
        return (f"Batch {batch.batch_number} is ON HOLD: its bags are quarantined and may not be shipped "
                "until QA lifts the hold.")
    if batch.state == "shipped":
        return f"Batch {batch.batch_number} has already been shipped."
    return f"Batch {batch.batch_number} is not released (it is {batch.state.replace('_', ' ')}): it may not be shipped."


# --- packing -----------------------------------------------------------------------------------

def pack_shipment(batch: Batch, data: PackInput, *, actor: User, now: datetime | None = None) -> Shipment:
    """Pack every product bag of released ``batch`` into one dry shipper for one site.

    Raises CustodyMismatch for a scanned code of a container that is not this batch's (the caller
    rolls back and keeps the scans with ``record_mismatches``), InvalidInput for anything else.
    """
    require(actor, "pack_shipment", "pack a shipment")
    now = now or utcnow()
    lock_batch(batch, None)
    problem = release_problem(batch)
    if problem:
        raise InvalidInput(problem, {"bag_codes": problem})
    errors: dict[str, str] = {}
    shipper = clean_line(data.shipper_code, "shipper_code", "dry shipper's code", errors, limit=MAX_CODE)
    logger = clean_line(data.logger_code, "logger_code", "temperature logger's code", errors, limit=MAX_CODE)
    courier = clean_line(data.courier, "courier", "courier", errors, limit=MAX_COURIER)
    if shipper and logger and shipper.casefold() == logger.casefold() and "logger_code" not in errors:
        errors["logger_code"] = "The logger's code is the shipper's: scan the logger's own label."
    site = db.session.get(Site, data.site_id) if data.site_id else None
    treating = batch.patient.treating_site_id
    if site is None or not site.active:
        errors["site_id"] = "Choose an active treatment site."
    elif treating is not None and site.id != treating:
        errors["site_id"] = (f"Patient {batch.patient.coi} is treated at "
                             f"{batch.patient.treating_site.name if batch.patient.treating_site else 'another site'}: "
                             "the product may go only there.")
    departed = data.departed_at
    if departed.tzinfo is None:
        errors["departed_at"] = "Give the departure time with its time zone."
    elif departed < now - DEPARTURE_BEFORE:
        errors["departed_at"] = "The departure is more than a day before packing: enter when the shipper leaves."
    elif departed > now + DEPARTURE_AFTER:
        errors["departed_at"] = "The departure is more than 7 days ahead: pack when the courier is booked."

    bags, scans, bag_errors = _scanned_bags(batch, data.bag_codes)
    if scans:
        raise CustodyMismatch(scans[0].message if len(scans) == 1 else
                              f"MISMATCH: {len(scans)} scanned bags are not this batch's. " + " ".join(
                                  s.message for s in scans), scans)
    if bag_errors:
        errors["bag_codes"] = " ".join(bag_errors)
    if errors:
        raise InvalidInput("Nothing was packed: correct the fields marked.", errors)

    number = _next_number(now)
    to_location = f"Dry shipper {shipper} ({number})"[:255]
    with one_writer(batch.id), audit.action("shipment.pack", actor=actor):
        shipment = Shipment(number=number, batch=batch, site=site, status="packed", shipper_code=shipper,
                            logger_code=logger, courier=courier, departed_at=departed, packed_at=now,
                            packed_by_id=actor.id)
        limits = definition_for(batch).shipping_temperature
        if limits is not None:
            shipment.temp_min_c = limits.min
            shipment.temp_max_c = limits.max
        db.session.add(shipment)
        for container, code in bags:
            db.session.add(ShipmentBag(shipment=shipment, container=container, batch_id=batch.id))
            db.session.add(CustodyEvent(batch_id=batch.id, container=container, scanned_code=code, event=PACK_EVENT,
                                        from_location=container.location, to_location=to_location, matched=True,
                                        occurred_at=now, actor_id=actor.id))
            container.location = to_location
        if treating is None:
            batch.patient.treating_site_id = site.id  # type: ignore[union-attr]
        touch(batch, actor, now)
    return shipment


def _scanned_bags(batch: Batch, codes: list[str]) -> tuple[list[tuple[Container, str]], list[Scan], list[str]]:
    """The batch's product bags scanned (each with its code), the scans of containers that are
    not this batch's (mismatches), and what else is wrong with the scans, in words."""
    found: list[tuple[Container, str]] = []
    scans: list[Scan] = []
    distinct, problems = distinct_codes(codes)
    for code in distinct:
        container = _container(code)
        if container is None or container.batch_id != batch.id:
            if container is None:
                named = f"{code}, which is not registered in this lab"
            else:
                other = container.batch
                state = "" if other.state in ("released", "shipped") else f", not released ({other.state})"
                named = f"{code} of batch {other.batch_number} (patient {other.patient.coi}{state})"
            message = (f"MISMATCH: you scanned {named}; this shipment is for batch {batch.batch_number} "
                       f"(patient {batch.patient.coi}). Nothing was packed: take that bag out.")
            scans.append(Scan(code, container.id if container else None, PACK_EVENT, False, message))
            continue
        if container.kind != PRODUCT_KIND:
            problems.append(f"{code} is not a product bag ({container.kind.replace('_', ' ')}): only product bags "
                            "are shipped.")
            continue
        shipment = packed_in(container)
        if shipment is not None:
            problems.append(f"{code} is already packed into {shipment.number}.")
            continue
        if container.status not in ("in use", "stored"):
            problems.append(f"{code} is {container.status}: it cannot be shipped.")
            continue
        found.append((container, code))
    scanned = {c.id for c, _ in found}
    packed = set(db.session.scalars(select(ShipmentBag.container_id).where(ShipmentBag.batch_id == batch.id)))
    missing = [c.code for c in product_bags(batch)
               if c.id not in scanned and c.id not in packed and c.status in ("in use", "stored") and c.code not in distinct]
    if missing:
        problems.append(f"Every product bag of the batch travels together: scan {', '.join(missing)} too.")
    if not codes:
        problems.append("Scan every product bag of the batch, one per line.")
    return found, scans, problems


# --- verification ------------------------------------------------------------------------------

def verify_packing(shipment: Shipment, *, actor: User, credentials: Credentials,
                   now: datetime | None = None) -> Shipment:
    """A second person signs the packing "verified": the shipment leaves (in transit), its bags
    are shipped and the batch becomes ``shipped``."""
    require(actor, "verify_packing", "verify the packing of a shipment")
    now = now or utcnow()
    lock_batch(shipment.batch, None)
    lock_shipment(shipment)
    if shipment.status != "packed":
        raise InvalidInput(f"Shipment {shipment.number} is {shipment.status.replace('_', ' ')}: its packing "
                           "was already verified.")
    if shipment.packed_by_id == actor.id:
        raise NotAllowed(f"You packed shipment {shipment.number}: a second person must verify it.")
    batch = shipment.batch
    if batch.state != "released":
        raise InvalidInput(release_problem(batch) or f"Batch {batch.batch_number} is not released.")
    reauthenticate(actor, credentials, meaning="verified", subject=f"packing of shipment {shipment.number}",
                   batch_id=batch.id)
    with one_writer(batch.id), audit.action("shipment.verify", actor=actor):
        shipment.status = "in_transit"
        shipment.verified_at = now
        shipment.verified_by_id = actor.id
        for bag in shipment.bags:
            bag.container.status = "shipped"
        definition = definition_for(batch)
        if "shipped" in definition.states:
            move(batch, definition, "shipped")
        touch(batch, actor, now)
        db.session.flush()
        sign(shipment, actor=actor, meaning="verified", now=now)
    return shipment


# --- reading -----------------------------------------------------------------------------------

def find_shipment(number: str) -> Shipment | None:
    return db.session.scalar(select(Shipment).where(Shipment.number == number.strip().upper()))


def shipments_of_batch(batch: Batch) -> list[Shipment]:
    return list(db.session.scalars(select(Shipment).where(Shipment.batch_id == batch.id).order_by(Shipment.id)))


def shipments(site_id: int | None = None, *, all_sites: bool = True) -> list[Shipment]:
    """Every shipment, newest first; only ``site_id``'s unless ``all_sites``."""
    query = select(Shipment).order_by(Shipment.id.desc())
    if not all_sites:
        query = query.where(Shipment.site_id == site_id)
    return list(db.session.scalars(query))
