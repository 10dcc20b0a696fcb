"""The QC results and disposition pages in a real browser, on the demo lab, at 1280 × 800 and
390 × 844: the document is no wider than the window; the results are one table, far shorter
than the twelve cards it replaces (3,874 px at 1280 on SLE-08), with a result entered and
signed in its row, a refusal answered in that row; the disposition offers only the decisions
possible now, each naming its signature meaning, and works without JavaScript."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from lab.extensions import db
from lab.models import Batch, User
from lab.services.progress import definition_for
from lab.services.release_status import current_results
from lab.services.results import correct_result
from lab.services.signatures import Credentials
from tests.browser.bench import SIGNING_PASSWORD, Bench, message
from tests.factories import PASSWORD

SIZES = [(1280, 800), (390, 844)]


def release_tests(bench: Bench, ref: str) -> list[str]:
    with bench.lab.app.app_context():
        batch = db.session.scalars(select(Batch).where(Batch.batch_number == bench.lab.batch(ref))).one()
        return [t.key for t in definition_for(batch).release_tests]


def fits_the_window(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_qc_enters_a_result_in_its_row_of_the_results_table(bench: Bench, width: int, height: int) -> None:
    qc = bench.person("qc1")
    page = qc.page
    page.set_viewport_size({"width": width, "height": height})
    qc.sign_in()
    number = bench.lab.batch("SLE-08")  # results in but the vector copy number; sterility interim
    page.goto(f"/batches/{number}/results")
    table = page.locator("table.qc-results")
    expect(table).to_have_count(1)
    expect(table.locator("tbody tr")).to_have_count(len(release_tests(bench, "SLE-08")))
    qc.shot(f"results-{width}")
    assert fits_the_window(page), page.evaluate("document.documentElement.scrollWidth")
    height_now = page.evaluate("document.documentElement.scrollHeight")
    if width == 1280:
        assert height_now < 2000, height_now

    row = page.locator("#test-vcn")
    row.get_by_label("Result (copies/cell)").fill("12 copies")
    username = row.get_by_label("Username", exact=True)
    if username.count():
        username.fill("qc1")
    row.get_by_label(SIGNING_PASSWORD).fill(PASSWORD)
    qc.submit("Save and sign the Vector copy number result")
    row = page.locator("#test-vcn")
    expect(row.locator(".error")).to_contain_text("Vector copy number is entered in copies/cell")
    expect(row.get_by_label("Result (copies/cell)")).to_have_attribute("aria-invalid", "true")
    qc.shot(f"results-refused-in-row-{width}")
    assert fits_the_window(page)
    assert bench.lab.results("SLE-08", "vcn") == []

    row.get_by_label("Result (copies/cell)").fill("2.1")
    if row.get_by_label("Username", exact=True).count():
        row.get_by_label("Username", exact=True).fill("qc1")
    row.get_by_label(SIGNING_PASSWORD).fill(PASSWORD)
    qc.submit("Save and sign the Vector copy number result")
    expect(message(page, "Vector copy number: 2.1 copies/cell meets the specification (< 5 copies/cell).")) \
        .to_be_visible()
    expect(page.locator("#test-vcn")).to_contain_text("2.1 copies/cell")
    expect(page.locator("#test-vcn").get_by_label("Result (copies/cell)")).to_have_count(0)
    qc.shot(f"results-recorded-{width}")
    assert fits_the_window(page)
    assert [(text, verdict, [(who, meaning) for who, meaning, _ in sigs])
            for text, verdict, sigs in bench.lab.results("SLE-08", "vcn")] == [("2.1", "pass", [("qc1", "performed")])]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_qa_is_offered_only_the_decisions_possible_now_even_without_javascript(bench: Bench, width: int,
                                                                               height: int) -> None:
    qa = bench.person("qa1", javascript=False)
    page = qa.page
    page.set_viewport_size({"width": width, "height": height})
    qa.sign_in()
    number = bench.lab.batch("SLE-08")  # in QA review, every result needed in specification
    page.goto(f"/batches/{number}/disposition")
    decisions = page.get_by_role("group", name="Decision").get_by_role("radio")
    expect(decisions).to_have_count(3)
    expect(page.get_by_role("radio", name=re.compile(r"^Release: possible\. Your signature means: approved for release\."))) \
        .to_be_visible()
    expect(page.get_by_role("radio", name=re.compile(r"^Reject: possible\. Your signature means: rejected\."))) \
        .to_be_visible()
    expect(page.get_by_text(re.compile("exceptional", re.IGNORECASE))).to_have_count(0)
    expect(page.get_by_label("Treating physician")).to_have_count(0)
    qa.shot(f"disposition-{width}")
    assert fits_the_window(page), page.evaluate("document.documentElement.scrollWidth")

    page.get_by_role("radio", name=re.compile(r"^Reject\b")).check()
    qa.sign()
    qa.submit("Sign the decision")
    expect(page.locator("#reason-error")).to_contain_text("Give the reason for 'Reject'.")
    expect(page.get_by_role("radio", name=re.compile(r"^Reject\b"))).to_be_checked()
    qa.shot(f"disposition-refused-{width}")
    assert fits_the_window(page)
    assert bench.lab.state("SLE-08") == "qa_review"


def test_an_out_of_specification_result_offers_the_exceptional_release_and_its_fields_on_choosing_it(
        bench: Bench) -> None:
    with bench.lab.app.app_context():  # QC corrects SLE-08's viability to a value out of specification
        batch = db.session.scalars(select(Batch).where(Batch.batch_number == bench.lab.batch("SLE-08"))).one()
        qc1 = db.session.scalars(select(User).where(User.username == "qc1")).one()
        correct_result(batch, current_results(batch)["viability"], "72", reason="Print-out re-read: 72 %.",
                       actor=qc1, credentials=Credentials(PASSWORD))
        db.session.commit()
    qa = bench.person("qa1")
    page = qa.page
    qa.sign_in()
    page.goto(f"/batches/{bench.lab.batch('SLE-08')}/disposition")
    expect(page.get_by_role("group", name="Decision").get_by_role("radio")).to_have_count(3)
    expect(page.get_by_role("radio", name=re.compile(r"^Release\b"))).to_have_count(0)
    expect(page.get_by_text(re.compile(r"^Release: Viability is out of specification: 72 %"))).to_be_visible()
    physician = page.get_by_label("Treating physician")
    expect(physician).to_be_hidden()  # its fields wait until the exceptional release is chosen
    qa.shot("exceptional-offered")
    page.get_by_role("radio", name=re.compile(r"^Exceptional release \(out of specification\): possible\. "
                                              r"Your signature means: approved for release\.")).check()
    expect(page.get_by_role("group", name=re.compile(r"^Exceptional release of Viability 72 % \(specification ≥ 80 %\)")))\
        .to_be_visible()
    expect(physician).to_be_visible()
    qa.shot("exceptional-chosen")
    assert fits_the_window(page)
    page.set_viewport_size({"width": 390, "height": 844})
    qa.shot("exceptional-chosen-390")
    assert fits_the_window(page)
