"""The former lots-and-equipment page: lots now live in the materials area (/materials) and
instruments in the equipment area (/equipment); old links and bookmarks land here."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("inventory", __name__, url_prefix="/inventory")


@bp.route("/")
def index() -> str:
    return render_template("inventory/index.html")
