"""The step form in a real browser, on the demo lab: tech1 opens the daily count of SLE-03, a
batch mid-expansion, at 1280 × 800 and at 390 × 844. Under each counted field is its value in
the last count with its culture day, and at the top of the form today's culture day; the
document is no wider than the window. SLE-10's transduction form says it is due now. Screenshots of both widths stay in the test artifacts."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.bench import Bench


def fits_the_window(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def below(page: Page, upper: str, lower: str) -> bool:
    """Whether the element ``lower`` starts below the top of ``upper`` (its field's input)."""
    return bool(page.evaluate(
        "([a, b]) => document.querySelector(b).getBoundingClientRect().top"
        " >= document.querySelector(a).getBoundingClientRect().bottom - 1", [upper, lower]))


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_the_count_form_shows_the_last_count_and_the_culture_day(bench: Bench, width: int, height: int) -> None:
    tech = bench.person("tech1")
    page = tech.page
    page.set_viewport_size({"width": width, "height": height})
    tech.sign_in()
    days = bench.lab.culture_days("SLE-03")
    assert days, "SLE-03 has daily counts"
    page.goto(f"/batches/{bench.lab.batch('SLE-03')}/steps/expansion")
    expect(page.get_by_role("heading", name=re.compile("Expansion"))).to_be_visible()

    top = page.locator("#step-when")
    expect(top).to_be_visible()
    expect(top).to_contain_text(re.compile(r"Today is culture day \d+ \(day 0: Activation, "))
    expect(top).to_contain_text(f"Last entry: day {days[-1]}, ")
    expect(top).to_contain_text("Fold expansion since seeding")
    cells = page.locator("#field-viable_cells-previous")
    expect(cells).to_be_visible()
    expect(cells).to_contain_text(re.compile(rf"^Previous: .+ cells on day {days[-1]} \("))
    expect(page.locator("#field-viability_pct-previous")).to_contain_text(re.compile(rf"% on day {days[-1]} "))
    expect(page.locator("#field-culture_day-previous")).to_have_text(re.compile(rf"^Previous: day {days[-1]} \("))
    assert below(page, "#field-viable_cells", "#field-viable_cells-previous")
    # The day line comes before the first field.
    assert below(page, "#step-when", "#field-culture_bag")
    tech.shot(f"count-form-{width}")
    cells.scroll_into_view_if_needed()
    tech.shot(f"count-form-previous-{width}")
    assert fits_the_window(page), page.evaluate("document.documentElement.scrollWidth")

    # SLE-10's transduction is due now: its window, judged as the dashboard judges it.
    page.goto(f"/batches/{bench.lab.batch('SLE-10')}/steps/transduction")
    top = page.locator("#step-when")
    expect(top).to_contain_text("Lentiviral transduction is due on culture day 1–2 after Activation.")
    expect(top).to_contain_text("● Due now")
    expect(page.locator(".hint.previous")).to_have_count(0)  # no earlier entry of this step, no link made up
    tech.shot(f"transduction-form-{width}")
    assert fits_the_window(page), page.evaluate("document.documentElement.scrollWidth")
