"""``GET /api/v1/audit``: the audit trail, newest first, with the filters of the /audit page.

Who reads it is decided as on the page (lab.views.audit): the whole trail its reviewers (QA,
auditors, administrators); one batch's trail (``batch=``) everyone who reads that batch's record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import jsonify
from werkzeug.wrappers import Response

from lab.api.core import api_user, bp, limit_arg, query_args
from lab.api.openapi import json_response, problems, query, ref
from lab.permissions import ACTIONS, require
from lab.services.api_read import MAX_PAGE_SIZE, audit_entry
from lab.services.audit_trail import FILTER_KEYS, PAGE_SIZE, before_id, page, parse_filter
from lab.services.progress import lab_timezone


@bp.route("/audit")
def audit() -> Response:
    args = query_args(*FILTER_KEYS, "before", "limit")
    user = api_user()
    if not (args.get("batch") and user.can_act_as(*ACTIONS["read_batch_trail"])):
        require(user, "review_audit_trail", "review the audit trail")
    filters = parse_filter(args, today=datetime.now(lab_timezone()).date())
    found = page(filters, before=before_id(args.get("before", ""), again="send next_before as it came"),
                 size=limit_arg(args, default=PAGE_SIZE, maximum=MAX_PAGE_SIZE))
    return jsonify({"items": [audit_entry(row) for row in found.rows], "next_before": found.next_before})


_DATE = {"type": "string", "format": "date"}

#: OpenAPI path items of this module's routes (merged by lab.api.openapi).
PATHS: dict[str, Any] = {
    "/audit": {"get": {
        "operationId": "listAuditEntries", "tags": ["audit"], "summary": "The audit trail, newest first",
        "description": "The filters of the /audit page. QA officers, auditors and administrators read the whole "
                       "trail; with batch, everyone who reads that batch's record (technicians, supervisors, QC). "
                       "Pass next_before as before for the next page (null: the last page).",
        "parameters": [
            query("batch", {"type": "string", "maxLength": 64}, "Only this batch's entries (its batch number)."),
            query("user", {"type": "string", "maxLength": 64}, "Only entries by this username."),
            query("action", {"type": "string", "maxLength": 64}, "Only this action, e.g. step.correct."),
            query("table", {"type": "string", "maxLength": 64}, "Only entries of this audited table."),
            query("from", _DATE, "From this date (YYYY-MM-DD, in the lab's time zone)."),
            query("to", _DATE, "To this date, included (YYYY-MM-DD, in the lab's time zone)."),
            query("before", {"type": "integer", "minimum": 1}, "next_before of the previous page."),
            query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": PAGE_SIZE},
                  "Entries per page."),
        ],
        "responses": {"200": json_response("A page of the trail.", ref("AuditPage")),
                      **problems(400, 401, 403, 404, 422)},
    }},
}
