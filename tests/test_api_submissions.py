"""Instruments and a LIMS submit values through the API as the token's user: checked by the
same engine and rules as the forms, an out-of-limit value opening its deviation at once, and
kept as a Submission waiting for a person's signature (an API call never signs). Bad input of
every kind is refused with a problem answer naming the reason, and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import ApiToken, AuditEvent, Deviation, StepEntry, Submission, utcnow
from lab.services.api_tokens import revoke_token
from tests.factories import get_batch, user
from tests.test_api_contract import conforms

pytestmark = pytest.mark.requirements("API-3")
COUNT = {"viable_cells": 1.2e9, "viability_pct": "93"}
#: A batch in expansion, its last count on culture day 3 (make_batch's expansion).
EARLY_COUNT = ({"culture_day": "3", "viable_cells": "4.0e8", "viability_pct": "90"},)


def steps_url(number: str, step_key: str = "expansion") -> str:
    return f"/api/v1/batches/{number}/steps/{step_key}/submissions"


def results_url(number: str, test_key: str = "viability") -> str:
    return f"/api/v1/batches/{number}/results/{test_key}/submissions"


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A plain client: an API request carries JSON and a token, no form token."""
    return FlaskClient(app, app.response_class)


@pytest.fixture
def expanding(make_batch: Callable[..., str]) -> str:
    return make_batch(until="harvest", days_ago=8, expansion=EARLY_COUNT)


def written(app: Flask) -> tuple[int, int, int]:
    """Submissions, deviations and audit entries: what a refused request must leave unchanged."""
    with app.app_context():
        return tuple(db.session.scalar(select(func.count()).select_from(model))  # type: ignore[return-value]
                     for model in (Submission, Deviation, AuditEvent))


def test_a_count_is_kept_pending_with_its_values_and_records_nothing(app, client, expanding, api_token):
    headers = api_token("tech1", "write", name="Cell counter NC-202")
    with app.app_context():
        entries = db.session.scalar(select(func.count()).select_from(StepEntry))
    response = client.post(steps_url(expanding), json={"values": COUNT, "comment": "Sample S-17"}, headers=headers)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert response.headers["Location"] == body["url"] == f"/api/v1/submissions/{body['id']}"
    assert body["status"] == "pending" and body["kind"] == "step" and body["key"] == "expansion"
    assert body["batch_number"] == expanding
    assert body["values"] == {"viable_cells": "1200000000.0", "viability_pct": "93"}  # the float, exactly
    assert body["flags"] == [] and body["deviations"] == [] and body["file"] is None
    assert body["submitted_by"] == "tech1" and "Cell counter NC-202" in body["via"]
    assert body["sign_url"] == f"http://localhost/submissions/{body['id']}"
    assert client.get(body["url"], headers=headers).get_json() == body
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(StepEntry)) == entries  # nothing recorded
        trail = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "submission.receive")).all()
        assert trail and all("Cell counter NC-202" in (event.via or "") for event in trail)
        assert {event.actor_username for event in trail} == {"tech1"}


def test_an_out_of_limit_value_opens_its_deviation_when_it_comes(app, client, expanding, api_token):
    headers = api_token("tech1", "write")
    response = client.post(steps_url(expanding), json={"values": {"viability_pct": 65}}, headers=headers)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert [flag["field"] for flag in body["flags"]] == ["viability_pct"]
    assert "below the limit" in body["flags"][0]["message"]
    with app.app_context():
        deviation = db.session.scalars(select(Deviation).where(Deviation.number == body["deviations"][0])).one()
        assert deviation.is_open and deviation.source == "limit" and deviation.field_key == "viability_pct"
        assert deviation.title.startswith(f"Submission {body['id']}: ") and deviation.entry_id is None


def test_a_qc_result_out_of_specification_opens_its_deviation(app, client, make_batch, api_token):
    number = make_batch()
    response = client.post(results_url(number), json={"value": 72.5}, headers=api_token("qc1", "write"))
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["kind"] == "result" and body["values"] == {"value": "72.5"} and len(body["deviations"]) == 1
    with app.app_context():
        deviation = db.session.scalars(select(Deviation).where(Deviation.number == body["deviations"][0])).one()
        assert deviation.source == "oos" and deviation.result_id is None


def test_roles_are_those_of_recording(app, client, expanding, api_token):
    technician, analyst, reader = api_token("tech1", "write"), api_token("qc1", "write"), api_token("tech1", "read")
    before = written(app)
    refused = client.post(results_url(expanding), json={"value": "91"}, headers=technician)
    assert refused.status_code == 403 and "qc analyst" in refused.get_json()["detail"]
    assert client.post(steps_url(expanding), json={"values": COUNT}, headers=analyst).status_code == 403
    read = client.post(steps_url(expanding), json={"values": COUNT}, headers=reader)
    assert read.status_code == 403 and "may only read" in read.get_json()["detail"]
    assert written(app) == before


def test_fields_unknown_computed_or_refused_by_the_engine_are_named(app, client, expanding, api_token):
    headers = api_token("tech1", "write")
    before = written(app)
    response = client.post(steps_url(expanding), json={"values": {"fold_expansion": 3, "colour": "red",
                                                                  "viable_cells": "1e9"}}, headers=headers)
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert set(errors) == {"fold_expansion", "colour"} and "Computed" in errors["fold_expansion"]
    response = client.post(steps_url(expanding), json={"values": {"viability_pct": 150, "viable_cells": "many",
                                                                  "incubator": "INC-NONE"}}, headers=headers)
    assert response.status_code == 422
    assert set(response.get_json()["errors"]) == {"viability_pct", "viable_cells", "incubator"}
    assert response.headers["Content-Type"] == "application/problem+json"
    assert written(app) == before


def test_unknown_batch_step_test_or_submission_is_404(app, client, expanding, api_token):
    headers = api_token("qc1", "write")
    assert client.post(results_url(expanding, "colour"), json={"value": "1"}, headers=headers).status_code == 404
    assert client.post(steps_url(expanding, "painting"), json={"values": COUNT},
                       headers=api_token("tech1", "write")).status_code == 404
    assert client.get("/api/v1/submissions/999999", headers=headers).status_code == 404


@pytest.mark.requirements("API-3", "API-4")
def test_a_stale_version_or_a_step_the_batch_cannot_take_is_409(app, client, expanding, api_token):
    headers = api_token("tech1", "write")
    with app.app_context():
        version = get_batch(expanding).version
    before = written(app)
    stale = client.post(steps_url(expanding), json={"values": COUNT, "version": version - 1}, headers=headers)
    assert stale.status_code == 409 and "changed this batch" in stale.get_json()["detail"]
    done = client.post(steps_url(expanding, "receipt"), json={"values": {"volume_ml": "180"}}, headers=headers)
    assert done.status_code == 409, done.get_json()
    assert written(app) == before
    fresh = client.post(steps_url(expanding), json={"values": COUNT, "version": version}, headers=headers)
    assert fresh.status_code == 202


@pytest.mark.requirements("API-3", "API-4")
def test_bad_input_is_refused_with_its_reason_and_writes_nothing(app, client, expanding, api_token, never_500):
    headers, analyst = api_token("tech1", "write"), api_token("qc1", "write")
    url = steps_url(expanding)

    def raw(body: str | bytes, content_type: str = "application/json") -> Any:
        return client.post(url, data=body, headers={**headers, "Content-Type": content_type})

    before = written(app)
    cases: list[tuple[Any, int, str]] = [
        (raw('{"values": {"viable_cells": 1e9'), 422, "not valid JSON"),
        (raw(json.dumps({"values": COUNT}), "text/plain"), 415, "Content-Type: application/json"),
        (raw("[1, 2]"), 422, "JSON object"),
        (raw('{"values": {"viable_cells": NaN}}'), 422, "NaN"),
        (raw('{"values": {"viable_cells": Infinity}}'), 422, "NaN"),
        (raw('{"values": {"viable_cells": 1e400}}'), 422, "NaN"),
        (raw(b'{"values": {"viable_cells": "\xff"}}'), 422, "not valid JSON"),
        (raw(json.dumps({"values": COUNT, "colour": "red"})), 422, "see errors"),
        (raw(json.dumps({"values": [1, 2]})), 422, "see errors"),
        (raw(json.dumps({"values": COUNT, "version": "3"})), 422, "see errors"),
        (raw(json.dumps({"values": COUNT, "version": True})), 422, "see errors"),
        (raw(json.dumps({"values": {"viable_cells": True}})), 422, "see errors"),
        (raw(json.dumps({"values": {"viable_cells": {"n": 1}}})), 422, "see errors"),
        (raw(json.dumps({"values": {"viable_cells": None}})), 422, "see errors"),
        (raw(json.dumps({"values": {}})), 422, "see errors"),
        (raw(json.dumps({"values": {"viable_cells": ""}})), 422, "see errors"),
        (raw(json.dumps({"values": {"viable_cells": "x" * 3000}})), 422, "see errors"),
        (raw(json.dumps({"values": COUNT, "comment": "x" * 3000})), 422, "Comment too long"),
        (raw(json.dumps({"comment": "no values"})), 422, "see errors"),
        (raw(json.dumps({"values": COUNT, "pad": "x" * 70_000})), 413, "larger than 64 KiB"),
        (raw(json.dumps({"values": COUNT, "pad": "x" * 2_000_000})), 413, "too large"),
    ]
    for response, status, words in cases:
        problem = response.get_json()
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.status_code == status, problem
        assert words in problem["detail"], problem
    result = client.post(results_url(expanding), data=json.dumps({"value": False}),
                         headers={**analyst, "Content-Type": "application/json"})
    assert result.status_code == 422 and "value" in result.get_json()["errors"]
    assert written(app) == before


@pytest.mark.requirements("API-3", "API-4")
def test_an_expired_or_revoked_token_submits_nothing(app, client, expanding, api_token, never_500):
    expired, revoked = api_token("tech1", "write", name="old"), api_token("tech1", "write", name="lost")
    with app.app_context():
        tokens = {t.name: t for t in db.session.scalars(select(ApiToken))}
        with audit.action("test.setup", actor=None):
            tokens["old"].expires_at = utcnow() - timedelta(minutes=1)
        revoke_token(tokens["lost"], actor=user("tech1"), reason="Laptop lost")
        db.session.commit()
    before = written(app)
    for headers in (expired, revoked, {"Authorization": "Bearer ct_forged"}, {}):
        response = client.post(steps_url(expanding), json={"values": COUNT}, headers=headers)
        assert response.status_code == 401 and response.headers["Content-Type"] == "application/problem+json"
    assert written(app) == before


@pytest.mark.requirements("API-3", "API-4")
def test_the_answers_match_the_openapi_document(app, client, expanding, api_token):
    headers = api_token("tech1", "write")
    document = client.get("/api/v1/openapi.json").get_json()
    path = "/batches/{batch_number}/steps/{step_key}/submissions"
    made = conforms(document, client.post(steps_url(expanding), json={"values": {"viability_pct": 65}},
                                          headers=headers), "post", path)
    assert made["flags"] and made["deviations"]
    conforms(document, client.get(made["url"], headers=headers), "get", "/submissions/{submission_id}")
    refused = client.post(steps_url(expanding), json={"values": {"colour": "red"}}, headers=headers)
    assert conforms(document, refused, "post", path)["errors"] == {"colour": refused.get_json()["errors"]["colour"]}
    wrong = client.post(steps_url(expanding), data="x", headers={**headers, "Content-Type": "text/plain"})
    assert conforms(document, wrong, "post", path)["status"] == 415


def test_the_openapi_paths_describe_the_routes(app):
    from lab.api.submissions import PATHS
    endpoints = {"api.submit_step_values", "api.submit_result_value", "api.submission"}
    rules = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint in endpoints}
    assert {f"/api/v1{path}".replace("{", "<").replace("}", ">").replace("<submission_id>", "<int:submission_id>")
            for path in PATHS} == rules
    assert all("4XX" in operation["responses"] for item in PATHS.values() for operation in item.values())
