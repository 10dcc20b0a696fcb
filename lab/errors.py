"""Every refusal is a page with its reason and a 4xx; an unexpected error rolls back."""

from __future__ import annotations

from flask import Flask, render_template
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from lab.exceptions import LabError
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
    def http_error(error: HTTPException) -> tuple[str, int]:
        db.session.rollback()
        code = error.code or 500
        return render_template("errors/error.html", code=code, title=TITLES.get(code, error.name),
                               message=error.description), code

    @app.errorhandler(LabError)
    def lab_error(error: LabError) -> tuple[str, int]:
        db.session.rollback()
        user_id = current_user.id if current_user.is_authenticated else None
        return render_template("errors/error.html", code=error.status, title="Not done",
                               message=error.said_to(user_id)), error.status

    @app.errorhandler(500)
    def server_error(error: Exception) -> tuple[str, int]:
        db.session.rollback()
        return render_template("errors/error.html", code=500, title="Internal error",
                               message="Nothing was saved. The error is logged; tell your administrator "
                                       "what you were doing."), 500
