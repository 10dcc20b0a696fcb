"""``GET /batches``: every batch, newest first, searchable and filtered (lab/services/batch_list.py).

A search or filter that is not understood answers 422 on the same page with the message next
to its field; an altered paging link answers 400. Every signed-in role may read it.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, render_template, request, url_for

from lab.exceptions import InvalidInput
from lab.services.batch_list import COUNT_LIMIT, FILTER_KEYS, MAX_QUERY, PAGE_SIZE, batch_page, choices, parse_filter
from lab.services.progress import lab_timezone

bp = Blueprint("batch_list", __name__)


@bp.route("/batches")
def index() -> tuple[str, int]:
    known = choices()
    common = {"args": request.args, "choices": known, "max_query": MAX_QUERY, "page_size": PAGE_SIZE, "count_limit": COUNT_LIMIT,
              "timezone": lab_timezone().key,
              # the same search from its first page: where an altered paging link sends the user back
              "restart": url_for("batch_list.index", **{key: value[:MAX_QUERY * 2] for key in FILTER_KEYS
                                                        if (value := request.args.get(key, "").strip())})}
    try:
        filters = parse_filter(request.args, today=datetime.now(lab_timezone()).date(), known=known)
        found = batch_page(filters, request.args.get("page", ""))
    except InvalidInput as error:
        return render_template("batches/list.html", filters=None, page=None, errors=error.errors,
                               message=str(error), **common), error.status
    return render_template("batches/list.html", filters=filters, page=found, errors={}, message="",
                           paged=bool(request.args.get("page", "").strip()), **common), 200
