"""The batch list (/batches) in a real browser, on the demo lab: at 1280 × 800 and at 390 × 844
the document is no wider than the window (the table scrolls inside its own box), no batch
number, patient ID or COI is broken across lines, and a search narrows the list. Screenshots of
both widths stay in the test artifacts."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.bench import Bench


def fits_the_window(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def broken_codes(page: Page) -> list[str]:
    """The codes of the table that the browser laid out on more than one line."""
    return list(page.evaluate(
        "[...document.querySelectorAll('table.batch-list .code')]"
        ".filter(e => e.getClientRects().length > 1).map(e => e.textContent)"))


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_the_batch_list_fits_the_window_and_finds_a_batch(bench: Bench, width: int, height: int) -> None:
    qa = bench.person("qa1")
    page = qa.page
    page.set_viewport_size({"width": width, "height": height})
    qa.sign_in()
    qa.menu("Batches")
    rows = page.locator("table.batch-list tbody tr")
    expect(rows.first).to_be_visible()
    assert rows.count() == len(bench.lab.batches)
    qa.shot(f"batches-{width}")
    assert fits_the_window(page), page.evaluate("document.documentElement.scrollWidth")
    assert broken_codes(page) == []

    number = bench.lab.batch("SLE-10")
    page.get_by_label("Batch, patient ID or COI").fill(number[-6:].lower())
    page.get_by_role("button", name="Find").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(number)
    qa.shot(f"batches-search-{width}")
    assert fits_the_window(page)

    page.get_by_label("Batch, patient ID or COI").fill("B" * 64)
    page.get_by_label("Started from").fill("2026-03-10")
    page.get_by_label("Started to").fill("2026-03-01")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#to-error")).to_contain_text("swap the dates")
    expect(page.locator("#batch-to")).to_have_attribute("aria-invalid", "true")
    qa.shot(f"batches-refused-{width}")
    assert fits_the_window(page)
