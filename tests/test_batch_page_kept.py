"""The batch page is kept rendered per record mark and viewer (lab.views.batches.detail): whatever
changes the batch's record through the app is on the very next view, for every reader, and what one
reader may do never shows on another's page."""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from tests.factories import entries, get_batch, page_text, post_step, signature

Login = Callable[[str], FlaskClient]


def views(login: Login, number: str, *usernames: str) -> dict[str, str]:
    """The batch page as each of ``usernames`` sees it now (HTML, entities decoded)."""
    found = {}
    for username in usernames:
        response = login(username).get(f"/batches/{number}")
        assert response.status_code == 200
        found[username] = page_text(response)
    return found


def entry_html(page: str, entry_id: int) -> str:
    """An entry's block on the page, up to the next entry."""
    start = page.index(f'id="entry-{entry_id}"')
    following = page.find('id="entry-', start + 1)
    return page[start:following if following > 0 else len(page)]


def container_cells(page: str, code: str) -> list[str]:
    """The cells of a container's row of the containers table, as text."""
    row = re.search(rf'<tr>\s*<td><a class="code" href="/containers/{code}">.*?</tr>', page, re.DOTALL)
    assert row is not None, code
    cells = re.findall(r"<td>(.*?)</td>", row[0], re.DOTALL)
    return [" ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in cells]


def test_a_count_a_correction_and_a_verification_are_on_the_next_view_of_every_reader(
        app: Flask, make_batch, login: Login) -> None:
    number = make_batch(until="harvest", verify=False)
    with app.app_context():
        [receipt] = entries(number, "receipt")
        receipt_id = receipt.id
    before = views(login, number, "tech1", "qa1")
    assert "Entry 2" not in before["tech1"] and "Entry 2" not in before["qa1"]

    assert post_step(app, login("tech1"), number, "expansion", culture_day="12").status_code == 302  # a second count
    counted = views(login, number, "tech1", "qa1")
    assert "Entry 2" in counted["tech1"] and "Entry 2" in counted["qa1"]

    with app.app_context():
        version = get_batch(number).version
    response = login("tech1").post(f"/batches/{number}/entries/{receipt_id}/fields/volume_ml/correct",
                                   data={"value": "185", "reason": "Scale print-out reads 185 mL.",
                                         "batch_version": version, **signature("tech1")})
    assert response.status_code == 302
    corrected = views(login, number, "qa1", "tech2")
    for page in corrected.values():
        assert "Scale print-out reads 185 mL." in entry_html(page, receipt_id)
    verify_url = f"/batches/{number}/entries/{receipt_id}/verify"
    assert verify_url in entry_html(corrected["tech2"], receipt_id)  # tech2 neither recorded nor corrected it
    assert verify_url not in entry_html(views(login, number, "tech1")["tech1"], receipt_id)  # tech1 did, same role

    with app.app_context():
        version = get_batch(number).version
    response = login("tech2").post(verify_url, data={**signature("tech2"), "batch_version": version})
    assert response.status_code == 302
    verified = views(login, number, "tech2", "qa1")
    for page in verified.values():
        assert "Theo Second</strong> — verified" in entry_html(page, receipt_id)
        assert "Awaiting verification" not in entry_html(page, receipt_id)
    assert verify_url not in verified["tech2"]


def test_what_a_reader_may_do_is_on_their_page_alone(make_batch, login: Login) -> None:
    number = make_batch(until="harvest")
    pages = views(login, number, "tech1", "qa1", "tech1")  # the same record, kept for each reader
    assert "Add entry Expansion (daily count)" in pages["tech1"] and "Decide the disposition" not in pages["tech1"]
    assert "Decide the disposition" in pages["qa1"] and "Add entry Expansion (daily count)" not in pages["qa1"]


def test_a_reprint_and_a_hand_off_are_on_the_next_view_of_every_reader(app: Flask, make_batch, login: Login) -> None:
    number = make_batch(until="harvest")
    with app.app_context():
        culture = next(c.code for c in get_batch(number).containers if c.kind == "culture_bag")
    before = views(login, number, "tech1", "qa1")
    printed, reprinted = container_cells(before["tech1"], culture)[5:7]
    assert container_cells(before["qa1"], culture)[5:7] == [printed, reprinted]

    response = login("tech1").get(f"/containers/{culture}/label.pdf", query_string={"reason": "Label smudged"})
    assert response.status_code == 200
    after = views(login, number, "qa1", "tech1")
    for page in after.values():
        assert container_cells(page, culture)[5:7] == [printed, str(int(reprinted) + 1)]

    response = login("tech2").post(f"/containers/{culture}/scan",
                                   data={"event": "moved", "scanned": culture, "to_location": "INC-07"})
    assert response.status_code == 302
    moved = views(login, number, "tech1", "qa1")
    for page in moved.values():
        assert container_cells(page, culture)[4] == "INC-07"
        assert "moved" in page[page.index("Custody timeline"):]


def test_a_weight_correction_is_on_the_next_view(make_batch, login: Login) -> None:
    number = make_batch(until="harvest", weight_kg=58.0)
    assert "58 kg" in views(login, number, "tech1")["tech1"]
    response = login("qa1").post("/patients/SLE-01/weight", data={
        "weight_kg": "61", "reason": "Weighed again on admission.", **signature("qa1")})
    assert response.status_code == 302
    page = views(login, number, "tech1")["tech1"]
    assert "61 kg" in page and "58 kg" not in page
