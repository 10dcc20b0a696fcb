"""What a clinician's account reaches: the clinic's pages only.

A clinician belongs to one treatment site and sees only its patients, shipments and products
(issue 15, DOMAIN.md §5). Every request of a clinician passes ``guard`` (installed before each
request, after the session checks): an endpoint outside the allow-list (batch pages, the audit
trail, materials, equipment, administration...) is refused with a 403 and the reason, and a
patient's page or report is refused unless the patient is treated at the clinician's site.
The services check the site again before they write (lab.services.site_scope).
"""

from __future__ import annotations

from flask import Flask, abort, request
from flask_login import current_user
from sqlalchemy import or_, select

from lab.extensions import db
from lab.models import Patient, Shipment, ShipmentReceipt

#: Endpoints a clinician may reach, whatever their arguments.
ALLOWED_ENDPOINTS = frozenset({
    "main.dashboard", "main.login", "main.logout", "main.scan", "static",
    "patients.index",  # filtered to the clinician's site by the view
    "api_tokens.mine", "api_tokens.revoke",  # their own API tokens (the API applies their role and site)
})
#: Whole blueprints of the clinic's work (their views check the shipment's or bag's site).
ALLOWED_BLUEPRINTS = frozenset({"account", "shipments", "bedside", "notices"})
#: Besides: the temperature logger's file of a receipt at their site (attachments.download).
#: One patient's pages a clinician may open when the patient is treated at their site.
PATIENT_ENDPOINTS = frozenset({"patients.detail", "patients.show", "patients.coi_report"})
REFUSAL = ("A clinician's account reaches only the clinic's pages: the dashboard, shipments, the bedside, "
           "notices and the patients of their own treatment site. This page belongs to the manufacturing lab.")
OTHER_SITE = ("This patient is treated at another site (or none is recorded): a clinician sees only their own "
              "site's patients, shipments and products.")


def init_app(app: Flask) -> None:
    """Install the guard; call after lab.auth.init_app, so that a request without a session is
    sent to sign in first."""
    app.before_request(guard)


def guard() -> None:
    """Refuse (403, with the reason) a clinician's request for a page outside the clinic."""
    if not current_user.is_authenticated or current_user.role != "clinician":
        return
    endpoint = request.endpoint
    if endpoint is None:  # no such page: the 404 says so
        return
    if endpoint in ALLOWED_ENDPOINTS or endpoint.split(".", 1)[0] in ALLOWED_BLUEPRINTS:
        return
    if endpoint in PATIENT_ENDPOINTS:
        _require_own_patient()
        return
    if endpoint == "attachments.download" and _own_logger_file():
        return
    abort(403, REFUSAL)


def _own_logger_file() -> bool:
    """The file is the temperature logger's file of a receipt at the clinician's site."""
    attachment_id = (request.view_args or {}).get("attachment_id")
    return current_user.site_id is not None and db.session.scalar(
        select(ShipmentReceipt.id).join(Shipment, Shipment.id == ShipmentReceipt.shipment_id)
        .where(ShipmentReceipt.logger_file_id == attachment_id, Shipment.site_id == current_user.site_id)
        .limit(1)) is not None


def _require_own_patient() -> None:
    """The patient the URL names must be treated at the clinician's site (an unknown one is
    left to the view's 404)."""
    args = request.view_args or {}
    named = [args[key] for key in ("patient_ref", "coi") if key in args] or list(args.values())
    if len(named) != 1 or not isinstance(named[0], str):
        abort(403, REFUSAL)
    text = named[0].strip().upper()
    found = db.session.execute(select(Patient.treating_site_id)
                               .where(or_(Patient.patient_ref == text, Patient.coi == text)).limit(1)).first()
    if found is None:
        return
    if current_user.site_id is None or found.treating_site_id != current_user.site_id:
        abort(403, OTHER_SITE)
