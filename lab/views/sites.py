"""The register of treatment sites (administrators), and every patient's position from
collection to infusion (QA, supervisors, auditors)."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response
from wtforms import StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Patient, Site
from lab.permissions import ACTIONS, require
from lab.sent_forms import OnceForm
from lab.services import sites as service
from lab.views.common import apply_errors

bp = Blueprint("sites", __name__)

#: The positions page lists at most this many patients, newest first.
POSITIONS_LIMIT = 500


class SiteForm(OnceForm):
    code = StringField("Code (printed on shipper labels)", [Length(max=16)])
    name = StringField("Name", [Length(max=128)])
    address = TextAreaField("Delivery address", [Length(max=service.MAX_ADDRESS)])
    contact = StringField("Contact (name, telephone, e-mail)", [Length(max=255)])


class EditSiteForm(SiteForm):
    reason = StringField("Reason for the change", [Length(max=service.MAX_REASON)])


class SiteStatusForm(OnceForm):
    reason = StringField("Reason", [Length(max=service.MAX_REASON)], id="status-reason")


@bp.app_template_global()
def has_endpoint(endpoint: str) -> bool:
    """True when this app serves ``endpoint`` (links to pages of modules that may be absent)."""
    return endpoint in current_app.view_functions


@bp.app_template_global()
def url_if(endpoint: str, **values: object) -> str | None:
    """The URL of ``endpoint`` with ``values``, or None when this app builds none (a page of a
    module that is absent, or that takes other arguments): the template shows text instead."""
    try:
        return url_for(endpoint, **values)
    except BuildError:
        return None


@bp.app_template_global()
def may_read_positions() -> bool:
    return bool(current_user.is_authenticated and current_user.can_act_as(*ACTIONS["read_patient_positions"]))


def site_choices(empty: str, *, keep: Site | None = None) -> list[SelectChoice]:
    """A site select's choices: ``empty`` (no site), then the active sites, and ``keep`` (a
    user's current site) even when it has since been deactivated."""
    sites = service.active_sites()
    if keep is not None and keep not in sites:
        sites.append(keep)
    return [SelectChoice("", empty)] + [
        SelectChoice(str(site.id), f"{site.code}: {site.name}" + ("" if site.active else " (deactivated)"))
        for site in sites]


def _data(form: SiteForm) -> service.SiteInput:
    return service.SiteInput(form.code.data or "", form.name.data or "", form.address.data or "",
                             form.contact.data or "")


def _get_or_404(site_id: int) -> Site:
    site = db.session.get(Site, site_id)
    if site is None:
        abort(404, f"No treatment site with id {site_id} is registered.")
    return site


@bp.route("/sites/")
def index() -> str:
    require(current_user, "manage_sites", "keep the register of treatment sites")
    return render_template("sites/index.html", sites=service.all_sites())


@bp.route("/sites/new", methods=["GET", "POST"])
def new() -> str | Response | tuple[str, int]:
    require(current_user, "manage_sites", "keep the register of treatment sites")
    form = SiteForm()
    status = 200
    if form.validate_on_submit():
        try:
            site = service.register_site(_data(form), actor=current_user)
        except InvalidInput as error:
            db.session.rollback()
            apply_errors(form, error)
            status = error.status
        else:
            db.session.commit()
            flash(f"Site {site.code} ({site.name}) registered. Add its clinicians on the users page.", "success")
            return redirect(url_for("sites.detail", site_id=site.id))
    elif request.method == "POST":
        status = 422
    return render_template("sites/new.html", form=form), status


@bp.route("/sites/<int:site_id>", methods=["GET", "POST"])
def detail(site_id: int) -> str | Response | tuple[str, int]:
    require(current_user, "manage_sites", "keep the register of treatment sites")
    site = _get_or_404(site_id)
    form = EditSiteForm() if request.method == "POST" else EditSiteForm(obj=site, formdata=None)
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                service.update_site(site, _data(form), actor=current_user, reason=form.reason.data or "")
            except InvalidInput as error:
                db.session.rollback()
                apply_errors(form, error)
                status = error.status
            else:
                db.session.commit()
                flash(f"Site {site.code} changed.", "success")
                return redirect(url_for("sites.detail", site_id=site.id))
        else:
            status = 422
        site = _get_or_404(site_id)
    return _detail_page(site, form, SiteStatusForm(), status)


@bp.route("/sites/<int:site_id>/status", methods=["POST"])
def status(site_id: int) -> Response | tuple[str, int]:
    """Deactivate or reactivate a site (the form says which: the opposite of its state now)."""
    require(current_user, "manage_sites", "keep the register of treatment sites")
    site = _get_or_404(site_id)
    form = SiteStatusForm()
    if not form.validate_on_submit():
        return _detail_page(site, EditSiteForm(obj=site, formdata=None), form, 422)
    activate = not site.active
    try:
        service.set_active(site, activate, actor=current_user, reason=form.reason.data or "")
    except InvalidInput as error:
        db.session.rollback()
        apply_errors(form, error)
        site = _get_or_404(site_id)
        return _detail_page(site, EditSiteForm(obj=site, formdata=None), form, error.status)
    db.session.commit()
    flash(f"Site {site.code} {'reactivated' if activate else 'deactivated'}.", "success")
    return redirect(url_for("sites.detail", site_id=site.id))


def _detail_page(site: Site, form: EditSiteForm, status_form: SiteStatusForm, status: int) -> tuple[str, int]:
    return render_template("sites/detail.html", site=site, form=form, status_form=status_form,
                           clinicians=service.clinicians(site)), status


@bp.route("/positions")
def positions() -> str:
    """Every patient's position from collection to infusion, open chains first."""
    require(current_user, "read_patient_positions", "see every patient's position")
    from lab.services import chain  # written alongside (issue 15): imported when the page is asked for

    patients = db.session.scalars(
        select(Patient).options(joinedload(Patient.treating_site))
        .order_by(Patient.registered_at.desc(), Patient.id.desc()).limit(POSITIONS_LIMIT)).all()
    rows = chain.positions(patients)
    rows = sorted(rows, key=lambda row: row.closed)  # stable: open chains first, newest first within each
    return render_template("sites/positions.html", rows=rows, limit=POSITIONS_LIMIT,
                           truncated=len(patients) == POSITIONS_LIMIT)
