"""The example client (examples/api_client.py, standard library only) against a live server:
it lists every batch, page after page, and a count it posts waits as a pending submission."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.serving import make_server

from lab.demo import Recorder
from lab.extensions import db
from lab.models import Submission
from lab.services.api_tokens import create_token
from lab.services.batches import start_batch
from lab.services.patients import PatientInput, register_patient
from tests.conftest import setup_lab
from tests.factories import PASSWORD, user

pytestmark = pytest.mark.requirements("API-2", "API-3")
SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "api_client.py"


def lab_with_batches(app: Flask) -> tuple[list[str], str, str]:
    """Users, materials and three batches (one in expansion); their numbers, the one in
    expansion, and a write token of tech1."""
    setup_lab(app)
    with app.app_context():
        now = datetime.now(UTC)
        start = now - timedelta(days=8)
        numbers = []
        for ref in ("SLE-01", "SLE-02", "SLE-03"):
            patient = register_patient(PatientInput(ref, "AB", date(1980, 5, 1), 58.0, "SLE"), actor=user("super1"),
                                       now=start)
            batch = start_batch(patient, actor=user("super1"), now=start)
            numbers.append(batch.batch_number)
        Recorder(user("tech1"), user("tech2"), PASSWORD, now).run(
            batch, start, until="harvest", expansion=({"culture_day": "3", "viable_cells": "4e8", "viability_pct": "90"},))
        _, secret = create_token(user("tech1"), "LIMS", "write", 30, actor=user("tech1"))
        db.session.commit()
        return numbers, numbers[-1], secret


@pytest.fixture
def live(shared_app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, shared_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_the_script_lists_every_batch_and_posts_a_count_that_waits_for_a_signature(shared_app: Flask,
                                                                                    live: str) -> None:
    numbers, expanding, secret = lab_with_batches(shared_app)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--url", live, "--page-size", "1",
         "--post-count", expanding, "viable_cells=1.2e9", "viability_pct=93"],
        env={**os.environ, "CELLTRAIL_TOKEN": secret}, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "3 batches:" in done.stdout and all(number in done.stdout for number in numbers), done.stdout
    with shared_app.app_context():
        submission = db.session.scalars(select(Submission)).one()
        assert submission.status == "pending" and submission.batch.batch_number == expanding
        assert submission.values == {"viable_cells": "1200000000.0", "viability_pct": "93"}
    line = next(line for line in done.stdout.splitlines() if line.startswith(f"Submission {submission.id} pending:"))
    assert "viable_cells=1200000000.0" in line and "viability_pct=93" in line
    assert f"{live}/submissions/{submission.id}" in done.stdout


def test_the_script_says_why_a_post_is_refused(shared_app: Flask, live: str) -> None:
    _, expanding, secret = lab_with_batches(shared_app)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--url", live, "--post-count", expanding, "viability_pct=150", "colour=red"],
        env={**os.environ, "CELLTRAIL_TOKEN": secret}, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "Refused: 422" in done.stderr and "colour:" in done.stderr and "viability_pct:" in done.stderr
