"""What a clinician may see: only their own site's patients, shipments and products.

The lab's own staff are not bound to a site. Services call ``require_site`` before reading
or writing anything of a site for a clinician; lists filter with ``site_filter``.
"""

from __future__ import annotations

from lab.exceptions import NotAllowed
from lab.models import Patient, Shipment, User


def is_clinician(actor: User) -> bool:
    return actor.role == "clinician"


def require_site(actor: User, site_id: int | None, what: str) -> None:
    """Raise NotAllowed when ``actor`` is a clinician of another site than ``site_id`` (or of none)."""
    if not is_clinician(actor):
        return
    if actor.site_id is None or actor.site_id != site_id:
        raise NotAllowed(f"This {what} belongs to another treatment site: a clinician sees only their own "
                         "site's patients, shipments and products.")


def require_patient(actor: User, patient: Patient) -> None:
    require_site(actor, patient.treating_site_id, "patient")


def require_shipment(actor: User, shipment: Shipment) -> None:
    require_site(actor, shipment.site_id, "shipment")
