"""Containers: their page, their labels (PDF and ZPL), and hand-off scans outside steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any, TypeVar

from flask import Blueprint, abort, flash, g, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.forms import ContainerScanForm
from lab.models import Container, CustodyEvent
from lab.permissions import require_role
from lab.services import containers as container_service
from lab.services.labels import MAX_REASON, print_labels
from lab.services.progress import container_title, definition_for
from lab.views.batches import detail as batch_page
from lab.views.batches import get_batch_or_404
from lab.views.common import apply_errors
from labels.layout import LabelOverflow
from labels.pdf import render_label, render_label_sheet
from labels.text import UnprintableText
from labels.zpl import render_zpl
from workflows.codes import CodeError, CodeKind, parse_code

bp = Blueprint("containers", __name__)
T = TypeVar("T")
PAPERS = ("A4", "Letter")


@dataclass(frozen=True)
class ReasonRefused:
    """A print refused for its reason (a reprint without one, one too long), shown next to the
    reason field ``field`` (its id) of the batch page's container table or sheet form."""

    field: str
    message: str
    typed: str


def get_container_or_404(code: str) -> Container:
    """The container named in the URL: 400 for a malformed code or wrong check character."""
    try:
        canonical = str(parse_code(code, CodeKind.CONTAINER))
    except CodeError as error:
        abort(400, str(error))
    container = db.session.scalar(select(Container).where(Container.code == canonical))
    if container is None:
        abort(404, f"No container {canonical} is registered in this lab.")
    return container


def _pdf(data: bytes, name: str) -> Response:
    return send_file(BytesIO(data), mimetype="application/pdf", download_name=name, max_age=0)


def _rendered(render: Callable[..., T], *args: Any) -> T:
    """What ``render`` prints; a label whose text cannot be printed (too long for its stock, a
    character the font lacks) is refused with the reason, and its print is not recorded."""
    try:
        return render(*args)
    except (LabelOverflow, UnprintableText) as error:
        db.session.rollback()
        abort(422, f"This label cannot be printed: {error}")


def _reason_refused(error: InvalidInput, batch_number: str, code: str | None) -> tuple[str, int]:
    """A print refused for its reason (nothing recorded): the page that holds the form, the
    refusal next to its reason field, and the 422. The batch page when the form was there
    (``from=batch``) or printed the batch's sheet (``code`` None), else container ``code``'s page."""
    db.session.rollback()
    message = " ".join(filter(None, (str(error), error.errors.get("reason"))))
    typed = request.args.get("reason", "")[:MAX_REASON]
    if code is not None and request.args.get("from") != "batch":
        container = get_container_or_404(code)
        return _page(container, ContainerScanForm(), reason_error=message, reason=typed), error.status
    field = "sheet-reason" if code is None else f"reprint-{code}"
    # The batch page is the batches blueprint's view; the refusal it shows next to the field
    # rides on ``g``, which its template batches/_containers.html reads.
    g.label_refusal = ReasonRefused(field, message, typed)
    return batch_page(batch_number), error.status


@bp.route("/containers/<code>")
def detail(code: str) -> str:
    container = get_container_or_404(code)
    return _page(container, ContainerScanForm())


def _page(container: Container, form: ContainerScanForm, *, reason_error: str = "", reason: str = "") -> str:
    custody = db.session.scalars(
        select(CustodyEvent).where(CustodyEvent.container_id == container.id).order_by(CustodyEvent.id)
    ).all()
    children = db.session.scalars(select(Container).where(Container.parent_id == container.id)
                                  .order_by(Container.id)).all()
    definition = definition_for(container.batch)
    return render_template("containers/detail.html", container=container, custody=custody, children=children,
                           title=container_title(container, definition), form=form,
                           events=container_service.HANDOFF_EVENTS, reason_error=reason_error, reason=reason)


@bp.route("/containers/<code>/label.pdf")
def label_pdf(code: str) -> Response | tuple[str, int]:
    container = get_container_or_404(code)
    try:
        (label,) = print_labels([container], actor=current_user, output="pdf", reason=request.args.get("reason", ""))
    except InvalidInput as error:
        return _reason_refused(error, container.batch.batch_number, container.code)
    data = _rendered(render_label, label)
    db.session.commit()
    return _pdf(data, f"label-{container.code}.pdf")


@bp.route("/containers/<code>/label.zpl")
def label_zpl(code: str) -> Response | tuple[str, int]:
    container = get_container_or_404(code)
    try:
        (label,) = print_labels([container], actor=current_user, output="zpl", reason=request.args.get("reason", ""))
    except InvalidInput as error:
        return _reason_refused(error, container.batch.batch_number, container.code)
    text = _rendered(render_zpl, label)
    db.session.commit()
    return send_file(BytesIO(text.encode("utf-8")), mimetype="application/vnd.zebra-zpl",
                     download_name=f"label-{container.code}.zpl", max_age=0)


@bp.route("/batches/<batch_number>/labels.pdf")
def batch_labels(batch_number: str) -> Response | tuple[str, int]:
    batch = get_batch_or_404(batch_number)
    paper = request.args.get("paper", "A4")
    if paper not in PAPERS:
        abort(400, f"Paper must be one of {', '.join(PAPERS)}.")
    if not batch.containers:
        abort(404, f"Batch {batch.batch_number} has no containers yet: nothing to print.")
    try:
        labels = print_labels(batch.containers, actor=current_user, output="sheet",
                              reason=request.args.get("reason", ""))
    except InvalidInput as error:
        return _reason_refused(error, batch.batch_number, None)
    data = _rendered(lambda: render_label_sheet(labels, paper=paper))
    db.session.commit()
    return _pdf(data, f"labels-{batch.batch_number}.pdf")


@bp.route("/containers/<code>/scan", methods=["POST"])
def scan(code: str) -> Response | tuple[str, int]:
    """A hand-off outside a step: the label applied and scanned back, a move, a shipment."""
    container = get_container_or_404(code)
    require_role(current_user, "technician", "hand containers over")  # before the form: 403, whatever was sent
    form = ContainerScanForm()
    if not form.validate_on_submit():
        return _page(container, form), 422
    try:
        container_service.confirm_scan(container, form.scanned.data or "", event=form.event.data or "",
                                       to_location=form.to_location.data or "", actor=current_user)
    except container_service.CustodyMismatch as error:
        db.session.rollback()
        container_service.record_mismatches(container.batch, error.scans, actor=current_user)
        db.session.commit()
        form.form_errors.append(str(error))
        return _page(container, form), error.status
    except InvalidInput as error:
        db.session.rollback()
        apply_errors(form, error)
        return _page(container, form), error.status
    db.session.commit()
    flash(f"{container.code}: {form.event.data} recorded.", "success")
    return redirect(url_for("containers.detail", code=container.code))
