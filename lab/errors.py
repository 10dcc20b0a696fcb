"""Every refusal is a page with its reason and a 4xx; an unexpected error rolls back."""

from __future__ import annotations

from flask import Flask, render_template
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from lab.api.core import is_api_request, problem
from lab.exceptions import InvalidInput, LabError
from lab.extensions import db

#: Page headings for refusals, in words a person at the bench reads (not "Bad Request").
TITLES = {400: "Not understood", 401: "Sign in first", 403: "Not allowed", 404: "Not found",
          405: "Not possible here", 409: "Not done: the record has moved on", 413: "Too large",
          422: "Not accepted"}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> tuple[str, int]:
        db.session.rollback()
        return render_template("errors/error.html", code=400, title="Form not accepted",
                               message="The form expired or did not come from this CellTrail page. "
                                       "Go back, reload the page and submit again."), 400

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[str, int] | Response:
        db.session.rollback()
        code = error.code or 500
        if is_api_request():
            return problem(code, _api_detail(error), headers=_allow(error))
        return render_template("errors/error.html", code=code, title=TITLES.get(code, error.name),
                               message=error.description), code

    @app.errorhandler(LabError)
    def lab_error(error: LabError) -> tuple[str, int] | Response:
        db.session.rollback()
        if is_api_request():
            return problem(error.status, str(error),
                           errors=error.errors if isinstance(error, InvalidInput) else None)
        user_id = current_user.id if current_user.is_authenticated else None
        return render_template("errors/error.html", code=error.status, title="Not done",
                               message=error.said_to(user_id)), error.status

    @app.errorhandler(500)
    def server_error(error: Exception) -> tuple[str, int] | Response:
        db.session.rollback()
        if is_api_request():
            return problem(500, "Nothing was saved. The error is logged; tell your administrator what the request was.")
        return render_template("errors/error.html", code=500, title="Internal error",
                               message="Nothing was saved. The error is logged; tell your administrator "
                                       "what you were doing."), 500


#: What the API says instead of werkzeug's page-oriented descriptions.
_API_DETAILS = {404: "No such resource: check the address (the API's routes are listed at /api/v1/openapi.json).",
                405: "This method is not allowed here (see the Allow header, and /api/v1/openapi.json).",
                413: "The request body is too large."}


def _api_detail(error: HTTPException) -> str:
    default = type(error).description
    described = error.description and error.description != default
    return str(error.description) if described else _API_DETAILS.get(error.code or 500, str(error.description))


def _allow(error: HTTPException) -> dict[str, str]:
    valid = getattr(error, "valid_methods", None)
    return {"Allow": ", ".join(valid)} if valid else {}
