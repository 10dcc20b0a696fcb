"""``POST /batches/{batch_number}/steps/{step_key}/counter-files``: a cell counter's export file,
sent as multipart/form-data, becomes a pending submission (``lab.services.counter_import``).

Like every API write it never signs: a person reviews the values, the file's sample ID and time
in the browser (the submission's ``sign_url``) and signs the entry there.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from werkzeug.wrappers import Response

from lab.api.core import WrongMediaType, api_token, api_user, bp, require_write
from lab.api.openapi import json_response, path_parameter, problems, ref
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.services.counter_import import import_counter_file
from lab.services.submissions import submission_json
from lab.views.batches import get_batch_or_404, get_step_or_404
from workflows.counters import NC200, VICELL_BLU

FORM_FIELDS = ("volume_ml", "version")
FILE_FIELD = "file"


@bp.post("/batches/<batch_number>/steps/<step_key>/counter-files")
def counter_file(batch_number: str, step_key: str) -> tuple[Response, int]:
    require_write()
    if request.mimetype != "multipart/form-data":
        raise WrongMediaType(f"Send the counter file as multipart/form-data (fields {FILE_FIELD}, volume_ml and "
                             f"optionally version); it came as “{request.mimetype or 'nothing'}”.")
    batch = get_batch_or_404(batch_number)
    get_step_or_404(batch, step_key)
    upload = _checked_form()
    submission = import_counter_file(batch, step_key, upload.read(), upload.filename,
                                     volume_ml=request.form["volume_ml"], actor=api_user(), token=api_token(),
                                     expected_version=_version(request.form.get("version")))
    db.session.commit()
    return jsonify(submission_json(submission)), 202


def _checked_form() -> Any:
    """The uploaded file, once the form holds exactly its members: unknown or repeated ones are
    refused (422, naming each) rather than ignored."""
    errors = {name: f"Unknown member; this request takes {FILE_FIELD}, {', '.join(FORM_FIELDS)}."
              for name in request.form if name not in FORM_FIELDS}
    errors |= {name: f"Unknown file; send the export as {FILE_FIELD}." for name in request.files
               if name != FILE_FIELD}
    errors |= {name: "Given more than once." for name in FORM_FIELDS if len(request.form.getlist(name)) > 1}
    if len(request.files.getlist(FILE_FIELD)) > 1:
        errors[FILE_FIELD] = "Send one counter file per request."
    if FILE_FIELD not in request.files:
        errors[FILE_FIELD] = "Required: the counter's export file."
    if "volume_ml" not in request.form:
        errors["volume_ml"] = "Required: the culture volume the count stands for, in mL."
    if errors:
        raise InvalidInput("The request was not accepted: see errors. Nothing was saved.", errors)
    return request.files[FILE_FIELD]


def _version(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    if not (text.strip().isascii() and text.strip().isdigit() and len(text.strip()) <= 12):
        raise InvalidInput("The version was not understood.",
                           {"version": f"{text[:20]!r} is not the batch's version (a whole number)."})
    return int(text)


_BATCH = path_parameter("batch_number", {"type": "string"}, "The batch number, with its check character.")
_STEP = path_parameter("step_key", {"type": "string"},
                       "A step that records viable cells and viability (CD19 CAR-T: enrichment, expansion, harvest).")

PATHS: dict[str, Any] = {
    "/batches/{batch_number}/steps/{step_key}/counter-files": {"post": {
        "operationId": "importCounterFile",
        "summary": "Import a cell counter's export file as a submission waiting for a person's signature",
        "description": (
            f"The export of one sample from a {NC200} or a {VICELL_BLU}. CellTrail reads the viable "
            "concentration, viability, sample ID and measurement time, and keeps the file with its SHA-256. "
            "The step's viable cells = viable concentration × volume_ml; its viability is the file's. Refused "
            "(422, nothing saved) when the file is not such an export, its sample ID does not contain the batch "
            "number or the code of one of the batch's containers of that step, or it was measured in the future "
            "or before the step's window opens; 409 when the step takes no cell count or may not be recorded "
            "now, the version is stale, or the same file (SHA-256) was already imported for the batch."),
        "tags": ["submissions"],
        "parameters": [_BATCH, _STEP],
        "requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": {"type": "object", "required": [FILE_FIELD, "volume_ml"], "additionalProperties": False,
                       "properties": {
                           FILE_FIELD: {"type": "string", "contentMediaType": "text/csv",
                                        "description": "The counter's CSV export of one sample (at most 256 KiB)."},
                           "volume_ml": {"type": "string", "description": "The culture volume the count stands "
                                                                          "for, in mL (a number)."},
                           "version": {"type": "string", "description": "The batch's version (an integer) the "
                                                                        "values were read against: refused (409) "
                                                                        "if the batch changed since."}}}}}},
        "responses": {
            "202": json_response("The submission, pending until a person signs it in the browser (sign_url); its "
                                 "file names the export and its SHA-256.", ref("Submission")),
            **problems(401, 403, 404, 409, 413, 415, 422),
        },
    }},
}
