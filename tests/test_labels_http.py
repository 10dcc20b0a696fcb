"""Labels as the lab prints them: read back (QR decoded at thermal-printer resolutions, text
extracted), fed to the scan box, and every print on record."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import AuditEvent, Container, LabelPrint
from lab.services.labels import label_data
from labels.pdf import layout_sheet
from tests.factories import get_batch, page_text
from tests.readback import THERMAL_DPIS, bilevel, decode, pages, qr_texts, text_of

pytestmark = pytest.mark.requirements("LBL-3")


def containers_of(app: Flask, number: str) -> list[tuple[str, str, int]]:
    """(code, kind, count) of each container of the batch."""
    with app.app_context():
        return [(c.code, c.kind, c.count) for c in get_batch(number).containers]


def prints(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(LabelPrint)) or 0


def land(client, payload: str) -> str:
    """Where the scan box sends ``payload``: the path after following every redirect."""
    response = client.get("/scan", query_string={"code": payload}, follow_redirects=True)
    assert response.status_code == 200, page_text(response)[:2000]
    return response.request.path + "?" + response.request.query_string.decode()


@pytest.mark.requirements("LBL-4")
@pytest.mark.parametrize("dpi", THERMAL_DPIS)
def test_every_label_decodes_to_its_container_and_the_scan_lands_on_it(app, two_bag_batch, login, dpi):
    client = login("tech1")
    codes = containers_of(app, two_bag_batch)
    assert [kind for _, kind, _ in codes].count("product_bag") == 2
    for code, kind, _ in codes:
        response = client.get(f"/containers/{code}/label.pdf", query_string={"reason": "test run"})
        assert response.status_code == 200 and response.mimetype == "application/pdf"
        for image in pages(response.data, dpi):
            for picture in (image, bilevel(image)):  # also as a thermal head prints it
                assert [b.text for b in decode(picture)] == [code], (code, dpi)
        landed = land(client, code)
        assert code in landed  # the container's page, or the step that needs it with the code filled in


@pytest.mark.requirements("LBL-1")
def test_product_bag_labels_carry_identity_and_regulatory_text(app, two_bag_batch, login):
    client = login("tech1")
    with app.app_context():
        batch = get_batch(two_bag_batch)
        bags = [c.code for c in batch.containers if c.kind == "product_bag"]
        coi, patient_ref = batch.patient.coi, batch.patient.patient_ref
    text = text_of(client.get(f"/containers/{bags[1]}/label.pdf").data)
    for expected in (bags[1], coi, two_bag_batch, "FOR AUTOLOGOUS USE ONLY", "Bag 2 of 2", patient_ref, "mL"):
        assert expected in text, expected
    assert "REPRINT" not in text


@pytest.mark.requirements("LBL-5")
def test_a_reprint_needs_a_reason_and_says_reprint(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("tech1")
    (code, _, _), = containers_of(app, number)  # the apheresis bag, printed by the recorder
    before = prints(app)
    with app.app_context():
        audit_before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    refused = client.get(f"/containers/{code}/label.pdf")
    assert refused.status_code == 422
    assert "a reprint needs a reason" in page_text(refused)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == audit_before
    assert prints(app) == before
    response = client.get(f"/containers/{code}/label.pdf", query_string={"reason": "Label smudged by condensation"})
    assert response.status_code == 200
    assert "REPRINT" in text_of(response.data)
    with app.app_context():
        last = db.session.scalars(select(LabelPrint).order_by(LabelPrint.id.desc())).first()
        assert (last.is_reprint, last.reason, last.printed_by.username) == (True, "Label smudged by condensation", "tech1")
    page = page_text(client.get(f"/batches/{number}"))
    row = page[page.index(code, page.index("Containers and labels")):]
    assert "Apheresis bag" in row[:400]
    assert "Label smudged by condensation" in page_text(client.get(f"/containers/{code}"))


@pytest.mark.requirements("LBL-5")
def test_printed_and_reprinted_counts_show_on_the_batch_page(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("tech1")
    (code, _, _), = containers_of(app, number)
    for reason in ("smudged", "torn"):
        assert client.get(f"/containers/{code}/label.zpl", query_string={"reason": reason}).status_code == 200
    with app.app_context():
        container = db.session.scalar(select(Container).where(Container.code == code))
        assert [(p.is_reprint, p.output) for p in container.prints] == [(False, "pdf"), (True, "zpl"), (True, "zpl")]
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    table = page[page.index('id="containers"'):]
    assert '<td>1</td>\n        <td><span class="flag">2</span></td>' in table


def test_zpl_carries_the_code_in_its_qr_and_the_identity_text(app, make_batch, login):
    number = make_batch(until="enrichment")
    client = login("tech1")
    (code, _, _), = containers_of(app, number)
    zpl = client.get(f"/containers/{code}/label.zpl", query_string={"reason": "second printer"}).get_data(as_text=True)
    assert zpl.startswith("^XA") and zpl.rstrip().endswith("^XZ")
    assert f"^FDMA,{code}^FS" in zpl or f"^FDQA,{code}^FS" in zpl
    assert number in zpl and "REPRINT" in zpl


@pytest.mark.requirements("LBL-4")
@pytest.mark.parametrize("paper", ["A4", "Letter"])
def test_the_batch_sheet_holds_every_label_and_each_decodes(app, two_bag_batch, login, paper):
    client = login("tech1")
    codes = [code for code, _, _ in containers_of(app, two_bag_batch)]
    response = client.get(f"/batches/{two_bag_batch}/labels.pdf",
                          query_string={"paper": paper, "reason": "sheet for the fill"})
    assert response.status_code == 200
    with app.app_context():
        batch = get_batch(two_bag_batch)
        labels = [label_data(c, reprint=True, now=datetime.now(UTC)) for c in batch.containers]
    placements = layout_sheet(labels, paper=paper)
    images = pages(response.data, 203)
    found = []
    for placement in placements:  # one crop per label: whole-sheet decoding is not what a scanner does
        image = images[placement.page]
        scale = 203 / 72
        box = placement.box  # points, origin bottom left
        box = (box.x * scale, image.height - (box.y + box.height) * scale,
               (box.x + box.width) * scale, image.height - box.y * scale)
        found += [b.text for b in decode(image.crop(tuple(round(v) for v in box)))]
    assert sorted(found) == sorted(codes)
    assert sorted(set(qr_texts(response.data, 300))) <= sorted(codes)
    for code in codes:
        assert code in land(client, code)


def test_printing_is_refused_to_roles_that_do_not_print(app, make_batch, login):
    number = make_batch(until="enrichment")
    (code, _, _), = containers_of(app, number)
    before = prints(app)
    client = login("auditor1")
    for url in (f"/containers/{code}/label.pdf?reason=x", f"/containers/{code}/label.zpl?reason=x",
                f"/batches/{number}/labels.pdf?reason=x"):
        assert client.get(url).status_code == 403, url
    assert prints(app) == before


@pytest.mark.parametrize(("payload", "status", "message"), [
    ("C-A9999-26-999999-0", 400, "check character does not match"),
    ("ABC-123", 400, "is not a CellTrail code"),
    ("https://other.example.org/item/42", 400, "is not a CellTrail code"),
    ("X" * 5000, 400, "too long"),
    ("\x01\x02binary", 400, "control character (U+0001)"),  # refused before the scan box sees it
])
def test_the_scan_box_refuses_what_is_no_container(app, make_batch, login, payload, status, message):
    make_batch(until="enrichment")
    client = login("tech1")
    response = client.get("/scan", query_string={"code": payload})
    assert response.status_code == status
    assert message in page_text(response)


def test_an_unknown_container_is_404_everywhere(app, users, login):
    from workflows.codes import CodeKind, make_code

    code = str(make_code(CodeKind.CONTAINER, "A9999", 2026, 4242))
    client = login("tech1")
    for url in (f"/scan?code={code}", f"/containers/{code}", f"/containers/{code}/label.pdf"):
        response = client.get(url)
        assert response.status_code == 404 and "No container" in page_text(response), url
    assert client.get("/containers/C-A9999-26-004242-0").status_code == 400


def test_a_label_whose_text_cannot_fit_is_refused_with_the_reason_and_no_print_is_recorded(app, make_batch, login):
    number = make_batch(until="enrichment")
    (code, _, _), = containers_of(app, number)
    app.config["FACILITY_ADDRESS"] = ["Building-" + "X" * 120]  # one word wider than any label
    client = login("tech1")
    before = prints(app)
    for url in (f"/containers/{code}/label.pdf", f"/containers/{code}/label.zpl", f"/batches/{number}/labels.pdf"):
        response = client.get(url, query_string={"reason": "new address"})
        assert response.status_code == 422, url
        assert "cannot be printed" in page_text(response) and "wider than the label" in page_text(response), url
    assert prints(app) == before
