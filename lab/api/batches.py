"""``GET /api/v1/batches`` (a page of batches, newest change first) and
``GET /api/v1/batches/{batch_number}`` (one batch as its page shows it, with its record's digest).

Whoever opens the batch pages reads them here: every role of the lab; a clinician's account is
refused, as on the pages (lab.clinic_access).
"""

from __future__ import annotations

from typing import Any

from flask import jsonify
from werkzeug.wrappers import Response

from lab.api.core import api_user, bp, limit_arg, query_args
from lab.api.openapi import json_response, path_parameter, problems, query, ref
from lab.clinic_access import REFUSAL
from lab.exceptions import NotAllowed
from lab.services.api_read import (
    BATCH_FILTERS,
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    batch_detail,
    batch_summaries,
    parse_batch_query,
)
from lab.services.site_scope import is_clinician
from lab.views.batches import get_batch_or_404


def require_lab_reader() -> None:
    """Refuse a clinician's token: batches belong to the manufacturing lab, as their pages do."""
    if is_clinician(api_user()):
        raise NotAllowed(REFUSAL)


@bp.route("/batches")
def batches() -> Response:
    require_lab_reader()
    args = query_args(*BATCH_FILTERS, "cursor", "limit")
    found = parse_batch_query(args)
    return jsonify(batch_summaries(found, args.get("cursor", ""),
                                   limit=limit_arg(args, default=PAGE_SIZE, maximum=MAX_PAGE_SIZE)))


@bp.route("/batches/<batch_number>")
def batch(batch_number: str) -> Response:
    require_lab_reader()
    query_args()
    return jsonify(batch_detail(get_batch_or_404(batch_number)))


_BATCH_NUMBER = path_parameter("batch_number", {"type": "string", "maxLength": 64},
                               "The batch number, as printed (hyphens optional).")

#: OpenAPI path items of this module's routes (merged by lab.api.openapi).
PATHS: dict[str, Any] = {
    "/batches": {"get": {
        "operationId": "listBatches", "tags": ["batches"], "summary": "Batches, newest change first",
        "description": "Keyset-paged: pass next_cursor as cursor for the next page (null: the last page). "
                       "Any other query parameter is refused (400). Every role of the lab; not clinicians.",
        "parameters": [
            query("state", {"type": "string"}, "Only batches in this state (a state key of the process definitions)."),
            query("product", {"type": "string"}, "Only batches of this product (the process key, e.g. cd19-car-t)."),
            query("updated_since", {"type": "string", "format": "date-time"},
                  "Only batches changed at or after this time (ISO 8601 with its offset, e.g. 2026-11-25T14:03:00Z)."),
            query("cursor", {"type": "string", "maxLength": 200}, "next_cursor of the previous page, as it came."),
            query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": PAGE_SIZE},
                  "Batches per page."),
        ],
        "responses": {"200": json_response("A page of batches.", ref("BatchPage")),
                      **problems(400, 401, 403, 422)},
    }},
    "/batches/{batch_number}": {"get": {
        "operationId": "getBatch", "tags": ["batches"], "summary": "One batch in full",
        "description": "Steps with their entries, values (flags, corrections), derived values and signatures; "
                       "containers and custody; release results; deviations; decisions; the digest of the "
                       "executed batch record as /verify knows it (computed from the record's canonical form, "
                       "no PDF is drawn); submissions waiting for a person's signature. Every role of the lab; "
                       "not clinicians.",
        "parameters": [_BATCH_NUMBER],
        "responses": {"200": json_response("The batch.", ref("BatchDetail")), **problems(400, 401, 403, 404)},
    }},
}
