"""The batch page's cost does not grow with the number of entries or label prints (no query per
row), and a page whose record has not changed since it was drawn costs two queries: the viewer,
and the batch's id with its mark (lab.views.batches.detail)."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from tests.factories import get_batch
from tests.queries import statements

#: The viewer (Flask-Login), and the batch's id with its mark.
KEPT_PAGE_QUERIES = 2


def _days(count: int) -> tuple[dict[str, str], ...]:
    """``count`` daily counts, from culture day 1."""
    return tuple({"culture_day": str(day), "viable_cells": f"{day}.0e8", "viability_pct": "90"}
                 for day in range(1, count + 1))


def _queries(app: Flask, client: FlaskClient, number: str) -> tuple[int, int]:
    """The queries of the page drawn (the first view of its record) and of the same page again."""
    counts = []
    for _ in range(2):
        with statements(app) as found:
            response = client.get(f"/batches/{number}")
        assert response.status_code == 200
        counts.append(len(found))
    return counts[0], counts[1]


def _print_labels(app: Flask, client: FlaskClient, number: str, *, reprints: int) -> None:
    """Print every label of the batch ``reprints`` times again (its steps printed them once)."""
    with app.app_context():
        codes = [c.code for c in get_batch(number).containers]
    for code in codes:
        for _ in range(reprints):
            assert client.get(f"/containers/{code}/label.pdf", query_string={"reason": "Smudged"}).status_code == 200


def test_batch_page_query_count_does_not_grow_with_entries_or_reprints(app: Flask, make_batch, login) -> None:
    # Still expanding (20 days, past the harvest's window: a long culture), so its containers are the same.
    few = make_batch(ref="SLE-01", until="harvest", days_ago=30, expansion=_days(2))
    many = make_batch(ref="SLE-02", until="harvest", days_ago=30, expansion=_days(20))
    client = login("tech1")
    small = _queries(app, client, few)
    large = _queries(app, client, many)
    _print_labels(app, client, many, reprints=3)
    reprinted = _queries(app, client, many)
    assert small == large == reprinted, (small, large, reprinted)
    drawn, kept = small
    assert drawn <= 30  # the page also shows containers, custody, release results, decisions and the audit trail
    assert kept == KEPT_PAGE_QUERIES
