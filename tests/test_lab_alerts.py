"""The dashboard shows supervisors, QC and QA what needs them outside the batches (issue 13,
item 4): lots waiting for the incoming check or for QA, lots expiring within 30 days, equipment
out of service or due for calibration, and process versions waiting for approval; in a bounded
number of queries however many there are."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from io import BytesIO

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from lab.demo import OVERDUE_INCUBATOR, equipment_code, lot_code
from lab.extensions import db
from lab.models import MaterialLot, utcnow
from lab.services.materials import LotInput, receive_lot
from tests.factories import page_text, user
from tests.quality import words
from tests.queries import statements

pytestmark = pytest.mark.usefixtures("never_500")
Login = Callable[[str], FlaskClient]
CERTIFICATE = b"%PDF-1.4\n%%EOF\n"


def _section(client: FlaskClient) -> str:
    response = client.get("/")
    assert response.status_code == 200
    text = words(response)
    return text[text.index("Materials, equipment and processes"):] if "Materials, equipment and processes" in text else ""


def test_each_watcher_sees_what_waits_and_a_technician_does_not(app: Flask, inventory: None, login: Login) -> None:
    with app.app_context():
        waiting, expired = lot_code("LV-CD19-0043"), lot_code("TEX-2501")
        overdue = equipment_code(OVERDUE_INCUBATOR)
    qa = _section(login("qa1"))
    assert f"Lots waiting for the incoming QC check (1) {waiting} CD19-CAR lentiviral vector, lot LV-CD19-0043" in qa
    assert f"{expired} TexMACS GMP medium, lot TEX-2501 · EXPIRED on" in qa
    assert f"{overdue} {OVERDUE_INCUBATOR} · OVERDUE: calibration overdue since" in qa
    rejected = lot_code_of(app, "CD4-2612")
    assert rejected not in qa  # decided: nothing waits on it
    for username in ("super1", "qc1"):
        assert waiting in _section(login(username))
    assert _section(login("tech1")) == "" and _section(login("auditor1")) == ""


def lot_code_of(app: Flask, number: str) -> str:
    with app.app_context():
        return lot_code(number)


def test_a_checked_lot_moves_from_qc_to_qa(app: Flask, inventory: None, login: Login) -> None:
    code = lot_code_of(app, "LV-CD19-0043")
    response = login("qc1").post(f"/materials/lots/{code}/check", data={
        "identity_ok": "y", "condition_ok": "y", "certificate_ok": "y", "comment": ""})
    assert response.status_code == 302, page_text(response)
    qa = _section(login("qa1"))
    assert "waiting for the incoming QC check" not in qa
    assert f"Lots waiting for QA release or rejection (1) {code} CD19-CAR lentiviral vector" in qa
    assert "incoming check passed" in qa


def test_the_lists_are_bounded_and_take_the_same_queries_however_many_lots_wait(app: Flask, inventory: None,
                                                                                 login: Login) -> None:
    client = login("qa1")

    def receive(count: int, prefix: str) -> None:
        with app.app_context():
            item = db.session.scalar(select(MaterialLot).where(MaterialLot.lot_number == "LV-CD19-0043")).item
            now = utcnow()
            for n in range(count):
                receive_lot(LotInput(str(item.id), f"{prefix}-{n:03d}", (now + timedelta(days=300)).date().isoformat(),
                                     "10", "1", now.date().isoformat(), "1e8"), BytesIO(CERTIFICATE), "coa.pdf",
                            actor=user("tech1"), now=now)
            db.session.commit()

    receive(25, "SOME")  # past LIMIT already: the count is one more query, once
    with statements(app) as some:
        client.get("/")
    receive(40, "MANY")
    with statements(app) as many:
        text = _section(client)
    assert len(many) == len(some)
    assert "Lots waiting for the incoming QC check (66)" in text and "and 46 more" in text


def test_a_lot_waiting_for_qa_shows_its_latest_check(app: Flask, inventory: None, login: Login) -> None:
    code = lot_code_of(app, "LV-CD19-0043")
    failed = {"identity_ok": "y", "condition_ok": "", "certificate_ok": "y", "comment": "Box crushed"}
    assert login("qc1").post(f"/materials/lots/{code}/check", data=failed).status_code == 302
    assert "incoming check FAILED" in _section(login("qa1"))
    passed = {"identity_ok": "y", "condition_ok": "y", "certificate_ok": "y", "comment": "Checked again"}
    assert login("qc1").post(f"/materials/lots/{code}/check", data=passed).status_code == 302
    qa = _section(login("qa1"))
    assert f"{code} CD19-CAR lentiviral vector" in qa and "incoming check passed" in qa and "FAILED" not in qa
