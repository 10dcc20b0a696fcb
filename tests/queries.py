"""Seeing the SQL a request runs: for tests that bound a page's queries, which do not
depend on the machine, unlike its time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import event

from lab.extensions import db


@contextmanager
def statements(app: Flask) -> Iterator[list[tuple[str, Any]]]:
    """Collects (statement, parameters) of every query run on ``app``'s engine meanwhile."""
    found: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        found.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", record)
