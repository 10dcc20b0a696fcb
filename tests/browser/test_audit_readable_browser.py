"""The audit trail in a real browser, on the demo lab: a page of 50 entries fits in a few
screens at 1280 × 800, and at 390 × 844 the document is no wider than the window (the ledger
scrolls inside its own box). Screenshots of both widths stay in the test artifacts."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.bench import Bench

#: A page of 50 entries was 33,000–41,000 px tall when each entry's JSON broke every four characters.
MAX_PAGE_HEIGHT = 6000


def height(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollHeight"))


def fits_the_window(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_a_page_of_the_trail_fits_a_few_screens_and_a_phone(bench: Bench) -> None:
    auditor = bench.person("auditor1")
    page = auditor.page
    auditor.sign_in()
    page.goto("/audit")
    rows = page.locator("table.audit-trail tbody tr")
    expect(rows).to_have_count(50)
    auditor.shot("audit-1280")
    assert height(page) < MAX_PAGE_HEIGHT, height(page)
    ledger = page.locator("div.table-scroll:has(table.audit-trail)")
    assert ledger.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the ledger scrolls sideways at 1280 px"
    text = page.locator("table.audit-trail").inner_text()
    assert "_by_id" not in text and '{"' not in text
    # an insert's fields open on demand, labelled, with people named
    details = page.locator("table.audit-trail details.inserted").first
    details.locator("summary").first.click()
    expect(details.locator("dl.audit-fields dt").first).to_be_visible()
    auditor.shot("audit-1280-fields-open")
    # a filter narrows the ledger to inserts of downloads, naming who downloaded
    page.goto("/audit?table=batches")
    expect(page.locator("table.audit-trail tbody tr").first).to_be_visible()
    assert re.search(r"→", page.locator("table.audit-trail").inner_text())  # updates read old → new
    auditor.shot("audit-batches-1280")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/audit")
    expect(rows).to_have_count(50)
    auditor.shot("audit-390")
    assert fits_the_window(page), page.evaluate("document.documentElement.scrollWidth")
    number = bench.lab.batch("SLE-10")
    page.goto(f"/batches/{number}#audit")
    expect(page.locator("#audit table.audit-trail")).to_be_visible()
    auditor.shot("batch-audit-390")
    assert page.locator("#audit").evaluate("e => e.scrollWidth <= e.clientWidth + 1")
