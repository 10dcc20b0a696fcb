"""Submitting values through the API: a step's fields or a QC result, each kept as a
Submission until a person signs it in the browser (lab.services.submissions)."""

from __future__ import annotations

from typing import Any

from flask import abort, jsonify
from werkzeug.wrappers import Response

from lab.api.batches import require_lab_reader
from lab.api.core import api_token, api_user, bp, json_body, require_write
from lab.api.openapi import (
    INTEGER,
    NULLABLE_STRING,
    NULLABLE_TIME,
    STRING,
    TIME,
    URL,
    json_response,
    path_parameter,
    problems,
    ref,
    strict,
)
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Submission
from lab.services.progress import definition_for
from lab.services.steps import MAX_COMMENT
from lab.services.submissions import submission_json, submit_result, submit_step
from lab.views.batches import get_batch_or_404, get_step_or_404


def _text(key: str, value: Any) -> str:
    """A JSON value as the text the engine reads: strings as sent, numbers without losing
    precision (``repr`` of a float round-trips; JSON has no NaN or infinities here)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise InvalidInput("The values were not accepted: see errors. Nothing was saved.",
                       {key: "Must be a string or a number."})


def _accepted(submission: Submission) -> Response:
    """202: kept, waiting for a person's signature; Location names it."""
    body = submission_json(submission)
    response = jsonify(body)
    response.status_code = 202
    response.headers["Location"] = body["url"]
    return response


@bp.post("/batches/<batch_number>/steps/<step_key>/submissions")
def submit_step_values(batch_number: str, step_key: str) -> Response:
    require_write()
    batch = get_batch_or_404(batch_number)
    get_step_or_404(batch, step_key)
    body = json_body({"values": dict, "comment": str, "version": int}, required=("values",))
    values = {str(key): _text(str(key), value) for key, value in body["values"].items()}
    submission = submit_step(batch, step_key, values, comment=body.get("comment", ""), actor=api_user(),
                             token=api_token(), expected_version=body.get("version"))
    db.session.commit()
    return _accepted(submission)


@bp.post("/batches/<batch_number>/results/<test_key>/submissions")
def submit_result_value(batch_number: str, test_key: str) -> Response:
    require_write()
    batch = get_batch_or_404(batch_number)
    definition = definition_for(batch)
    if test_key not in {test.key for test in definition.release_tests}:
        abort(404, f"Process {definition.key} v{definition.version} has no release test {test_key!r}.")
    body = json_body({"value": (str, int, float), "comment": str, "version": int}, required=("value",))
    submission = submit_result(batch, test_key, _text("value", body["value"]), comment=body.get("comment", ""),
                               actor=api_user(), token=api_token(), expected_version=body.get("version"))
    db.session.commit()
    return _accepted(submission)


@bp.get("/submissions/<int:submission_id>")
def submission(submission_id: int) -> Response:
    require_lab_reader()
    found = db.session.get(Submission, submission_id)
    if found is None:
        abort(404, f"No submission {submission_id}.")
    return jsonify(submission_json(found))


#: The Submission schema, a shared component (the counter-file route answers one too).
SCHEMAS: dict[str, Any] = {"Submission": strict({
    "id": INTEGER,
    "batch_number": STRING,
    "kind": {"enum": ["step", "result"], "description": "A step entry's fields, or a QC result."},
    "key": {"type": "string", "description": "The step's key, or the release test's."},
    "status": {"enum": ["pending", "recorded", "withdrawn"]},
    "values": {"type": "object", "additionalProperties": STRING,
               "description": "The texts as received (a result's under \"value\"); numbers as the engine reads them."},
    "flags": {"type": "array", "items": strict({"field": STRING, "message": STRING}),
              "description": "Values out of limit or specification, judged as when they came: each opened a deviation."},
    "deviations": {"type": "array", "items": STRING, "description": "The numbers of the deviations it opened."},
    "sample_id": NULLABLE_STRING,
    "measured_at": NULLABLE_TIME,
    "file": {"oneOf": [{"type": "null"}, strict({"filename": STRING, "sha256": STRING, "size": INTEGER})],
             "description": "The counter file it was read from, with its SHA-256."},
    "submitted_by": {"type": "string", "description": "The username of the token's user."},
    "submitted_at": TIME,
    "via": {"type": ["string", "null"], "description": "The token it came through (null: a file uploaded in the "
                                                        "browser)."},
    "url": URL,
    "sign_url": {"type": "string", "format": "uri", "description": "The page where a person checks and signs it."},
}, "Values waiting for a person's signature in the browser: an API call never signs.")}
_SUBMISSION = ref("Submission")
_NUMBER_OR_TEXT = {"oneOf": [STRING, {"type": "number"}]}
_COMMON_MEMBERS = {"comment": {"type": "string", "maxLength": MAX_COMMENT},
                   "version": {"type": "integer", "description": "The batch version read: a stale one answers 409."}}
_BATCH = path_parameter("batch_number", STRING, "The batch number, with its check character.")


def _submitting(operation_id: str, summary: str, parameter: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {"post": {
        "operationId": operation_id, "tags": ["submissions"], "summary": summary,
        "description": "Checked as the form checks it; an out-of-limit value opens its deviation at once. Nothing "
                       "is recorded until a person who may record it signs it at sign_url. Needs a write token.",
        "parameters": [_BATCH, parameter],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "202": {**json_response("Kept, waiting for a signature.", _SUBMISSION),
                    "headers": {"Location": {"schema": STRING, "description": "The submission's url."}}},
            **problems(401, 403, 404, 409, 413, 415, 422),
            "4XX": {"$ref": "#/components/responses/Problem4xx"},
        },
    }}


#: OpenAPI path items of this module's routes (merged by lab.api.openapi).
PATHS: dict[str, Any] = {
    "/batches/{batch_number}/steps/{step_key}/submissions": _submitting(
        "submitStepValues", "Submit some or all fields of a step entry",
        path_parameter("step_key", STRING, "The step's key in the batch's process definition."),
        {"type": "object", "additionalProperties": False, "required": ["values"], "properties": {
            "values": {"type": "object", "minProperties": 1, "additionalProperties": _NUMBER_OR_TEXT,
                       "description": "Field key -> value; the fields not sent are added by the person who signs."},
            **_COMMON_MEMBERS}}),
    "/batches/{batch_number}/results/{test_key}/submissions": _submitting(
        "submitResult", "Submit a QC result",
        path_parameter("test_key", STRING, "The release test's key in the batch's process definition."),
        {"type": "object", "additionalProperties": False, "required": ["value"], "properties": {
            "value": _NUMBER_OR_TEXT, **_COMMON_MEMBERS}}),
    "/submissions/{submission_id}": {"get": {
        "operationId": "getSubmission", "tags": ["submissions"], "summary": "A submission and where it stands",
        "parameters": [path_parameter("submission_id", INTEGER, "The submission's id.")],
        "responses": {"200": json_response("The submission.", _SUBMISSION), **problems(401, 403, 404),
                      "4XX": {"$ref": "#/components/responses/Problem4xx"}},
    }},
}
