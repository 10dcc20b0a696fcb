"""The API's read side through HTTP: the list of batches (filters, keyset paging, a signed
cursor), one batch in full (corrections, signatures, release results, decisions, the record's
digest, pending submissions) at a bounded number of queries, and a patient's pseudonymous data,
each for the roles that read the matching pages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient

from lab import audit
from lab.audit import VIA
from lab.clinic_access import REFUSAL
from lab.extensions import db
from lab.models import Submission
from lab.services.batch_list import make_cursor
from lab.services.record_issue import snapshot
from tests.factories import entries, get_batch, patient, signature, user
from tests.queries import statements

pytestmark = pytest.mark.requirements("API-2")

Headers = dict[str, str]


def _get(client: FlaskClient, url: str, headers: Headers, status: int = 200, **query: str) -> Any:
    response = client.get(url, headers=headers, query_string=query)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def _correct_volume(app: Flask, login: Callable[[str], FlaskClient], number: str) -> None:
    """tech1 corrects the receipt's volume to 40 mL in the browser (signing): below its limit, it opens a deviation."""
    with app.app_context():
        entry_id, version = entries(number, "receipt")[0].id, get_batch(number).version
    client = login("tech1")
    response = client.post(f"/batches/{number}/entries/{entry_id}/fields/volume_ml/correct",
                           data={"value": "40", "reason": "Scale print-out reads 40 mL.", "batch_version": version,
                                 **signature("tech1")})
    assert response.status_code == 302
    client.post("/logout")  # the API ignores the session anyway


def user_name(app: Flask, username: str) -> str:
    with app.app_context():
        return user(username).full_name


def _submit(app: Flask, number: str, *, status: str = "pending") -> int:
    """A submission as an instrument's API call leaves it (made directly: writing them is not this module's)."""
    with app.test_request_context("/api/v1/batches"):
        setattr(g, VIA, "API token “counter” (ct_abc…)")
        with audit.action("submission.create", actor=user("tech1")):
            row = Submission(batch_id=get_batch(number).id, kind="step", key="expansion",
                             values={"viable_cells": "1.6e9"}, submitted_by_id=user("tech1").id, status=status)
            db.session.add(row)
            db.session.flush()
        db.session.commit()
        return row.id


def test_one_batch_in_full(app: Flask, client: FlaskClient, login, make_batch, api_token) -> None:
    number = make_batch(until="activation")
    _correct_volume(app, login, number)
    pending, _ = _submit(app, number), _submit(app, number, status="withdrawn")
    data = _get(client, f"/api/v1/batches/{number}", api_token("qc1"))
    with app.app_context():
        batch = get_batch(number)
        assert data["version"] == batch.version and data["coi"] == batch.patient.coi
        assert data["record_digest"] == snapshot(batch).digest  # what /verify knows as current
    assert data["url"] == f"/api/v1/batches/{number}" and data["state"] == "in_process"
    steps = {step["key"]: step for step in data["steps"]}
    assert list(steps)[:3] == ["receipt", "enrichment", "activation"]
    assert steps["activation"]["entries"] == [] and steps["activation"]["state"] == "pending"
    [receipt] = steps["receipt"]["entries"]
    assert receipt["performed_by"] == {"username": "tech1", "name": user_name(app, "tech1")}
    volume = next(v for v in receipt["values"] if v["field"] == "volume_ml")
    assert (volume["text"], volume["number"], volume["unit"], volume["limit"], volume["out_of_limit"],
            volume["message"]) == ("40", 40.0, "mL", "≥ 50 mL", True, "Volume 40 mL is below the limit of 50 mL.")
    [correction] = volume["corrections"]
    assert (correction["old_value"], correction["new_value"], correction["reason"],
            correction["corrected_by"]["username"]) == ("180", "40", "Scale print-out reads 40 mL.", "tech1")
    assert correction["corrected_at"].endswith("Z")
    meanings = [(s["meaning"], s["valid"]) for s in receipt["signatures"]]
    assert ("verified", False) in meanings and ("corrected", True) in meanings  # the correction voids the check
    assert receipt["awaiting_verification"] is True and receipt["verified_by"] == []
    assert receipt["derived"][0]["key"] == "hours_since_collection" and receipt["derived"][0]["unit"] == "h"
    assert [(d["source"], d["state"]) for d in data["deviations"]] == [("limit", "open"), ("correction", "open")]
    assert data["deviations"][0]["number"].startswith("DEV-")
    assert data["containers"][0]["kind"] == "apheresis_bag"
    assert data["custody"][0]["event"] == "label applied"
    assert data["pending_submissions"] == [{"id": pending, "kind": "step", "key": "expansion",
                                            "url": f"/api/v1/submissions/{pending}"}]


def test_a_released_batch_shows_its_results_and_decision(app: Flask, client: FlaskClient, released: str,
                                                         api_token) -> None:
    data = _get(client, f"/api/v1/batches/{released}", api_token("auditor1"))
    assert data["state"] == "released"
    viability = next(t for t in data["release_tests"] if t["key"] == "viability")
    [result] = viability["results"]
    assert (result["number"], result["unit"], result["verdict"], result["in_specification"], result["current"],
            result["superseded"], result["recorded_by"]["username"]) == (91.2, "%", "pass", True, True, False, "qc1")
    assert result["specification"] == "≥ 80 %"
    [decision] = data["decisions"]
    assert (decision["decision"], decision["state_before"], decision["state_after"]) == (
        "release", "qa_review", "released")
    assert decision["signatures"][0]["meaning"] == "approved for release"
    assert data["deviations"] == [] and data["pending_submissions"] == []


def test_the_batch_query_count_does_not_grow_with_entries(app: Flask, client: FlaskClient, make_batch,
                                                           api_token) -> None:
    def days(n: int) -> tuple[dict[str, str], ...]:
        return tuple({"culture_day": str(d), "viable_cells": f"{d}.0e8", "viability_pct": "90"} for d in range(1, n))

    few, many = make_batch(ref="SLE-01", expansion=days(3)), make_batch(ref="SLE-02", expansion=days(10))
    headers = api_token("tech1")
    counts = []
    for number in (few, many):
        with statements(app) as found:
            _get(client, f"/api/v1/batches/{number}", headers)
        counts.append(len(found))
    assert counts[0] == counts[1], counts
    assert counts[0] <= 70  # the page's queries, the record's digest and the pending submissions


def test_the_list_pages_newest_change_first(app: Flask, client: FlaskClient, login, make_batch,
                                            api_token) -> None:
    numbers = [make_batch(until="enrichment", ref=f"SLE-0{i}") for i in range(1, 4)]
    headers = api_token("super1")
    first = _get(client, "/api/v1/batches", headers, limit="2")
    assert [b["batch_number"] for b in first["items"]] == numbers[::-1][:2]  # the newest change first
    assert set(first["items"][0]) == {"batch_number", "coi", "state", "product", "process_version", "patient_ref",
                                      "updated_at", "version", "url"}
    second = _get(client, "/api/v1/batches", headers, limit="2", cursor=first["next_cursor"])
    assert [b["batch_number"] for b in second["items"]] == numbers[:1] and second["next_cursor"] is None
    _correct_volume(app, login, numbers[0])  # changed: now the newest change
    again = _get(client, "/api/v1/batches", headers)
    assert [b["batch_number"] for b in again["items"]] == [numbers[0], numbers[2], numbers[1]]
    since = again["items"][0]["updated_at"]
    assert [b["batch_number"] for b in _get(client, "/api/v1/batches", headers, updated_since=since)["items"]] == [
        numbers[0]]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _get(client, "/api/v1/batches", headers, updated_since=later)["items"] == []
    assert len(_get(client, "/api/v1/batches", headers, state="in_process", product="cd19-car-t")["items"]) == 3
    assert _get(client, "/api/v1/batches", headers, state="released")["items"] == []


@pytest.mark.requirements("API-4")
@pytest.mark.usefixtures("never_500")
@pytest.mark.parametrize(("query", "status", "field"), [
    ({"state": "shipped-ish"}, 422, "state"),
    ({"product": "cd20"}, 422, "product"),
    ({"updated_since": "2026-11-25"}, 422, "updated_since"),  # no time of day, no offset
    ({"updated_since": "2026-11-25T14:03:00"}, 422, "updated_since"),  # no offset
    ({"updated_since": "yesterday"}, 422, "updated_since"),
    ({"limit": "0"}, 422, "limit"),
    ({"limit": "201"}, 422, "limit"),
    ({"limit": "ten"}, 422, "limit"),
    ({"cursor": "WzEsMl0.altered"}, 400, "cursor"),
    ({"cursor": "x" * 300}, 400, "cursor"),
    ({"page": "2"}, 400, "page"),  # the browser list's parameter, not this one's
    ({"State": "released"}, 400, "State"),
])
def test_the_list_refuses_what_it_does_not_understand(client: FlaskClient, api_token, query: dict[str, str],
                                                      status: int, field: str) -> None:
    response = client.get("/api/v1/batches", headers=api_token("tech1"), query_string=query)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]


@pytest.mark.requirements("API-4")
def test_a_cursor_of_the_browser_list_is_refused(app: Flask, client: FlaskClient, make_batch, api_token) -> None:
    number = make_batch(until="receipt")
    with app.app_context():
        browser_cursor = make_cursor("older", get_batch(number))  # signed by the same key, for another list
    problem = _get(client, "/api/v1/batches", api_token("tech1"), 400, cursor=browser_cursor)
    assert "cursor" in problem["errors"]


@pytest.mark.parametrize("username", ["tech1", "super1", "qc1", "qa1", "auditor1", "admin"])
def test_every_lab_role_reads_batches(client: FlaskClient, make_batch, api_token, username: str) -> None:
    number = make_batch(until="receipt")
    headers = api_token(username)
    assert _get(client, "/api/v1/batches", headers)["items"][0]["batch_number"] == number
    assert _get(client, f"/api/v1/batches/{number}", headers)["batch_number"] == number


def test_a_clinician_reads_no_batch(client: FlaskClient, make_batch, sites, api_token) -> None:
    number = make_batch(until="receipt")
    headers = api_token("nurse1")
    for url in ("/api/v1/batches", f"/api/v1/batches/{number}"):
        problem = _get(client, url, headers, 403)
        assert problem["detail"] == REFUSAL


def test_a_patient_is_pseudonymous(app: Flask, client: FlaskClient, make_batch, sites, api_token) -> None:
    number = make_batch(until="receipt")
    with app.app_context():
        found = patient("SLE-01")
        with audit.action("test.setup", actor=None):
            found.treating_site_id = sites["NUH-HEM"]
        db.session.commit()
        coi, initials, state = found.coi, found.initials, get_batch(number).state
    data = _get(client, f"/api/v1/patients/{coi}", api_token("tech1"))
    assert data["coi"] == coi and data["patient_ref"] == "SLE-01" and data["weight_kg"] == 58.0
    assert data["batches"] == [{"batch_number": number, "state": state, "url": f"/api/v1/batches/{number}"}]
    assert data["treating_site"] == {"code": "NUH-HEM", "name": "Northern University Hospital, Haematology"}
    assert not {"initials", "date_of_birth", "name"} & set(data)
    assert initials not in str(data.values()) and "1980" not in str(data)
    assert _get(client, f"/api/v1/patients/{coi.lower()}", api_token("nurse1"))["coi"] == coi  # their own site
    other = _get(client, f"/api/v1/patients/{coi}", api_token("nurse3"), 403)
    assert "another treatment site" in other["detail"]
    assert "No patient" in _get(client, "/api/v1/patients/CH-A9999-26-999999-X", api_token("nurse3"), 404)["detail"]
