"""Getting a released batch's product out of the lab in tests: packed by tech1 and verified by
tech2 through the services (the pages themselves are tested in test_shipments.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import select

from lab.extensions import db
from lab.models import Shipment
from lab.services.shipments import PackInput, pack_shipment, product_bags, verify_packing
from lab.services.signatures import Credentials
from tests.factories import PASSWORD, get_batch, user

#: When the test shipments left the lab, before "now".
DEPARTED_AGO = timedelta(hours=5)


def pack(app: Flask, number: str, site_id: int, *, packer: str = "tech1") -> str:
    """``packer`` packs every product bag of batch ``number`` for ``site_id``: the shipment number."""
    with app.app_context():
        batch = get_batch(number)
        bags = [c.code for c in product_bags(batch)]
        shipment = pack_shipment(batch, PackInput(bags, "DS-0042", "LOG-7781", site_id,
                                                  datetime.now(UTC) - DEPARTED_AGO, "World Courier"),
                                 actor=user(packer))
        db.session.commit()
        return shipment.number


def ship(app: Flask, number: str, site_id: int) -> str:
    """Packed by tech1, verified by tech2: in transit to ``site_id``; the shipment number."""
    shipment_number = pack(app, number, site_id)
    with app.app_context():
        verify_packing(find_shipment(shipment_number), actor=user("tech2"), credentials=Credentials(PASSWORD, "tech2"))
        db.session.commit()
    return shipment_number


def find_shipment(number: str) -> Shipment:
    """The shipment ``number`` (in an application context)."""
    shipment = db.session.scalar(select(Shipment).where(Shipment.number == number))
    assert shipment is not None
    return shipment
