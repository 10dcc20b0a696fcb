"""The register of treatment sites (consignees), kept by an administrator (DOMAIN.md §5).

A site is never deleted: records name it. It is deactivated instead, and reactivated if it
treats again. Every change is audited (``Site`` is an audited model) under its own action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Select, func, select

from lab import audit
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Shipment, Site, User
from lab.permissions import require

#: A short code printed on shipper labels: letters, digits and hyphens, e.g. "NUH-HEM".
CODE_RE = re.compile(r"[A-Z0-9][A-Z0-9-]{1,15}")
MAX_ADDRESS = 1000
MAX_REASON = 500
#: Shipments still on their way to a site: it cannot be deactivated under them.
OPEN_SHIPMENT_STATUSES = ("packed", "in_transit")


@dataclass(frozen=True)
class SiteInput:
    code: str
    name: str
    address: str
    contact: str


def active_sites() -> list[Site]:
    """The sites a shipment may go to, a clinician may belong to and a patient be treated at."""
    return list(db.session.scalars(select(Site).where(Site.active.is_(True)).order_by(Site.name)))


def all_sites() -> list[Site]:
    """Every site, active ones first."""
    return list(db.session.scalars(select(Site).order_by(Site.active.desc(), Site.name)))


def find(code: str) -> Site | None:
    return db.session.scalar(select(Site).where(func.upper(Site.code) == code.strip().upper()))


def active_site(site_id: int | None) -> Site | None:
    """The active site with ``site_id``, or None (no such site, or deactivated)."""
    if site_id is None:
        return None
    site = db.session.get(Site, site_id)
    return site if site is not None and site.active else None


def _others(query: Select[tuple[str]], site: Site | None) -> Select[tuple[str]]:
    """``query`` over every site but ``site`` (the one being changed)."""
    return query if site is None else query.where(Site.id != site.id)


def _cleaned(data: SiteInput, *, site: Site | None) -> tuple[SiteInput, dict[str, str]]:
    code = data.code.strip().upper()
    name = " ".join(data.name.split())
    address = "\n".join(line.strip() for line in data.address.strip().splitlines() if line.strip())
    contact = " ".join(data.contact.split())
    errors: dict[str, str] = {}
    if not CODE_RE.fullmatch(code):
        errors["code"] = ("Use 2 to 16 letters, digits or hyphens, starting with a letter or digit "
                          "(printed on shipper labels), e.g. NUH-HEM.")
    else:
        if db.session.scalar(_others(select(Site.code).where(func.upper(Site.code) == code), site)) is not None:
            errors["code"] = f"The code {code} is already used by another site (sites are never deleted)."
    if not 2 <= len(name) <= 128:
        errors["name"] = "Enter the site's name (2 to 128 characters), e.g. Northern University Hospital, Haematology."
    else:
        taken = db.session.scalar(_others(select(Site.code).where(func.lower(Site.name) == name.lower()), site))
        if taken is not None:
            errors["name"] = f"Site {taken} already has this name: two sites must not be confused on a label."
    if len(address) < 5:
        errors["address"] = "Enter the delivery address the courier brings the shipper to."
    elif len(address) > MAX_ADDRESS:
        errors["address"] = f"Use at most {MAX_ADDRESS} characters."
    if not 2 <= len(contact) <= 255:
        errors["contact"] = "Enter who to call about a shipment: name, telephone, e-mail (2 to 255 characters)."
    return SiteInput(code, name, address, contact), errors


def register_site(data: SiteInput, *, actor: User) -> Site:
    """Add a treatment site. Raises NotAllowed (not an administrator) or InvalidInput naming the field."""
    require(actor, "manage_sites", "keep the register of treatment sites")
    clean, errors = _cleaned(data, site=None)
    if errors:
        raise InvalidInput("The site was not registered.", errors)
    with audit.action("site.register", actor=actor):
        site = Site(code=clean.code, name=clean.name, address=clean.address, contact=clean.contact, active=True)
        db.session.add(site)
    return site


def update_site(site: Site, data: SiteInput, *, actor: User, reason: str) -> Site:
    """Change a site's code, name, address or contact, with a reason (kept in the audit trail)."""
    require(actor, "manage_sites", "keep the register of treatment sites")
    clean, errors = _cleaned(data, site=site)
    reason = " ".join(reason.split())
    if not reason:
        errors["reason"] = "Say why the site's details change (kept in the audit trail)."
    elif len(reason) > MAX_REASON:
        errors["reason"] = f"Use at most {MAX_REASON} characters."
    if not errors and (clean.code, clean.name, clean.address, clean.contact) == (
            site.code, site.name, site.address, site.contact):
        errors["name"] = "Nothing to change: the details are already as given."
    if errors:
        raise InvalidInput("The site was not changed.", errors)
    with audit.action("site.update", actor=actor, reason=reason):
        site.code, site.name, site.address, site.contact = clean.code, clean.name, clean.address, clean.contact
    return site


def set_active(site: Site, active: bool, *, actor: User, reason: str) -> Site:
    """Deactivate (no new shipment, clinician or patient goes to it) or reactivate a site.

    A site with a shipment packed for it or on its way to it is not deactivated."""
    require(actor, "manage_sites", "keep the register of treatment sites")
    reason = " ".join(reason.split())
    errors: dict[str, str] = {}
    if not reason:
        errors["reason"] = ("Say why the site is deactivated (kept in the audit trail)." if not active else
                            "Say why the site is reactivated (kept in the audit trail).")
    elif len(reason) > MAX_REASON:
        errors["reason"] = f"Use at most {MAX_REASON} characters."
    if site.active == active:
        errors["reason"] = f"Site {site.code} is already {'active' if active else 'deactivated'}."
    elif not active:
        open_shipment = db.session.scalar(
            select(Shipment.number).where(Shipment.site_id == site.id,
                                          Shipment.status.in_(OPEN_SHIPMENT_STATUSES)).limit(1))
        if open_shipment is not None:
            errors["reason"] = (f"Shipment {open_shipment} is packed for or on its way to {site.code}: the site "
                                "cannot be deactivated until it is received.")
    if errors:
        raise InvalidInput("The site was not changed.", errors)
    with audit.action("site.reactivate" if active else "site.deactivate", actor=actor, reason=reason):
        site.active = active
    return site


def clinicians(site: Site) -> list[User]:
    return list(db.session.scalars(select(User).where(User.site_id == site.id).order_by(User.username)))


def site_id_from(text: str | None, *, field: str, what: str) -> int | None:
    """The site id a form's select sent ("" for none). Anything else than a site's id raises
    InvalidInput on ``field`` (``what``: the refusal, e.g. "The account was not created.")."""
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) > 2**31 - 1 or db.session.get(Site, int(text)) is None:
        raise InvalidInput(what, {field: "Choose one of the registered treatment sites."})
    return int(text)
