"""The batch page in sections (issue 14, item 3): a bar of in-page links to the sections the batch
has, the current step marked (and drawn first), finished entries folded to one line that names who
verified them, open work unfolded, "needs second-person verification" only while an entry awaits it,
one "Correct a value" per entry, and a verify page without a "Verify" link to itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lab.services.progress import batch_overview, current_step
from tests.conftest import ROLES
from tests.factories import entries, get_batch, signature, signed_in
from tests.quality import close_all_deviations

pytestmark = pytest.mark.usefixtures("never_500")

Login = Callable[[str], FlaskClient]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
VERIFIER = ROLES["tech2"][1]  # make_batch has tech2 verify what tech1 recorded


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None = None
    children: list[Element | str] = field(default_factory=list)

    def iter(self) -> Iterator[Element]:
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def find_all(self, tag: str, **attrs: str) -> list[Element]:
        return [e for e in self.iter() if e.tag == tag and all(e.attrs.get(k) == v for k, v in attrs.items())]

    def by_id(self, ident: str) -> Element:
        [found] = [e for e in self.iter() if e.attrs.get("id") == ident]
        return found

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return " ".join(" ".join(parts).split())

    def ancestors(self) -> Iterator[Element]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.node = Element("#document", {})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, self.node)
        self.node.children.append(element)
        if tag not in VOID:
            self.node = element

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.node
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.node = node.parent

    def handle_data(self, data: str) -> None:
        self.node.children.append(data)


def parse(client: FlaskClient, url: str) -> Element:
    response = client.get(url)
    assert response.status_code == 200, url
    builder = _Builder()
    builder.feed(response.get_data(as_text=True))
    return builder.root


def step_item(page: Element, key: str) -> Element:
    return page.by_id(f"step-{key}")


def heading(step: Element) -> str:
    [h3] = [c for c in step.children if isinstance(c, Element) and c.tag == "h3"]
    return h3.text()


def folds(element: Element) -> list[Element]:
    """The <details> that ``element`` is inside, innermost first."""
    return [a for a in element.ancestors() if a.tag == "details"]


def summary(details: Element) -> str:
    [first] = [c for c in details.children if isinstance(c, Element) and c.tag == "summary"]
    return first.text()


def test_the_section_bar_links_to_each_section_the_batch_has(make_batch, login: Login) -> None:
    number = make_batch(until="harvest")  # expansion counts recorded: the chart is drawn
    page = parse(login("qa1"), f"/batches/{number}")
    [nav] = page.find_all("nav", **{"aria-label": "Sections of this batch"})
    links = [(a.text(), a.attrs["href"]) for a in nav.find_all("a")]
    assert links == [("Steps", "#steps"), ("Containers and labels", "#containers"), ("Expansion", "#expansion"),
                     ("Quality", "#quality"), ("Timeline", "#timeline"), ("Audit", "#audit")]
    for name, href in links:
        section = page.by_id(href[1:])
        headings = section.find_all("h2")
        assert headings, href
        assert headings[0].text().startswith(name if name != "Quality" else "Release testing"), (href, headings[0].text())

    early = make_batch(until="transduction", ref="SLE-02")  # no count yet: no chart, no link to one
    page = parse(login("qa1"), f"/batches/{early}")
    [nav] = page.find_all("nav", **{"aria-label": "Sections of this batch"})
    assert [a.attrs["href"] for a in nav.find_all("a")] == ["#steps", "#containers", "#quality", "#timeline", "#audit"]
    assert [e for e in page.iter() if e.attrs.get("id") == "expansion"] == []


def test_the_current_step_is_marked_and_drawn_first(app: Flask, make_batch, login: Login) -> None:
    number = make_batch(until="harvest")
    page = parse(login("tech1"), f"/batches/{number}")
    current = [li for li in page.find_all("li") if "step-current" in li.classes()]
    assert [li.attrs["id"] for li in current] == ["step-expansion"]
    assert "Current step" in heading(current[0])
    assert [a.text() for a in current[0].find_all("a") if "button" in a.classes()] == ["Add entry Expansion (daily count)"]
    assert sum("Current step" in heading(li) for li in page.find_all("li") if "step" in li.classes()) == 1


def test_the_current_step_is_the_first_awaiting_verification_or_to_record(app: Flask, make_batch) -> None:
    awaiting = make_batch(until="activation", verify=False)  # receipt waits for tech2; enrichment is done
    to_record = make_batch(until="transduction", ref="SLE-02")
    finished = make_batch(ref="SLE-03")  # every step recorded: nothing to record or verify
    with app.app_context():
        found = {n: current_step(batch_overview(get_batch(n)).steps) for n in (awaiting, to_record, finished)}
    assert {n: view and view.spec.key for n, view in found.items()} == {
        awaiting: "receipt", to_record: "transduction", finished: None}


def test_a_verified_entry_is_one_folded_line_naming_its_verifier(app: Flask, make_batch, login: Login) -> None:
    number = make_batch(until="enrichment")
    with app.app_context():
        [receipt] = entries(number, "receipt")
        performer = receipt.performed_by.full_name
    page = parse(login("tech1"), f"/batches/{number}")
    step = step_item(page, "receipt")
    assert "needs second-person verification" not in heading(step)
    body = page.by_id(f"entry-{receipt.id}")
    [fold] = folds(body)
    assert "open" not in fold.attrs and fold.parent is step  # the step is its heading and this line
    line = summary(fold)
    assert f"Recorded by {performer}" in line and f"verified by {VERIFIER}" in line
    assert "Volume" in body.text()  # the values are there, on demand


def test_an_entry_awaiting_verification_stays_open_and_says_so(app: Flask, make_batch, login: Login) -> None:
    number = make_batch(until="enrichment", verify=False)
    with app.app_context():
        [receipt] = entries(number, "receipt")
    page = parse(login("tech2"), f"/batches/{number}")
    step = step_item(page, "receipt")
    assert "needs second-person verification" in heading(step)
    assert "verified by" not in heading(step)
    body = page.by_id(f"entry-{receipt.id}")
    assert folds(body) == []
    assert "Awaiting verification by a second person." in body.text()
    verify_url = f"/batches/{number}/entries/{receipt.id}/verify"
    assert [a.text() for a in body.find_all("a", href=verify_url)] == ["Verify"]


def test_a_step_needing_verification_says_so_only_while_an_entry_awaits_it(make_batch, login: Login) -> None:
    number = make_batch(until="enrichment")
    page = parse(login("tech1"), f"/batches/{number}")
    text = " ".join(heading(li) for li in page.find_all("li") if "step" in li.classes())
    assert "needs second-person verification" not in text  # receipt verified, the others without entries


def test_each_entry_has_one_correct_a_value_with_a_link_per_field(app: Flask, make_batch, login: Login) -> None:
    number = make_batch(until="enrichment")
    with app.app_context():
        [receipt] = entries(number, "receipt")
    body = parse(login("tech1"), f"/batches/{number}").by_id(f"entry-{receipt.id}")
    [menu] = [d for d in body.find_all("details") if summary(d) == "Correct a value"]
    links = [a.attrs["href"] for a in menu.find_all("a")]
    assert f"/batches/{number}/entries/{receipt.id}/fields/volume_ml/correct" in links
    assert all(a.attrs["href"] in links for a in body.find_all("a") if a.attrs.get("href", "").endswith("/correct"))
    auditor = parse(login("auditor1"), f"/batches/{number}").by_id(f"entry-{receipt.id}")
    assert [d for d in auditor.find_all("details") if summary(d) == "Correct a value"] == []


def test_the_verify_page_shows_the_entry_without_a_link_to_itself(app: Flask, make_batch, login: Login) -> None:
    number = make_batch(until="enrichment", verify=False)
    with app.app_context():
        [receipt] = entries(number, "receipt")
    url = f"/batches/{number}/entries/{receipt.id}/verify"
    client = login("tech2")
    page = parse(client, url)
    assert page.find_all("a", href=url) == []
    body = page.by_id(f"entry-{receipt.id}")
    assert folds(body) == [] and "Volume" in body.text()
    assert [b.text() for b in page.find_all("button") if b.text().startswith("Sign:")] == ["Sign: verified"]

    # once verified, the batch page opens at the entry (the browser unfolds it there)
    with app.app_context():
        version = get_batch(number).version
    response = client.post(url, data={**signature(signed_in(app, client)), "batch_version": version})
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/batches/{number}#entry-{receipt.id}")


def test_an_out_of_limit_entry_stays_open_while_its_deviation_is_open(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("harvest", expansion=(
        {"culture_day": "6", "viable_cells": "1.5e9", "viability_pct": "62", "comment": "Supervisor informed."},
        {"culture_day": "7", "viable_cells": "2.5e9", "viability_pct": "91"}))
    with app.app_context():
        low, good = entries(number, "expansion")
        deviations = [(d.entry_id, d.status) for d in get_batch(number).deviations]
    assert deviations == [(low.id, "open")]  # the out-of-limit viability opened one
    page = parse(login("tech1"), f"/batches/{number}")
    assert folds(page.by_id(f"entry-{good.id}")) != []
    assert folds(page.by_id(f"entry-{low.id}")) == []  # open work stays in view

    close_all_deviations(app, number)
    [fold] = folds(parse(login("tech1"), f"/batches/{number}").by_id(f"entry-{low.id}"))
    assert "Entry 1" in summary(fold) and "1 OUT OF LIMIT" in summary(fold)
