"""The scanner's focus and refusals next to the field (issue 14, items 4 and 5), in a real browser
at 1280 × 800 and 390 × 844: a step form opens with the focus in its first empty field, a scan
moves it to the next empty one, a refused scan in the header box is said under the box with
the focus kept there, and a reprint without a reason is answered next to its reason."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, select

from lab.demo import CABINET
from lab.extensions import db
from lab.models import LabelPrint
from tests.browser.bench import SCAN_BOX, Bench, Lab, Person

WIDTHS = [(1280, 800), (390, 844)]
TRANSDUCTION = "Save Lentiviral transduction"


def focused(page: Page) -> str:
    return str(page.evaluate("document.activeElement && document.activeElement.id"))


def fits_the_window(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def label_prints(lab: Lab) -> int:
    with lab.app.app_context():
        return db.session.scalar(select(func.count()).select_from(LabelPrint)) or 0


def scan_refused(person: Person, code: str) -> None:
    """A wedge scan into the header's scan box that the server refuses: the page stays."""
    box = person.page.get_by_label(SCAN_BOX)
    box.click()
    box.press_sequentially(code)
    box.press("Enter")


@pytest.mark.parametrize(("width", "height"), WIDTHS)
def test_the_focus_follows_the_scanner(bench: Bench, lab: Lab, width: int, height: int) -> None:
    number, bag = lab.batch("SLE-10"), lab.container("SLE-10", "culture_bag")
    tech1 = bench.person("tech1")
    page = tech1.page
    page.set_viewport_size({"width": width, "height": height})
    tech1.sign_in()

    page.goto(f"/batches/{number}/steps/transduction")  # the form opens: its first empty field
    expect(page.get_by_label("Culture bag")).to_be_focused()
    tech1.shot(f"form-opened-{width}")

    page.goto("/")
    tech1.scan(bag, f"culture-bag-scanned-{width}")  # the scan fills the culture bag: the next empty field
    expect(page.get_by_label("Culture bag")).to_have_value(bag)
    expect(page.get_by_label("Vector lot")).to_be_focused()

    # Enter after a lot's code goes to the next EMPTY field: past the titer (taken from the lot)
    # and the volume already typed, to the cell count.
    page.get_by_label("Vector volume added").fill("7.5")
    form_url = page.url
    tech1.wedge("Vector lot", lab.lot("LV-CD19-0042"))
    expect(page.get_by_label("Viable cells at transduction")).to_be_focused()
    page.get_by_label("Viable cells at transduction").fill("1.0e8")
    tech1.wedge("Biosafety cabinet", lab.equipment(CABINET))
    assert focused(page) in ("username", "password")  # the signature, not the optional comment
    assert page.url == form_url and lab.entries("SLE-10", "transduction") == []
    tech1.shot(f"wedge-moved-on-{width}")

    # An expired lot scanned into the scan box: refused under the box, the page and what was
    # typed in the form stay, the box keeps the focus with its text selected for the next scan.
    expired = lab.lot("TEX-2501")
    scan_refused(tech1, expired)
    refusal = page.get_by_role("alert").filter(has_text="EXPIRED")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text(expired)
    assert page.url == form_url
    assert focused(page) == "scan-code"
    assert page.evaluate("[document.activeElement.selectionStart, document.activeElement.selectionEnd]") == [
        0, len(expired)]
    expect(page.get_by_label("Vector volume added")).to_have_value("7.5")
    box, said = page.get_by_label(SCAN_BOX).bounding_box(), refusal.bounding_box()
    assert box and said and said["y"] >= box["y"] + box["height"] - 1  # under the box
    assert fits_the_window(page), page.evaluate("document.documentElement.scrollWidth")
    tech1.shot(f"expired-lot-refused-{width}")

    quarantined = lab.lot("LV-CD19-0043")  # the next scan replaces the selected text
    page.get_by_label(SCAN_BOX).press_sequentially(quarantined)
    expect(page.get_by_role("alert").filter(has_text="EXPIRED")).to_have_count(0)
    page.get_by_label(SCAN_BOX).press("Enter")
    expect(page.get_by_role("alert").filter(has_text="QUARANTINED")).to_contain_text(quarantined)
    assert focused(page) == "scan-code" and page.url == form_url

    with page.expect_event("load"):  # a good scan opens what it names
        page.get_by_label(SCAN_BOX).press_sequentially(number)
        page.get_by_label(SCAN_BOX).press("Enter")
    expect(page).to_have_url(re.compile(rf"/batches/{number}$"))
    tech1.shot(f"good-scan-opened-{width}")


@pytest.mark.parametrize(("width", "height"), WIDTHS)
def test_a_refused_step_form_comes_back_with_the_focus_on_the_refused_field(
        bench: Bench, lab: Lab, width: int, height: int) -> None:
    number, bag = lab.batch("SLE-10"), lab.container("SLE-10", "culture_bag")
    tech1 = bench.person("tech1")
    page = tech1.page
    page.set_viewport_size({"width": width, "height": height})
    tech1.sign_in(then=f"/batches/{number}/steps/transduction")
    tech1.wedge("Culture bag", bag)
    tech1.wedge("Vector lot", lab.lot("LV-CD19-0043"))  # quarantined
    page.get_by_label("Vector volume added").fill("7.5")
    page.get_by_label("Viable cells at transduction").fill("1.0e8")
    tech1.wedge("Biosafety cabinet", lab.equipment(CABINET))
    tech1.sign()
    tech1.submit(TRANSDUCTION)
    vector = page.get_by_label("Vector lot")
    expect(vector).to_have_accessible_description(re.compile("QUARANTINED"))
    expect(vector).to_be_focused()
    assert lab.entries("SLE-10", "transduction") == []
    assert fits_the_window(page)
    tech1.shot(f"quarantined-lot-refused-{width}")


@pytest.mark.parametrize(("width", "height"), WIDTHS)
def test_a_reprint_without_a_reason_is_answered_next_to_the_reason(
        bench: Bench, lab: Lab, width: int, height: int) -> None:
    number, bag = lab.batch("SLE-10"), lab.container("SLE-10", "culture_bag")
    tech1 = bench.person("tech1")
    page = tech1.page
    page.set_viewport_size({"width": width, "height": height})
    tech1.sign_in(then=f"/batches/{number}")
    before = label_prints(lab)

    tech1.submit("Print sheet (PDF)")  # no reason, and the labels were printed before
    reason = page.get_by_label("Reason, if any label is a reprint")
    expect(reason).to_have_accessible_description(re.compile("a reprint needs a reason"))
    expect(reason).to_be_focused()
    expect(reason).to_be_in_viewport()
    expect(page.get_by_role("heading", name=re.compile(rf"^Batch {number}"))).to_have_count(1)
    assert fits_the_window(page)
    tech1.shot(f"sheet-refused-{width}")

    page.goto(f"/containers/{bag}")
    page.get_by_label("Reason for the reprint").fill("   ")  # blank: passes `required`, not the server
    tech1.submit("Reprint (PDF)")
    reason = page.get_by_label("Reason for the reprint")
    expect(reason).to_have_accessible_description(re.compile("a reprint needs a reason"))
    expect(reason).to_be_focused()
    assert fits_the_window(page)
    tech1.shot(f"reprint-refused-{width}")
    assert label_prints(lab) == before


def test_without_script_a_refused_scan_keeps_the_scan_box_focused(bench: Bench, lab: Lab) -> None:
    tech1 = bench.person("tech1", javascript=False)
    page = tech1.page
    tech1.sign_in()
    expired = lab.lot("TEX-2501")
    tech1.scan(expired, "expired-lot-refused-without-script")
    expect(page.get_by_role("main")).to_contain_text(f"Scanned: {expired}")
    expect(page.get_by_role("main")).to_contain_text("EXPIRED")
    expect(page.get_by_label(SCAN_BOX)).to_be_focused()
    with page.expect_event("load"):
        page.get_by_label(SCAN_BOX).press_sequentially(lab.batch("SLE-10"))
        page.get_by_label(SCAN_BOX).press("Enter")
    expect(page).to_have_url(re.compile(rf"/batches/{lab.batch('SLE-10')}$"))
