"""Bad input in a browser: a double-submitted form, the back button after saving, a stale
page saved after someone else changed the batch, and scans on the wrong page. Each gets a
clear message, and nothing is recorded twice.

The daily count of SLE-03 (mid-expansion, counted on culture days 3, 5 and 6) is the form:
a repeatable step, so only the batch version and the culture day stand between a second
submission and a second entry.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from lab.demo import INCUBATOR
from tests.browser.bench import SCAN_BOX, Bench, Hold, Lab, Person, message

SAVE = "Save Expansion (daily count)"
#: What a form sent a second time is told, however it came again (both refusals say it).
SENT_TWICE = re.compile(r"nothing was recorded twice", re.IGNORECASE)


def count_form(lab: Lab) -> str:
    return f"/batches/{lab.batch('SLE-03')}/steps/expansion"


def fill_count(person: Person, bag: str, incubator: str, day: str = "7", *, scanner: bool = True) -> None:
    """Fill the daily count as a technician does: scan the bag and the incubator, type the
    counter's numbers, sign. (Without JavaScript a scanner's Enter would send the form: the
    incubator is typed then.)"""
    page = person.page
    page.get_by_label("Culture bag").fill(bag)
    page.get_by_label("Culture day").fill(day)
    page.get_by_label("Viable cells").fill("1.6e9")
    page.get_by_label("Viability").fill("93")
    if scanner:
        person.wedge("Incubator", incubator)
    else:
        page.get_by_label("Incubator").fill(incubator)
    person.sign()


def changed_by(who: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(who)} changed this batch at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_a_double_submitted_step_is_recorded_once(bench: Bench, lab: Lab, javascript: bool) -> None:
    """With JavaScript the page may keep the second click from being sent; without, the
    server sees both and refuses the second."""
    path = count_form(lab)
    tech1 = bench.person("tech1", javascript=javascript)
    page = tech1.page
    tech1.sign_in(then=path)
    fill_count(tech1, lab.container("SLE-03", "culture_bag"), lab.equipment(INCUBATOR), scanner=javascript)
    tech1.shot("count-filled-in")

    # The first click is saved, but its answer is slow to come back: the technician clicks again.
    hold = bench.server.hold = Hold("POST", path)
    save = page.get_by_role("button", name=SAVE)
    save.scroll_into_view_if_needed()
    box = save.bounding_box()
    assert box is not None
    save.click(no_wait_after=True)
    assert hold.reached.wait(timeout=10), "the first submission never reached the server"
    # The page is still there while the browser waits: the second click lands on the same button.
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    # Whatever reaches the server is answered before the first answer is let go.
    sent_again = bench.server.wait_for("POST", path, 2, timeout=1 if javascript else 10)
    hold.released.set()

    recorded = message(page, f"Expansion (daily count) recorded for {lab.batch('SLE-03')}")
    refused = page.get_by_role("main").filter(has_text=SENT_TWICE)
    expect(recorded.or_(refused)).to_be_visible()
    tech1.shot("after-the-double-click")
    assert lab.culture_days("SLE-03") == ["3", "5", "6", "7"]
    statuses = bench.server.statuses("POST", path)
    if sent_again:  # the second submission reached the server, and was refused
        assert statuses == [302, 409]
        expect(refused).to_be_visible()
    else:  # the page did not send the second click
        assert javascript, "without JavaScript the second click must reach the server"
        assert statuses == [302]
        expect(recorded).to_be_visible()


def test_the_back_button_after_saving_then_saving_again_records_nothing_twice(bench: Bench, lab: Lab) -> None:
    path = count_form(lab)
    bag = lab.container("SLE-03", "culture_bag")
    tech1 = bench.person("tech1")
    page = tech1.page
    tech1.sign_in(then=path)
    fill_count(tech1, bag, lab.equipment(INCUBATOR))
    tech1.submit(SAVE)
    expect(message(page, f"Expansion (daily count) recorded for {lab.batch('SLE-03')}")).to_be_visible()
    tech1.shot("count-recorded")

    page.go_back(wait_until="commit")  # a page from the back-forward cache fires no load event
    expect(page.get_by_role("button", name=SAVE)).to_be_visible()
    tech1.shot("back-on-the-form")
    if page.get_by_label("Culture day").input_value() == "7":  # the page as it was sent, from the cache
        tech1.sign()
        tech1.submit(SAVE)
        expect(page.get_by_role("main")).to_contain_text(SENT_TWICE)
    else:  # the browser fetched the form afresh: the technician types the count again
        fill_count(tech1, bag, lab.equipment(INCUBATOR))
        tech1.submit(SAVE)
        expect(page.get_by_label("Culture day")).to_have_accessible_description(
            re.compile("Culture day 7 is already recorded"))
    tech1.shot("sent-again-refused")
    assert bench.server.statuses("POST", path)[0] == 302
    assert all(status >= 400 for status in bench.server.statuses("POST", path)[1:])
    assert lab.culture_days("SLE-03") == ["3", "5", "6", "7"]


def test_a_stale_form_is_refused_naming_who_saved_first(bench: Bench, lab: Lab) -> None:
    path = count_form(lab)
    bag = lab.container("SLE-03", "culture_bag")
    tech1, tech2 = bench.person("tech1"), bench.person("tech2")
    tech1.sign_in(then=path)
    tech2.sign_in(then=path)
    fill_count(tech1, bag, lab.equipment(INCUBATOR))
    tech1.shot("count-filled-in")

    fill_count(tech2, bag, lab.equipment(INCUBATOR))
    tech2.submit(SAVE)
    expect(message(tech2.page, f"Expansion (daily count) recorded for {lab.batch('SLE-03')}")).to_be_visible()
    tech2.shot("count-recorded-first")

    page = tech1.page
    tech1.submit(SAVE)
    refusal = message(page, changed_by(tech2.full_name))
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("Nothing of yours was saved")
    expect(page.get_by_label("Culture day")).to_have_value("7")  # the input is kept to review
    expect(page.get_by_label("Viable cells")).to_have_value("1.6e9")
    tech1.shot("stale-form-refused")
    assert [e.performed_by for e in lab.entries("SLE-03", "expansion")][-1] == "tech2"

    tech1.sign()
    tech1.submit(SAVE)  # saving again, as the message says: the count is already there
    expect(page.get_by_label("Culture day")).to_have_accessible_description(
        re.compile("Culture day 7 is already recorded"))
    tech1.shot("count-already-recorded")
    assert lab.culture_days("SLE-03") == ["3", "5", "6", "7"]


def test_a_container_of_another_batch_is_refused_next_to_its_field(bench: Bench, lab: Lab) -> None:
    mine, other = lab.container("SLE-03", "culture_bag"), lab.container("SLE-02", "culture_bag")
    tech1 = bench.person("tech1")
    page = tech1.page
    tech1.sign_in()
    tech1.scan(mine, "scanned-own-culture-bag")
    expect(page.get_by_label("Culture bag")).to_have_value(mine)
    fill_count(tech1, other, lab.equipment(INCUBATOR))  # SLE-02's bag, from the next incubator shelf
    tech1.shot("other-batch-bag-scanned")
    deviations_before = lab.deviations("SLE-03")
    tech1.submit(SAVE)

    expect(message(page, "a scanned container does not belong to this batch. Nothing was saved")).to_be_visible()
    bag_field = page.get_by_label("Culture bag")  # the message is next to the field, and tied to it
    expect(bag_field).to_have_accessible_description(re.compile(
        rf"COI MISMATCH: {re.escape(other)} .*patient {re.escape(lab.coi('SLE-02'))}, "
        rf"batch {re.escape(lab.batch('SLE-02'))}"))
    tech1.shot("mismatch-refused")
    assert lab.culture_days("SLE-03") == ["3", "5", "6"]
    assert lab.custody_mismatches("SLE-03") == [(other, "expansion")]
    [(source, title, status)] = lab.deviations("SLE-03")[len(deviations_before):]
    assert (source, status) == ("custody", "open")
    assert other in title


def test_codes_the_scan_box_cannot_open_are_refused_with_the_reason(bench: Bench, lab: Lab) -> None:
    tech1 = bench.person("tech1")
    page = tech1.page
    tech1.sign_in()
    box = page.get_by_label(SCAN_BOX)

    # A refused scan is said under the scan box; the page stays (celltrail.js asks the server first).
    medium = lab.lot("TEX-2610")
    box.press_sequentially(medium)  # a medium lot's code, scanned into the wrong box
    box.press("Enter")
    expect(message(page, "is a material lot")).to_contain_text(medium)
    tech1.shot("lot-code-in-the-scan-box")

    code = lab.container("SLE-03", "culture_bag")
    misread = code[:-1] + ("0" if code[-1] != "0" else "1")
    box.press_sequentially(misread)  # replaces the refused code, selected
    box.press("Enter")
    expect(message(page, "the check character does not match")).to_be_visible()
    tech1.shot("misread-container-code")
    assert page.url.endswith("/") and lab.custody_mismatches("SLE-03") == []
