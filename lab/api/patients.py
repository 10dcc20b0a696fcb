"""``GET /api/v1/patients/{coi}``: a patient's pseudonymous data and batches.

As the patient's page: every role; a clinician only the patients of their own treating site
(lab.services.site_scope).
"""

from __future__ import annotations

from typing import Any

from flask import abort, jsonify
from werkzeug.wrappers import Response

from lab.api.core import api_user, bp, query_args
from lab.api.openapi import json_response, path_parameter, problems, ref
from lab.services.api_read import patient_json
from lab.services.coi_report import patient_by_coi
from lab.services.site_scope import require_patient


@bp.route("/patients/<coi>")
def patient(coi: str) -> Response:
    query_args()
    found = patient_by_coi(coi[:64])
    if found is None:
        abort(404, f"No patient with COI {coi[:64]!r} is registered in this lab.")
    require_patient(api_user(), found)
    return jsonify(patient_json(found))


#: OpenAPI path items of this module's routes (merged by lab.api.openapi).
PATHS: dict[str, Any] = {
    "/patients/{coi}": {"get": {
        "operationId": "getPatient", "tags": ["patients"], "summary": "A patient (pseudonymous)",
        "description": "The chain-of-identity code, the pseudonymous patient ID, indication, weight, treating "
                       "site and batches. Never initials or date of birth. Every role; a clinician only the "
                       "patients of their own site.",
        "parameters": [path_parameter("coi", {"type": "string", "maxLength": 64}, "The patient's COI.")],
        "responses": {"200": json_response("The patient.", ref("Patient")), **problems(400, 401, 403, 404)},
    }},
}
