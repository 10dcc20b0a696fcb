"""The dashboard's statements are built once per process (lab/services/lab_alerts.py,
lab/services/alerts.py, lab/services/batch_summary.py): what differs from one request to the
next is bound on each, never built into the kept statement."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from flask import Flask
from sqlalchemy import select

from lab.extensions import db
from lab.models import MaterialLot, User
from lab.services.lab_alerts import lab_alerts


def _expiring(user: User, now: datetime) -> list[str]:
    alerts = lab_alerts(user, now)
    assert alerts is not None
    return [lot.code for lot in alerts.lots_expiring.rows]


def test_the_expiry_horizon_is_each_days_own(app: Flask, inventory: None) -> None:
    with app.app_context():
        lot = db.session.scalars(select(MaterialLot).where(MaterialLot.status == "released",
                                                           MaterialLot.expiry_date.is_not(None))
                                 .order_by(MaterialLot.expiry_date.desc())).first()
        assert lot is not None and lot.expiry_date is not None
        qa = db.session.scalars(select(User).where(User.username == "qa1")).one()
        noon = datetime.combine(lot.expiry_date, time(12), UTC)
        before, within = noon - timedelta(days=45), noon - timedelta(days=10)
        assert lot.code not in _expiring(qa, before)
        assert lot.code in _expiring(qa, within)
        assert lot.code not in _expiring(qa, before)  # the same kept statement, the earlier day again
