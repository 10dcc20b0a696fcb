"""Material lots and equipment as steps will check them (read-only here)."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select

from lab.extensions import db
from lab.models import Equipment, MaterialLot, utcnow

bp = Blueprint("inventory", __name__, url_prefix="/inventory")


@bp.route("/")
def index() -> str:
    lots = db.session.scalars(select(MaterialLot).order_by(MaterialLot.material, MaterialLot.code)).all()
    equipment = db.session.scalars(select(Equipment).order_by(Equipment.kind, Equipment.code)).all()
    return render_template("inventory/index.html", lots=lots, equipment=equipment, today=utcnow().date())
