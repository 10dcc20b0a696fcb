"""QA review by exception: the review page lists only what needs a QA eye, with counts and
links into the full record."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from lab import audit
from lab.extensions import db
from lab.models import CustodyEvent
from lab.services.labels import print_labels
from lab.services.signatures import Credentials
from lab.services.steps import correct_value
from tests.factories import PASSWORD, entries, get_batch, user
from tests.quality import post_result, record_results, release, words

pytestmark = pytest.mark.requirements("PROC-15")

SECTIONS = ["Out-of-limit values", "Corrections", "Deviations", "Results out of specification", "Late entries",
            "Missing results", "Signature gaps", "Label reprints", "Custody mismatches"]


def counts(page: str) -> dict[str, int]:
    return {title: int(n) for title, n in re.findall(r"([A-Z][a-z-]+(?: [a-z-]+)*) \((\d+)\) ·?", page)
            if title in SECTIONS}


def test_a_conforming_batch_has_only_its_results_still_to_come(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    page = words(login("qa1").get(f"/batches/{number}/review"))
    assert "Review by exception: 2 items need a QA eye." in page
    assert counts(page) == {**dict.fromkeys(SECTIONS, 0), "Missing results": 2}
    assert "Vector copy number: no result yet may follow release" in page
    assert ("Sterility: interim only (no growth to date) an interim result is needed before release; the final may "
            "follow") in page
    assert "Viability" not in page  # conforming results are not listed


def test_the_review_lists_every_kind_of_exception_with_links_into_the_record(app, make_batch, login):
    days = ({"culture_day": "6", "viable_cells": "1.5e9", "viability_pct": "65",
             "comment": "Low after the feed; repeated next day."},)
    number = make_batch(expansion=days, verify=False)
    record_results(app, number, endotoxin="6")
    with app.app_context():
        batch = get_batch(number)
        now = datetime.now(UTC)
        correct_value(batch, entries(number, "expansion")[0], "viable_cells", "1.6e9", reason="Misread counter.",
                      expected_version=None, actor=user("tech1"), credentials=Credentials(PASSWORD))
        bag = next(c for c in batch.containers if c.kind == "product_bag")
        print_labels([bag], actor=user("tech1"), output="pdf", reason="Label smudged.")
        with audit.action("custody.mismatch", actor=user("tech2")):
            db.session.add(CustodyEvent(batch_id=batch.id, scanned_code="C-A9999-26-000099-X", event="transfer",
                                        matched=False, message="Not a container of this batch.", occurred_at=now,
                                        actor_id=user("tech2").id))
        db.session.commit()
    qa = login("qa1")
    response = qa.get(f"/batches/{number}/review")
    page = words(response)
    assert counts(page) == {"Out-of-limit values": 1, "Corrections": 1, "Deviations": 2,
                            "Results out of specification": 1, "Late entries": 0, "Missing results": 2,
                            "Signature gaps": 6, "Label reprints": 1, "Custody mismatches": 1}
    assert "Viability 65 % is below the limit of 70 %. Comment: Low after the feed; repeated next day." in page
    assert "Expansion (daily count): Viable cells 1.5e9 → 1.6e9 Reason: Misread counter." in page
    assert "Endotoxin: 6 EU/mL is OUT OF SPECIFICATION (< 5 EU/mL). current result" in page
    assert "Apheresis receipt: awaiting verification by a second person" in page
    assert "reprinted Reason: Label smudged." in page
    assert "C-A9999-26-000099-X scanned at transfer Not a container of this batch." in page
    assert "Value out of limit · not classified · OPEN" in page
    links = set(re.findall(r'<td><a href="([^"#]+)[^"]*">', response.get_data(as_text=True)))
    assert {f"/batches/{number}", f"/batches/{number}/results"} <= links
    for link in links:
        assert qa.get(link).status_code == 200, link


def test_results_after_release_are_late_entries(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    release(app, number)
    qc = login("qc1")
    post_result(app, qc, number, "sterility", "no growth")
    page = words(login("qa1").get(f"/batches/{number}/review"))
    assert counts(page)["Late entries"] == 1
    assert "Sterility: no growth recorded after release" in page
    assert counts(page)["Missing results"] == 1  # vector copy number, still to come


def test_every_role_may_read_the_review(app, make_batch, login):
    number = make_batch(until="harvest")
    for username in ("tech1", "qc1", "auditor1"):
        assert login(username).get(f"/batches/{number}/review").status_code == 200
    assert login("qa1").get("/batches/B-A9999-26-00099-X/review").status_code in (400, 404)
