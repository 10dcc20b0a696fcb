"""The executed batch record lists the lots and equipment the batch used (issue 13, item 6):
each lot with its release status and the quantity this batch took from it, each instrument with
its calibration status on the days it was used; read back from the PDF."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lab.demo import equipment_code
from lab.extensions import db
from tests.factories import demo_lot, get_batch, signature
from tests.readback import cells_text, text_of

pytestmark = pytest.mark.requirements("A11-8.1")

PRODIGY = "CliniMACS Prodigy #1"


def _record_text(client: FlaskClient, number: str) -> tuple[str, str]:
    """The record's materials section as page text, and its table cells one by one (`` | ``)."""
    response = client.get(f"/batches/{number}/record.pdf")
    assert response.status_code == 200
    text = text_of(response.data)
    return text[text.index("Materials and equipment used"):text.index("Containers and labels")], cells_text(response.data)


def test_each_lot_with_its_release_and_quantity_and_each_instrument_with_its_calibration(
        app: Flask, make_batch: Callable[..., str], login: Callable[[str], FlaskClient]) -> None:
    number = make_batch("expansion")  # enrichment, activation and transduction are recorded
    vector, transact, tubing = (demo_lot(app, n) for n in ("LV-CD19-0042", "TRA-2610", "TS520-2609"))
    with app.app_context():
        prodigy = equipment_code(PRODIGY)
        # The processor's days of use: enrichment's and activation's dates (UTC, the tests' lab time
        # zone), one day or two depending on the hour the batch was started.
        days = sorted({e.performed_at.date() for e in get_batch(number).entries if e.step_key in ("enrichment", "activation")})
    used = days[0].isoformat() if len(days) == 1 else f"{days[0].isoformat()} to {days[-1].isoformat()} (2 days)"
    section, cells = _record_text(login("auditor1"), number)
    for code in (vector, transact, tubing):
        assert re.search(rf"{re.escape(code)} lot [^|]+ \| [^|]+ \| \d{{4}}-\d\d-\d\d \| released for use by Quentin Assurance at "
                         r"[^|]+ UTC \| ", cells), code
    assert re.search(rf"{re.escape(vector)} lot LV-CD19-0042 \| CD19-CAR lentiviral vector \(Demo Vector Facility\) \| "
                     r"[^|]+ \| [^|]+ \| 7\.5 mL \| Lentiviral transduction \|", cells)
    assert re.search(rf"{re.escape(prodigy)} \| {re.escape(PRODIGY)} \| calibrated \d{{4}}-\d\d-\d\d, due "
                     rf"\d{{4}}-\d\d-\d\d; used {re.escape(used)} \| T-cell enrichment, "
                     r"Activation \(day 0\)", cells)
    assert "Material lots" in section and "Equipment" in section
    assert "OVERDUE" not in section and "RECALLED" not in section


def test_a_later_recall_of_a_lot_shows_in_the_record(app: Flask, make_batch: Callable[..., str],
                                                     login: Callable[[str], FlaskClient]) -> None:
    number = make_batch("expansion")
    transact = demo_lot(app, "TRA-2610")
    response = login("qa1").post(f"/materials/lots/{transact}/recall",
                                 data={"reason": "Supplier recall notice RN-77.", **signature("qa1")})
    assert response.status_code == 302
    _, cells = _record_text(login("auditor1"), number)
    assert re.search(rf"{re.escape(transact)} lot TRA-2610 \| [^|]+ \| [^|]+ \| released for use by [^|]+; RECALLED "
                     r"by Quentin Assurance at [^|]+ UTC: Supplier recall notice RN-77\. \|", cells)


def test_a_batch_before_any_step_lists_nothing(app: Flask, make_batch: Callable[..., str],
                                               login: Callable[[str], FlaskClient]) -> None:
    number = make_batch("receipt")
    section, _ = _record_text(login("auditor1"), number)
    assert "No material lot recorded." in section and "No equipment recorded." in section
    with app.app_context():
        db.session.rollback()
