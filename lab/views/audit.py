"""The audit trail on screen (filtered, paged newest first), on the batch page, and as CSV.

The whole trail is for QA officers, auditors and administrators; one batch's trail is part
of its executed batch record, so everyone who reads the record reads it too, on the batch
page and filtered to that batch here (lab.permissions). Every CSV export is logged as a
download, and so is itself an entry of the trail.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, render_template, request, stream_with_context
from flask_login import current_user
from sqlalchemy import Row, select

from lab.exceptions import InvalidInput, LabError
from lab.extensions import db
from lab.models import Batch, User, utcnow
from lab.permissions import ACTIONS, require
from lab.services.audit_trail import (
    Entry,
    NotFoundInTrail,
    Page,
    TrailFilter,
    audited_tables,
    before_id,
    page,
    parse_filter,
    readable,
    rows,
)
from lab.services.downloads import record_download
from lab.services.progress import lab_timezone

bp = Blueprint("audit", __name__)

BATCH_SECTION_SIZE = 10
CSV_COLUMNS = ("entry", "occurred_at_utc", "user", "action", "operation", "table", "row", "field", "old_value",
               "new_value", "reason", "batch", "prev_hash", "hash")
#: Cells a spreadsheet would run as a formula; such a cell is written with a leading '.
FORMULA_START = ("=", "+", "@", "\t", "\r")
NEGATIVE_NUMBER = re.compile(r"-\d+(\.\d+)?([eE][-+]?\d+)?")


@bp.before_request
def _who_reads_the_trail() -> None:
    """The whole trail for its reviewers; one batch's trail for everyone who reads its record."""
    if request.args.get("batch", "").strip() and may_read_batch_trail():
        return
    require(current_user, "review_audit_trail", "review the audit trail")


@bp.app_template_global()
def may_read_batch_trail() -> bool:
    """For the batch page: whether the signed-in user reads this batch's trail (its record's appendix)."""
    return bool(current_user.is_authenticated and current_user.can_act_as(*ACTIONS["read_batch_trail"]))


@bp.app_template_global()
def may_review_audit_trail() -> bool:
    """For the navigation and the batch page: whether the signed-in user sees the trail."""
    return bool(current_user.is_authenticated and current_user.can_act_as(*ACTIONS["review_audit_trail"]))


@bp.app_template_global()
def batch_audit_page(batch: Batch) -> Page:
    """The newest entries of ``batch``'s trail, for its page (the rest is one link away)."""
    return page(TrailFilter(batch=batch), size=BATCH_SECTION_SIZE)


@bp.app_template_global()
def readable_entries(found: Page) -> list[Entry]:
    """``found``'s entries in words, each id they refer to named (a bounded number of queries)."""
    return readable(found.rows)


@bp.route("/audit")
def index() -> tuple[str, int]:
    try:
        filters = _filters()
        before = before_id(request.args.get("before", ""), again="start again from the newest entries")
        found = page(filters, before=before)
    except (InvalidInput, NotFoundInTrail) as error:
        return _refused(error)
    return render_template("audit/index.html", filters=filters, page=found, entries=readable(found.rows),
                           before=before, errors={}, args=request.args, **_choices()), 200


@bp.route("/audit.csv")
def export() -> Response | tuple[str, int]:
    """The filtered view as CSV, streamed: a line stating the filters, who exported it and
    when, the column names, then every matching entry, newest first."""
    try:
        filters = _filters()
    except (InvalidInput, NotFoundInTrail) as error:
        return _refused(error)
    now = utcnow()
    record_download(current_user, "audit_export", batch=filters.batch, detail=filters.describe(), now=now)
    db.session.commit()
    header = (f"CellTrail audit trail export. Filters: {filters.describe()}. Exported at {now:%Y-%m-%dT%H:%M:%SZ} "
              f"by {current_user.full_name} ({current_user.username}).")
    return Response(stream_with_context(_csv(header, filters)), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=audit-trail-{now:%Y%m%dT%H%M%SZ}.csv"})


def _filters() -> TrailFilter:
    return parse_filter(request.args, today=datetime.now(lab_timezone()).date())


def _refused(error: LabError) -> tuple[str, int]:
    errors = error.errors if isinstance(error, InvalidInput) else {"filter": str(error)}
    return render_template("audit/index.html", filters=None, page=None, before=None, errors=errors,
                           args=request.args, **_choices()), error.status


def _choices() -> dict[str, Any]:
    return {"users": db.session.scalars(select(User).order_by(User.username)).all(), "tables": audited_tables(),
            "timezone": lab_timezone().key}


def _csv(header: str, filters: TrailFilter) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([header])
    writer.writerow(CSV_COLUMNS)
    for count, row in enumerate(rows(filters), start=1):
        writer.writerow(_cells(row))
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _cells(row: Row[Any]) -> list[str]:
    user = f"{row.actor_username} via {row.via}" if row.via else row.actor_username  # as the page says it
    values = (row.id, f"{row.occurred_at:%Y-%m-%dT%H:%M:%S.%fZ}", user, row.action, row.operation,
              row.table_name, row.row_id, row.field, row.old_value, row.new_value, row.reason, row.batch_number,
              row.prev_hash, row.hash)
    return [_safe("" if value is None else str(value)) for value in values]


def _safe(text: str) -> str:
    """``text``, with a leading ' if a spreadsheet would take it for a formula (CSV injection).
    A leading minus sign counts unless the whole cell is a number: -80 stays a temperature."""
    risky = text.startswith(FORMULA_START) or (text.startswith("-") and not NEGATIVE_NUMBER.fullmatch(text))
    return f"'{text}" if risky else text
