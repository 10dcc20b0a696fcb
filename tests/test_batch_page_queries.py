"""The batch page's cost does not grow with the number of entries (no query per row)."""

from __future__ import annotations

from flask import Flask

from tests.queries import statements


def _queries_for_page(app: Flask, login, number: str) -> int:
    client = login("tech1")
    with statements(app) as found:
        response = client.get(f"/batches/{number}")
    assert response.status_code == 200
    return len(found)


def test_batch_page_query_count_does_not_grow_with_entries(app: Flask, make_batch, login) -> None:
    days = tuple({"culture_day": str(day), "viable_cells": f"{day}.0e8", "viability_pct": "90"} for day in range(1, 3))
    few = make_batch(ref="SLE-01", expansion=days)
    many_days = tuple({"culture_day": str(day), "viable_cells": f"{day}.0e8", "viability_pct": "90"}
                      for day in range(1, 10))
    many = make_batch(ref="SLE-02", expansion=many_days)
    small = _queries_for_page(app, login, few)
    large = _queries_for_page(app, login, many)
    assert large == small, (small, large)
    assert small <= 40  # the page also shows containers, custody, release results and decisions

