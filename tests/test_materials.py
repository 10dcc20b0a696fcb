"""Material items and lots (issue 13 item 1; JOURNEYS 5): the catalogue, receiving a lot into
quarantine with its certificate, incoming QC, QA's signed release or rejection, what steps take
from a lot's balance, the titer taken from the vector lot, where-used, and recall. Through HTTP."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import (
    Attachment,
    AuditEvent,
    Deviation,
    Download,
    LotCheck,
    LotConsumption,
    LotDecision,
    MaterialItem,
    MaterialLot,
    Signature,
)
from lab.services.materials import find_lot
from lab.services.signatures import current_values
from tests.factories import demo_lot, entries, get_batch, page_text, post_step, signature, signed_in, user
from tests.quality import close_all_deviations, record_results, release
from tests.readback import qr_texts, text_of
from workflows.codes import CodeKind, parse_code

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("MAT-1", "MAT-2")]

PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


def counts(app: Flask) -> dict[str, int]:
    """What a refused request must leave unchanged."""
    with app.app_context():
        return {model.__name__: db.session.scalar(select(func.count()).select_from(model)) or 0
                for model in (MaterialItem, MaterialLot, LotCheck, LotDecision, LotConsumption, Attachment, Signature,
                              Deviation, AuditEvent)}


def item_id(app: Flask, name: str) -> int:
    with app.app_context():
        return db.session.scalar(select(MaterialItem.id).where(MaterialItem.name == name))


def lot_row(app: Flask, code: str) -> dict[str, Any]:
    with app.app_context():
        lot = find_lot(code)
        assert lot is not None
        return {"status": lot.status, "balance": lot.balance, "unit": lot.unit, "titer": lot.titer,
                "sha256": lot.certificate.sha256 if lot.certificate else None, "lot_number": lot.lot_number}


def receipt(app: Flask, **overrides: Any) -> dict[str, Any]:
    data = {"item_id": str(item_id(app, "MACS GMP T Cell TransAct")), "lot_number": "TRA-2701",
            "expiry_date": (date.today() + timedelta(days=300)).isoformat(), "quantity": "5",
            "container_count": "5", "received_on": date.today().isoformat(), "titer": "",
            "certificate": (BytesIO(PDF), "coa-TRA-2701.pdf")}
    data.update(overrides)
    return data


def receive(app: Flask, client: FlaskClient, **overrides: Any) -> Any:
    return client.post("/materials/lots/new", data=receipt(app, **overrides), content_type="multipart/form-data")


def received_code(response: Any) -> str:
    assert response.status_code == 302, page_text(response)
    return response.headers["Location"].rsplit("/", 1)[-1]


@pytest.fixture
def tech(login: Any, users: Any, inventory: Any) -> FlaskClient:
    return login("tech1")


# --- the catalogue -------------------------------------------------------------------------------

def test_a_supervisor_adds_an_item_to_the_catalogue(app, login, users, inventory):
    client = login("super1")
    data = {"name": "Human AB serum", "material": "serum", "supplier": "Demo Sera", "catalogue_number": "HS-100",
            "storage": "-20 °C", "unit": "mL", "needs_qc": "y"}
    assert client.post("/materials/items/new", data=data).status_code == 302
    page = page_text(client.get("/materials/"))
    assert "Human AB serum" in page and "HS-100" in page
    with app.app_context():
        item = db.session.scalar(select(MaterialItem).where(MaterialItem.name == "Human AB serum"))
        assert (item.material, item.unit, item.needs_qc) == ("serum", "mL", True)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("name", "MACS GMP T Cell TransAct", "MACS GMP T Cell TransAct is already in the catalogue."),
    ("name", "", "Enter the item name."),
    ("material", "Trans Act!", "lower-case letters, digits and underscores"),
    ("unit", "", "Enter the unit"),
])
def test_a_bad_item_is_refused_next_to_its_field(app, login, users, inventory, field, value, message):
    client = login("qa1")
    data = {"name": "Human AB serum", "material": "serum", "supplier": "Demo Sera", "catalogue_number": "HS-100",
            "storage": "-20 °C", "unit": "mL", field: value}
    before = counts(app)
    response = client.post("/materials/items/new", data=data)
    assert response.status_code == 422
    assert message in page_text(response)
    assert counts(app) == before


def test_a_technician_cannot_add_items(app, tech):
    assert tech.get("/materials/items/new").status_code == 403


# --- receiving ----------------------------------------------------------------------------------

def test_a_received_lot_is_quarantined_with_its_own_code_certificate_and_label(app, tech):
    code = received_code(receive(app, tech))
    assert parse_code(code, CodeKind.LOT)  # its own code, with a check character
    row = lot_row(app, code)
    assert (row["status"], row["balance"], row["unit"], row["lot_number"]) == ("quarantined", 5.0, "mL", "TRA-2701")
    page = page_text(tech.get(f"/materials/lots/{code}"))
    assert "QUARANTINED" in page and "coa-TRA-2701.pdf" in page and row["sha256"] in page
    with app.app_context():
        lot = find_lot(code.replace("-", "").lower())  # typed without hyphens, in lower case
        assert lot is not None and lot.code == code
        download = f"/attachments/{lot.certificate.id}/{lot.certificate.filename}"
    assert tech.get(download).data == PDF
    label = tech.get(f"/materials/lots/{code}/label.pdf")
    assert label.status_code == 200 and label.mimetype == "application/pdf"
    assert qr_texts(label.data, 300) == [code]
    text = text_of(label.data)
    assert "MATERIAL LOT" in text and "TRA-2701" in text and "QUARANTINED" in text
    with app.app_context():  # each print is on record: who, when, the PDF's SHA-256
        printed = db.session.scalars(select(Download).where(Download.kind == "lot_label")).one()
        assert (printed.detail, printed.downloaded_by.username) == (code, "tech1")
        assert printed.digest == hashlib.sha256(label.data).hexdigest()
    assert re.search(r"Tess Technician\s*</td>\s*<td>Label printed", tech.get(f"/materials/lots/{code}").get_data(as_text=True))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("item_id", "999999", "Choose the item received from the catalogue."),
    ("lot_number", "TRA-2610", "Lot TRA-2610 of MACS GMP T Cell TransAct was already received."),
    ("lot_number", "", "Enter the supplier's lot number."),
    ("quantity", "-5", "Quantity received must be more than 0."),
    ("quantity", "0", "Quantity received must be more than 0."),
    ("quantity", "5e9", "Quantity received 5e9 is more than 1,000,000: check it."),
    ("quantity", "nan", "Quantity received must be more than 0."),
    ("quantity", "five", "is not a number."),
    ("container_count", "2.5", "Number of containers is a whole number."),
    ("expiry_date", (date.today() - timedelta(days=1)).isoformat(), "is not after the date received"),
    ("expiry_date", "31/12/2027", "Enter the expiry date as a date (YYYY-MM-DD)."),
    ("received_on", (date.today() + timedelta(days=2)).isoformat(), "The date received cannot be in the future."),
    ("titer", "-1", "Titer must be more than 0."),
    ("certificate", (BytesIO(b"just some text"), "coa.txt"), "coa.txt is not a PDF"),
    ("certificate", (BytesIO(b""), ""), "Attach the supplier's certificate of analysis"),
])
def test_a_bad_receipt_is_refused_next_to_its_field_and_nothing_is_written(app, tech, field, value, message):
    before = counts(app)
    response = receive(app, tech, **{field: value})
    assert response.status_code == 422
    page = page_text(response)
    assert message in page
    assert counts(app) == before


def test_a_certificate_over_the_size_limit_is_refused(app, tech):
    app.config["ATTACHMENT_MAX_BYTES"] = 1024
    before = counts(app)
    response = receive(app, tech, certificate=(BytesIO(PDF + b"0" * 2048), "big.pdf"))
    assert response.status_code == 422
    assert "The file is larger than" in page_text(response)
    assert counts(app) == before


def test_qc_and_qa_cannot_receive_and_a_technician_cannot_release(app, login, users, inventory):
    assert login("qc1").get("/materials/lots/new").status_code == 403
    code = demo_lot(app, "LV-CD19-0043")
    client = login("tech1")
    response = client.post(f"/materials/lots/{code}/decision", data={"decision": "released", **signature("tech1")})
    assert response.status_code == 403
    assert lot_row(app, code)["status"] == "quarantined"


# --- incoming QC and release --------------------------------------------------------------------

def check(client: FlaskClient, code: str, **overrides: str) -> Any:
    data = {"identity_ok": "y", "condition_ok": "y", "certificate_ok": "y", "comment": "", **overrides}
    return client.post(f"/materials/lots/{code}/check", data={k: v for k, v in data.items() if v != "n"})


def decide(app: Flask, client: FlaskClient, code: str, decision: str, **extra: str) -> Any:
    return client.post(f"/materials/lots/{code}/decision",
                       data={"decision": decision, **signature(signed_in(app, client)), **extra})


def test_qc_checks_and_qa_releases_the_lot_with_a_signature(app, login, users, inventory, runner):
    code = received_code(receive(app, login("tech1")))
    assert check(login("qc1"), code).status_code == 302
    qa = login("qa1")
    response = decide(app, qa, code, "released")
    assert response.status_code == 302, page_text(response)
    assert lot_row(app, code)["status"] == "released"
    page = page_text(qa.get(f"/materials/lots/{code}"))
    assert "released for use" in page and "Quentin Assurance" in page and "RELEASED" in page
    with app.app_context():
        [decision] = find_lot(code).decisions
        [sig] = db.session.scalars(select(Signature).where(Signature.record_type == "lot_decision",
                                                           Signature.record_id == decision.id)).all()
        assert (sig.meaning, sig.signer_id, sig.batch_id) == ("released for use", user("qa1").id, None)
    result = runner.invoke(args=["verify-audit"])
    assert result.exit_code == 0, result.output


def test_releasing_without_the_incoming_check_is_refused(app, login, users, inventory):
    code = received_code(receive(app, login("tech1")))
    qa = login("qa1")
    before = counts(app)
    response = decide(app, qa, code, "released")
    assert response.status_code == 422
    assert f"Lot {code} has no incoming QC check yet: QC must record it before the lot is released." \
        in page_text(response)
    assert counts(app) == before
    assert lot_row(app, code)["status"] == "quarantined"


def test_a_failed_check_needs_a_comment_and_blocks_release_then_qa_rejects(app, login, users, inventory):
    code = received_code(receive(app, login("tech1")))
    qc = login("qc1")
    before = counts(app)
    response = check(qc, code, condition_ok="n")
    assert response.status_code == 422 and "Say what was found wrong." in page_text(response)
    assert counts(app) == before
    assert check(qc, code, condition_ok="n", comment="One vial cracked.").status_code == 302
    qa = login("qa1")
    response = decide(app, qa, code, "released")
    assert response.status_code == 422 and "failed (One vial cracked.)" in page_text(response)
    response = decide(app, qa, code, "rejected")
    assert response.status_code == 422 and "Say why the lot is rejected." in page_text(response)
    assert decide(app, qa, code, "rejected", reason="Damaged in transit.").status_code == 302
    assert lot_row(app, code)["status"] == "rejected"


@pytest.mark.requirements("PROC-13")
def test_the_person_who_received_a_lot_cannot_release_it(app, users, inventory):
    from lab.exceptions import NotAllowed
    from lab.services.materials import decide_lot
    from lab.services.signatures import Credentials
    from tests.factories import PASSWORD

    with app.app_context():
        lot = find_lot(demo_lot(app, "LV-CD19-0043"))
        with audit.action("test.setup", actor=None):
            lot.received_by_id = user("qa1").id  # as if QA had received it
        with pytest.raises(NotAllowed, match="someone else"):
            decide_lot(lot, "released", reason="", actor=user("qa1"), credentials=Credentials(PASSWORD))
        db.session.rollback()


# --- at the steps -------------------------------------------------------------------------------

def test_each_use_lowers_the_balance_and_where_used_lists_it(app, make_batch, login):
    number = make_batch(until="expansion")
    code = demo_lot(app, "TRA-2610")
    assert lot_row(app, code)["balance"] == 198.0  # 200 mL received, 2 mL used at activation
    assert lot_row(app, demo_lot(app, "LV-CD19-0042"))["balance"] == 492.5  # 7.5 mL of vector
    assert lot_row(app, demo_lot(app, "TS520-2609"))["balance"] == 39.0  # one tubing set
    client = login("auditor1")
    page = page_text(client.get(f"/materials/lots/{code}"))
    assert number in page and "Activation (day 0)" in page and "Used 2 mL for batch" in page
    response = client.get(f"/materials/lots/{code}/where-used.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["batch"], r["step"], r["field"], r["quantity"], r["unit"], r["released"]) for r in rows] == [
        (number, "Activation (day 0)", "TransAct lot", "2", "mL", "no")]


def test_using_more_than_is_left_is_refused_with_the_balance(app, make_batch, login):
    number = make_batch(until="activation")
    code = demo_lot(app, "TRA-2610")
    with app.app_context(), audit.action("test.setup", actor=None):
        find_lot(code).balance = 1.5
        db.session.commit()
    client = login("tech1")
    before = counts(app)
    response = post_step(app, client, number, "activation")
    assert response.status_code == 422
    assert f"Lot {code} has only 1.5 mL left; this entry uses 2 mL." in page_text(response)
    assert counts(app) == before
    assert lot_row(app, code)["balance"] == 1.5


def test_a_used_up_lot_is_refused(app, make_batch, login):
    number = make_batch(until="activation")
    code = demo_lot(app, "IL715-2609")
    with app.app_context(), audit.action("test.setup", actor=None):
        find_lot(code).balance = 0
        db.session.commit()
    response = post_step(app, login("tech1"), number, "activation")
    assert response.status_code == 422
    assert f"Lot {code} is used up: none of it is left." in page_text(response)


def test_transduction_takes_the_titer_from_the_vector_lot_not_from_the_form(app, make_batch, login):
    number = make_batch(until="transduction", days_ago=3)
    response = post_step(app, login("tech1"), number, "transduction", titer_tu_per_ml="9e9")
    assert response.status_code == 302, page_text(response)
    with app.app_context():
        [entry] = entries(number, "transduction")
        assert current_values(entry)["titer_tu_per_ml"].number == 1.0e8


def test_a_vector_lot_without_a_titer_is_refused_at_transduction(app, make_batch, login):
    number = make_batch(until="transduction", days_ago=3)
    code = demo_lot(app, "LV-CD19-0042")
    with app.app_context(), audit.action("test.setup", actor=None):
        find_lot(code).titer = None
        db.session.commit()
    response = post_step(app, login("tech1"), number, "transduction")
    assert response.status_code == 422
    assert f"Lot {code} has no vector titer on record" in page_text(response)


# --- recall -------------------------------------------------------------------------------------

def test_a_recall_holds_open_batches_with_a_deviation_and_lists_released_ones(app, make_batch, login):
    released = make_batch(ref="SLE-01")
    record_results(app, released)
    close_all_deviations(app, released)
    release(app, released)
    open_batch = make_batch(until="harvest", ref="SLE-02", days_ago=10)
    code = demo_lot(app, "TRA-2610")
    qa = login("qa1")
    before = counts(app)
    response = qa.post(f"/materials/lots/{code}/recall", data={"reason": "", **signature("qa1")})
    assert response.status_code == 422 and "Say why the lot is recalled" in page_text(response)
    assert counts(app) == before
    response = qa.post(f"/materials/lots/{code}/recall",
                       data={"reason": "Supplier recall notice RN-77: endotoxin.", **signature("qa1")},
                       follow_redirects=True)
    assert response.status_code == 200
    page = page_text(response)
    assert f"Open batches put on hold, each with a deviation: {open_batch}." in page
    assert f"Released batches that used it, for your decision: {released}." in page
    assert lot_row(app, code)["status"] == "recalled"
    with app.app_context():
        held, kept = get_batch(open_batch), get_batch(released)
        assert held.state == "on_hold" and kept.state == "released"
        [deviation] = [d for d in held.deviations if d.source == "recall"]
        assert code in deviation.title and "RN-77" in deviation.description
        assert not [d for d in kept.deviations if d.source == "recall"]
        assert db.session.scalar(select(func.count()).select_from(Signature).where(
            Signature.meaning == "recalled")) == 1
    # No step takes it any more.
    third = make_batch(until="activation", ref="SLE-03")
    response = post_step(app, login("tech1"), third, "activation")
    assert response.status_code == 422
    assert f"Lot {code} has status 'recalled': only released lots may be used." in page_text(response)


def test_only_a_released_lot_is_recalled(app, login, users, inventory):
    code = demo_lot(app, "LV-CD19-0043")
    qa = login("qa1")
    before = counts(app)
    response = qa.post(f"/materials/lots/{code}/recall", data={"reason": "Notice.", **signature("qa1")})
    assert response.status_code == 422
    assert f"Lot {code} is quarantined: only a released lot is recalled." in page_text(response)
    assert counts(app) == before


# --- pages and codes ----------------------------------------------------------------------------

def test_the_materials_page_shows_status_and_balance_and_inventory_links_it(app, tech):
    page = page_text(tech.get("/materials/"))
    for lot_number in ("TRA-2610", "TEX-2501", "LV-CD19-0043", "CD4-2612"):
        assert demo_lot(app, lot_number) in page
    assert "quarantined" in page and "rejected" in page and "EXPIRED" in page and "200 mL" in page
    assert "/materials/" in page_text(tech.get("/inventory/"))


@pytest.mark.parametrize("code", ["NOPE-1", "L-A9999-26-000001-0", "x" * 80])
def test_an_unknown_or_malformed_lot_code_is_404(app, tech, code):
    response = tech.get(f"/materials/lots/{code}")
    assert response.status_code == 404
    text = page_text(response)
    assert "No material lot" in text or "check character" in text
    assert tech.get(f"/materials/lots/{code}/where-used.csv").status_code == 404


def test_a_lot_label_scanned_into_the_search_box_says_where_it_belongs(app, tech):
    code = demo_lot(app, "TEX-2610")
    response = tech.get(f"/scan?code={code}")
    assert response.status_code == 400
    assert f"{code} is a material lot (TexMACS GMP medium" in page_text(response)


def test_the_demo_lots_have_certificates_and_were_released_with_signatures(app, users, inventory):
    with app.app_context():
        lots = {lot.lot_number: lot for lot in db.session.scalars(select(MaterialLot))}
        assert {n: lots[n].status for n in ("TEX-2501", "LV-CD19-0043", "CD4-2612", "TRA-2610")} == {
            "TEX-2501": "released", "LV-CD19-0043": "quarantined", "CD4-2612": "rejected", "TRA-2610": "released"}
        assert lots["TEX-2501"].expiry_date < datetime.now(UTC).date()
        assert all(lot.certificate is not None for lot in lots.values())
        assert lots["LV-CD19-0042"].titer == 1.0e8


def test_an_expired_lot_cannot_be_released_and_a_decided_lot_is_not_decided_again(app, login, users, inventory):
    yesterday = date.today() - timedelta(days=1)
    code = received_code(receive(app, login("tech1"), received_on=(yesterday - timedelta(days=200)).isoformat(),
                                 expiry_date=yesterday.isoformat()))
    assert check(login("qc1"), code).status_code == 302
    qa = login("qa1")
    before = counts(app)
    response = decide(app, qa, code, "released")
    assert response.status_code == 422
    assert f"Lot {code} expired on {yesterday.isoformat()}: it cannot be released." in page_text(response)
    assert counts(app) == before
    assert decide(app, qa, code, "rejected", reason="Expired on arrival.").status_code == 302
    before = counts(app)
    response = decide(app, qa, code, "released")
    assert response.status_code == 422
    assert f"Lot {code} is rejected, not in quarantine: its disposition is already decided." in page_text(response)
    qc = login("qc1")
    before = counts(app)
    response = check(qc, code)
    assert response.status_code == 422 and "only a quarantined lot is checked" in page_text(response)
    assert counts(app) == before
