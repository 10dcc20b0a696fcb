"""Values an instrument submitted become a record only when a person who may record them opens
them in the browser, completes and checks the entry and signs (21 CFR 11.50, 11.200): the
pending list, the submission's page, the step form and the QC result form prefilled from it,
one deviation per out-of-limit value (the one opened when it came, now naming the record),
withdrawing, and a used submission refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from lab.extensions import db
from lab.models import AuditEvent, Deviation, Submission
from lab.services.submissions import submit_result, submit_step
from tests.factories import entries, form_data, get_batch, page_text, signature, step_values, user
from workflows.timing import culture_day

pytestmark = pytest.mark.requirements("API-3")
EARLY_COUNT = ({"culture_day": "3", "viable_cells": "4.0e8", "viability_pct": "90"},)
Login = Callable[[str], FlaskClient]


@pytest.fixture
def expanding(make_batch: Callable[..., str]) -> str:
    return make_batch(until="harvest", days_ago=8, expansion=EARLY_COUNT)


def submitted(app: Flask, number: str, values: dict[str, str], *, kind: str = "step") -> int:
    """A submission from a counter (as the API makes it, without its token): its id."""
    with app.app_context():
        batch = get_batch(number)
        if kind == "step":
            made = submit_step(batch, "expansion", values, comment="Counter NC-202, sample S-17", actor=user("tech1"),
                               token=None, expected_version=None, sample_id="S-17")
        else:
            made = submit_result(batch, "viability", values["value"], comment="", actor=user("qc1"), token=None,
                                 expected_version=None)
        db.session.commit()
        return made.id


def count_form(app: Flask, number: str, submission_id: int, **overrides: str) -> dict[str, object]:
    """The expansion form as the technician sends it: the counter's values and the rest they add."""
    with app.app_context():
        batch = get_batch(number)
        now = datetime.now(UTC)
        today = culture_day(entries(number, "activation")[0].performed_at, now)
        sent = db.session.get(Submission, submission_id)
        assert sent is not None
        raw = step_values("expansion", when=now, batch=batch, culture_day=str(today), **sent.values)
        return form_data({**raw, **overrides}, batch_version=batch.version, comment="Counted twice: low.",
                         submission=str(submission_id))


def deviations(app: Flask, number: str) -> list[Deviation]:
    with app.app_context():
        found = list(db.session.scalars(select(Deviation).where(Deviation.batch_id == get_batch(number).id)
                                        .order_by(Deviation.id)))
        db.session.expunge_all()
        return found


def test_a_count_is_listed_opened_prefilled_signed_and_recorded_once(app, expanding, login: Login):
    sent = submitted(app, expanding, {"viable_cells": "1.1e9", "viability_pct": "65"})
    [opened] = deviations(app, expanding)
    client = login("tech1")
    listing = page_text(client.get("/submissions"))
    assert f"Submission {sent}" in listing and expanding in listing and "65" in listing and "below the limit" in listing
    assert f"Submission {sent}" in page_text(client.get(f"/batches/{expanding}"))  # waiting for signature
    page = page_text(client.get(f"/submissions/{sent}"))
    assert "S-17" in page and opened.number in page and "Open in the form" in page
    form = client.get(f"/batches/{expanding}/steps/expansion?submission={sent}")
    assert form.status_code == 200
    html = page_text(form)
    assert 'value="1.1e9"' in html and 'value="65"' in html and f'name="submission" value="{sent}"' in html

    response = client.post(f"/batches/{expanding}/steps/expansion", data=count_form(app, expanding, sent))
    assert response.status_code == 302, page_text(response)[:3000]
    with app.app_context():
        submission = db.session.get(Submission, sent)
        entry = entries(expanding, "expansion")[-1]
        assert (submission.status, submission.entry_id, submission.closed_by.username) == ("recorded", entry.id, "tech1")
        assert submission.closed_at is not None
        recorded = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "submission.record")).all()
        assert recorded and {event.actor_username for event in recorded} == {"tech1"}
    [only] = deviations(app, expanding)  # no second deviation for the same value
    assert only.id == opened.id and only.entry_id == entry.id and only.field_key == "viability_pct"

    assert client.get(f"/batches/{expanding}/steps/expansion?submission={sent}").status_code == 409
    again = client.post(f"/batches/{expanding}/steps/expansion", data=count_form(app, expanding, sent))
    assert again.status_code == 409 and "already recorded" in page_text(again)
    with app.app_context():
        assert len(entries(expanding, "expansion")) == 2
    assert f"Submission {sent}" not in page_text(client.get("/submissions"))


def test_a_value_changed_before_signing_follows_the_usual_rules(app, expanding, login: Login):
    sent = submitted(app, expanding, {"viable_cells": "1.1e9", "viability_pct": "65"})
    client = login("tech1")
    response = client.post(f"/batches/{expanding}/steps/expansion",
                           data=count_form(app, expanding, sent, viability_pct="60"))
    assert response.status_code == 302, page_text(response)[:3000]
    first, second = deviations(app, expanding)
    assert first.entry_id is None and first.is_open  # the value that came stays for QA to judge
    assert second.entry_id is not None and "60" in second.title and not second.title.startswith("Submission")


def test_a_value_corrected_into_its_limit_opens_nothing_more(app, expanding, login: Login):
    sent = submitted(app, expanding, {"viable_cells": "1.1e9", "viability_pct": "65"})
    client = login("tech1")
    response = client.post(f"/batches/{expanding}/steps/expansion",
                           data=count_form(app, expanding, sent, viability_pct="91"))
    assert response.status_code == 302, page_text(response)[:3000]
    [only] = deviations(app, expanding)
    assert only.entry_id is None


def test_a_submission_is_withdrawn_with_a_reason_by_someone_who_may_record_it(app, expanding, login: Login):
    sent = submitted(app, expanding, {"viable_cells": "1.1e9"})
    auditor = login("auditor1")
    refused = auditor.post(f"/submissions/{sent}/withdraw", data={"reason": "No"})
    assert refused.status_code == 403 and "you are signed in as auditor" in page_text(refused)
    client = login("tech2")
    assert client.post(f"/submissions/{sent}/withdraw", data={"reason": ""}).status_code == 422
    response = client.post(f"/submissions/{sent}/withdraw", data={"reason": "Wrong sample counted"})
    assert response.status_code == 302
    with app.app_context():
        submission = db.session.get(Submission, sent)
        assert (submission.status, submission.closed_reason, submission.closed_by.username) == (
            "withdrawn", "Wrong sample counted", "tech2")
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "submission.withdraw")).first()
        assert event is not None and event.reason == "Wrong sample counted"
    assert "Withdrawn" in page_text(client.get(f"/submissions/{sent}"))
    assert client.get(f"/batches/{expanding}/steps/expansion?submission={sent}").status_code == 409
    assert client.post(f"/submissions/{sent}/withdraw", data={"reason": "Twice"}).status_code == 409


def test_a_qc_result_is_signed_from_its_form_and_named_in_its_deviation(app, make_batch, login: Login):
    number = make_batch()
    sent = submitted(app, number, {"value": "72.5"}, kind="result")
    [opened] = deviations(app, number)
    client = login("qc1")
    assert f"Submission {sent}" in page_text(client.get("/submissions"))
    assert f"Submission {sent}" not in page_text(login("tech1").get("/submissions"))  # a technician may not sign it
    client = login("qc1")
    form = page_text(client.get(f"/batches/{number}/results/viability?submission={sent}"))
    assert 'value="72.5"' in form and f'name="submission" value="{sent}"' in form
    with app.app_context():
        version = get_batch(number).version
    response = client.post(f"/batches/{number}/results/viability", data={
        "value": "72.5", "comment": "", "batch_version": version, "submission": sent, **signature("qc1")})
    assert response.status_code == 302, page_text(response)[:3000]
    with app.app_context():
        submission = db.session.get(Submission, sent)
        assert submission.status == "recorded" and submission.result is not None
        result_id = submission.result_id
    [only] = deviations(app, number)
    assert only.id == opened.id and only.result_id == result_id


def test_the_pending_list_is_bounded_oldest_first_in_a_fixed_number_of_queries(app, expanding, login: Login,
                                                                               monkeypatch: pytest.MonkeyPatch):
    """An API client may send many submissions: the list shows the oldest PENDING_SHOWN a user may
    sign, says more are waiting, and reads no more than PENDING_READ, in the same queries."""
    from tests.queries import statements

    sent = [submitted(app, expanding, {"viable_cells": f"1.{n}e9", "viability_pct": "91"}) for n in range(3)]
    client = login("tech1")
    with statements(app) as three:
        everything = page_text(client.get("/submissions"))
    assert "3 submissions you may sign." in everything and all(f"Submission {n}<" in everything for n in sent)
    assert "more are waiting" not in everything
    monkeypatch.setattr("lab.services.submissions.PENDING_SHOWN", 2)
    listing = page_text(client.get("/submissions"))
    assert "The oldest 2 submissions you may sign; more are waiting." in " ".join(listing.split())
    assert f"Submission {sent[0]}<" in listing and f"Submission {sent[1]}<" in listing
    assert f"Submission {sent[2]}<" not in listing
    monkeypatch.setattr("lab.services.submissions.PENDING_SHOWN", 50)
    monkeypatch.setattr("lab.services.submissions.PENDING_READ", 1)
    read_one = page_text(client.get("/submissions"))
    assert f"Submission {sent[0]}<" in read_one and f"Submission {sent[1]}<" not in read_one
    assert "more are waiting" in read_one
    monkeypatch.setattr("lab.services.submissions.PENDING_READ", 1000)
    sent.append(submitted(app, expanding, {"viable_cells": "2.0e9", "viability_pct": "92"}))
    with statements(app) as four:
        assert f"Submission {sent[3]}<" in page_text(client.get("/submissions"))
    assert len(four) == len(three), (len(three), len(four))
    qc = page_text(login("qc1").get("/submissions"))  # steps are the technicians': QC may sign none of these
    assert "0 submissions you may sign." in qc
