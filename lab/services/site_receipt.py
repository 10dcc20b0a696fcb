"""Receipt of a shipment at its treatment site, and QA's decision on a product quarantined there
(DOMAIN §5: the site reads the logger and checks the shipper; an excursion quarantines the
product pending the manufacturer's QA decision).

A clinician of the consignee site scans the shipper and every bag (a bag of another shipment
or patient is a custody mismatch: refused, its scan kept), enters the logger's minimum and
maximum, attaches its file, says whether the shipper arrived intact, when, and where the bags
are stored, and signs "received". A temperature outside the shipment's range, a packed bag
not there or a broken shipper opens a deviation and quarantines the shipment at the site
until a QA officer releases it for use or rejects it, signing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from sqlalchemy import select

from lab import audit
from lab.exceptions import InvalidInput, NotAllowed
from lab.extensions import db
from lab.models import (
    Attachment,
    Container,
    CustodyEvent,
    Shipment,
    ShipmentBag,
    ShipmentDecision,
    ShipmentReceipt,
    User,
    utcnow,
)
from lab.permissions import require
from lab.services import attachments
from lab.services.containers import CustodyMismatch, Scan
from lab.services.deviations import open_deviation
from lab.services.shipments import clean_line, distinct_codes, lock_shipment, packed_in
from lab.services.signatures import Credentials, reauthenticate, register_signed, sign
from lab.services.site_scope import require_shipment
from workflows.formatting import format_datetime, format_number

register_signed(ShipmentReceipt)
register_signed(ShipmentDecision)

RECEIVE_EVENT = "received at site"
MAX_STORAGE = 255
MAX_TEXT = 2000
#: Readings a dry shipper's logger can give (°C); anything outside is a typing error.
LOGGER_RANGE = (-273.0, 100.0)
#: QA's decisions on a quarantined shipment: the shipment's status and the signature's meaning.
DECISIONS = {"release": ("received", "released for use"), "reject": ("rejected", "rejected")}

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


@dataclass(frozen=True)
class ReceiptInput:
    shipper_scanned: str
    bag_codes: list[str]
    logger_min_c: str             # as typed; not a number -> InvalidInput on that field
    logger_max_c: str
    shipper_intact: bool
    arrived_at: datetime
    storage: str
    comment: str = ""


def store_logger_file(stream: IO[bytes], filename: str | None, *, actor: User,
                      now: datetime | None = None) -> Attachment:
    """Keep the logger's file (its print-out, a PDF or an image) for a receipt; InvalidInput
    on ``logger_file`` for an empty, too large or unreadable file."""
    now = now or utcnow()
    with audit.action("shipment.logger_file", actor=actor):
        return attachments.store(stream, filename, field="logger_file", actor=actor, now=now)


def _temperature(text: str, field: str, label: str, errors: dict[str, str]) -> float | None:
    typed = (text or "").strip().replace("\u2212", "-").removesuffix("°C").removesuffix("C").strip()
    if not typed:
        errors[field] = f"Enter the {label} the logger recorded, in °C."
        return None
    if not _NUMBER.fullmatch(typed):
        errors[field] = f"{label.capitalize()}: enter a number of °C such as -178, not {text.strip()[:30]!r}."
        return None
    value = float(typed)
    if not math.isfinite(value) or not LOGGER_RANGE[0] <= value <= LOGGER_RANGE[1]:
        errors[field] = (f"{label.capitalize()} must be between {LOGGER_RANGE[0]:g} and {LOGGER_RANGE[1]:g} °C; "
                         "check the logger's reading.")
        return None
    return value


def receive_shipment(shipment: Shipment, data: ReceiptInput, *, logger_file: Attachment | None, actor: User,
                     credentials: Credentials, now: datetime | None = None) -> ShipmentReceipt:
    """A clinician of the consignee site receives ``shipment`` (in transit), signing "received".

    Raises CustodyMismatch for a scanned bag that is not one of this shipment's (the caller rolls
    back and keeps the scans with ``record_mismatches``), InvalidInput for anything else refused.
    """
    require(actor, "receive_shipment", "receive a shipment")
    require_shipment(actor, shipment)
    now = now or utcnow()
    lock_shipment(shipment)
    if shipment.status == "packed":
        raise InvalidInput(f"Shipment {shipment.number} has not been verified yet: it cannot have left the lab. "
                           "Call the lab before you use anything in this shipper.")
    if shipment.status != "in_transit":
        raise InvalidInput(f"Shipment {shipment.number} was already received "
                           f"({shipment.status.replace('_', ' ')}).")
    errors: dict[str, str] = {}
    shipper = " ".join((data.shipper_scanned or "").split())
    if not shipper:
        errors["shipper_scanned"] = "Scan the dry shipper's label."
    elif shipper.casefold() != shipment.shipper_code.casefold():
        errors["shipper_scanned"] = (f"You scanned shipper {shipper[:64]!r}; shipment {shipment.number} travels in "
                                     f"{shipment.shipper_code}. Check the shipper before you open it.")
    low = _temperature(data.logger_min_c, "logger_min_c", "lowest temperature", errors)
    high = _temperature(data.logger_max_c, "logger_max_c", "highest temperature", errors)
    if low is not None and high is not None and low > high:
        errors["logger_max_c"] = "The highest temperature is below the lowest: check the two readings."
    arrived = data.arrived_at
    if arrived.tzinfo is None:
        errors["arrived_at"] = "Give the arrival time with its time zone."
    elif arrived < shipment.departed_at:
        errors["arrived_at"] = (f"The arrival is before the shipper left the lab "
                                f"({format_datetime(shipment.departed_at)}).")
    elif arrived > now:
        errors["arrived_at"] = "The arrival is in the future: enter when the shipper arrived."
    storage = clean_line(data.storage, "storage", "storage at the site", errors, limit=MAX_STORAGE)
    comment = (data.comment or "").strip()
    if len(comment) > MAX_TEXT:
        errors["comment"] = f"Use at most {MAX_TEXT} characters."

    packed = {bag.container.code: bag.container for bag in shipment.bags}
    received, scans, problems = _scanned(shipment, packed, data.bag_codes)
    if scans:
        raise CustodyMismatch(" ".join(s.message for s in scans), scans)
    if not data.bag_codes and not comment:
        problems.append("Scan every bag in the shipper, one per line. If the shipper holds none, say so in the "
                        "comment: the shipment is then quarantined with its bags missing.")
    if problems:
        errors["bag_codes"] = " ".join(problems)
    if errors:
        raise InvalidInput("Nothing was received: correct the fields marked.", errors)
    assert low is not None and high is not None

    missing = [code for code in packed if code not in {c.code for c, _ in received}]
    reasons = []
    if (shipment.temp_min_c is not None and low < shipment.temp_min_c) or (
            shipment.temp_max_c is not None and high > shipment.temp_max_c):
        reasons.append(f"temperature excursion: the logger read {format_number(low)} to {format_number(high)} °C, "
                       f"outside {_range_words(shipment)}")
    if missing:
        reasons.append(f"bag{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}")
    if not data.shipper_intact:
        reasons.append("the shipper arrived damaged or opened")
    reason = "; ".join(reasons)

    reauthenticate(actor, credentials, meaning="received", subject=f"receipt of shipment {shipment.number}",
                   batch_id=shipment.batch_id)
    with audit.action("shipment.receive", actor=actor, reason=reason or None):
        deviation = None
        if reason:
            source = "limit" if reasons[0].startswith("temperature") and len(reasons) == 1 else "custody"
            deviation = open_deviation(
                shipment.batch, source=source, actor=actor, now=now,
                title=f"Shipment {shipment.number} quarantined at {shipment.site.code}: {reason}",
                description=(f"Received at {shipment.site.name} on {format_datetime(arrived)} by {actor.full_name}. "
                             f"{reason[0].upper()}{reason[1:]}. The product stays in quarantine at the site until "
                             "QA releases it for use or rejects it."))
        receipt = ShipmentReceipt(shipment=shipment, batch_id=shipment.batch_id, arrived_at=arrived,
                                  logger_min_c=low, logger_max_c=high, logger_file=logger_file,
                                  shipper_intact=bool(data.shipper_intact), storage=storage,
                                  scanned_codes=[code for _, code in received], missing_codes=missing,
                                  comment=comment, quarantine_reason=reason, deviation=deviation, received_at=now,
                                  received_by_id=actor.id)
        db.session.add(receipt)
        to_location = f"{shipment.site.code}: {storage}"[:255]
        for container, code in received:
            db.session.add(CustodyEvent(batch_id=shipment.batch_id, container=container, scanned_code=code,
                                        event=RECEIVE_EVENT, from_location=container.location,
                                        to_location=to_location, matched=True, occurred_at=now, actor_id=actor.id))
            container.location = to_location
            container.status = "at site"
        shipment.status = "quarantined" if reason else "received"
        db.session.flush()
        sign(receipt, actor=actor, meaning="received", now=now)
    return receipt


def _range_words(shipment: Shipment) -> str:
    low, high = shipment.temp_min_c, shipment.temp_max_c
    if low is not None and high is not None:
        return f"{format_number(low)} to {format_number(high)} °C"
    if low is not None:
        return f"at least {format_number(low)} °C"
    return f"at most {format_number(high)} °C"


def shipping_range(shipment: Shipment) -> str:
    """``Ship at -196 to -150 °C``, or '' when the process sets no range."""
    if shipment.temp_min_c is None and shipment.temp_max_c is None:
        return ""
    return f"Ship at {_range_words(shipment)}"


def _scanned(shipment: Shipment, packed: dict[str, Container],
             codes: list[str]) -> tuple[list[tuple[Container, str]], list[Scan], list[str]]:
    received: list[tuple[Container, str]] = []
    scans: list[Scan] = []
    distinct, problems = distinct_codes(codes)
    for code in distinct:
        if code in packed:
            received.append((packed[code], code))
            continue
        other = db.session.scalar(select(Container).where(Container.code == code))
        if other is None:
            named = f"{code}, which is not registered"
        else:
            elsewhere = packed_in(other)
            where = f", shipment {elsewhere.number}" if elsewhere else ", never shipped"
            named = f"{code} (patient {other.batch.patient.coi}, batch {other.batch.batch_number}{where})"
        message = (f"MISMATCH: you scanned {named}; shipment {shipment.number} holds "
                   f"{', '.join(packed)} of patient {shipment.batch.patient.coi}. Nothing was received: "
                   "keep that bag apart and call the lab.")
        scans.append(Scan(code, other.id if other else None, RECEIVE_EVENT, False, message))
    return received, scans, problems


def decide_quarantine(shipment: Shipment, *, decision: str, reason: str, actor: User, credentials: Credentials,
                      now: datetime | None = None) -> ShipmentDecision:
    """QA releases a shipment quarantined at its site for use ("release": signed "released for
    use") or rejects it ("reject": signed "rejected"), saying why."""
    require(actor, "decide_site_quarantine", "decide on a product quarantined at a site")
    now = now or utcnow()
    if decision not in DECISIONS:
        raise InvalidInput("Unknown decision.", {"decision": "Choose release for use or reject."})
    lock_shipment(shipment)
    if shipment.status != "quarantined":
        raise InvalidInput(f"Shipment {shipment.number} is not quarantined "
                           f"({shipment.status.replace('_', ' ')}): there is nothing to decide.",
                           {"decision": "There is nothing to decide."})
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Nothing was decided.", {"reason": "Say why: the assessment of the excursion, the "
                                                              "missing bag or the damage."})
    if len(reason) > MAX_TEXT:
        raise InvalidInput("Nothing was decided.", {"reason": f"Use at most {MAX_TEXT} characters."})
    if shipment.receipt is not None and shipment.receipt.received_by_id == actor.id:
        raise NotAllowed("You received this shipment: someone else must decide on it.")
    status, meaning = DECISIONS[decision]
    reauthenticate(actor, credentials, meaning=meaning, subject=f"quarantine of shipment {shipment.number}",
                   batch_id=shipment.batch_id)
    with audit.action(f"shipment.quarantine_{decision}", actor=actor, reason=reason):
        record = ShipmentDecision(shipment=shipment, batch_id=shipment.batch_id, decision=decision, reason=reason,
                                  decided_at=now, decided_by_id=actor.id)
        db.session.add(record)
        shipment.status = status
        db.session.flush()
        sign(record, actor=actor, meaning=meaning, now=now)
    return record


def usable_at_site(container: Container) -> str | None:
    """None when the bag may be checked at the bedside and infused (received at the site, not
    quarantined or rejected, not infused or disposed); else the reason in words."""
    status = container.status
    if status == "infused":
        return f"{container.code} has already been infused."
    if status in ("returned", "destroyed", "unused", "discarded", "consumed"):
        return f"{container.code} is {status}: its custody trail has ended."
    shipment = db.session.scalar(select(Shipment).join(ShipmentBag).where(ShipmentBag.container_id == container.id)
                                 .order_by(Shipment.id.desc()).limit(1))
    if shipment is None:
        return f"{container.code} has not been shipped to a site."
    if status != "at site":
        if shipment.status in ("packed", "in_transit"):
            return f"{container.code} is still {'being packed' if shipment.status == 'packed' else 'in transit'} " \
                   f"({shipment.number}): receive the shipment first."
        return f"{container.code} was not received at the site with shipment {shipment.number}."
    if shipment.status == "quarantined":
        why = shipment.receipt.quarantine_reason if shipment.receipt else ""
        return (f"QUARANTINED at the site ({shipment.number}{': ' + why if why else ''}): "
                "do not use it until QA releases it.")
    if shipment.status == "rejected":
        last = shipment.decisions[-1].reason if shipment.decisions else ""
        return f"REJECTED by QA ({shipment.number}{': ' + last if last else ''}): do not infuse it."
    if shipment.status != "received":
        return f"{container.code}'s shipment {shipment.number} is {shipment.status.replace('_', ' ')}."
    return None
