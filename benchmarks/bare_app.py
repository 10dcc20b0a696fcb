"""The floor the facility benchmark measures against: a bare Flask app on the same database
that does one indexed ``session.get`` and renders a small template, under the same server.

    DATABASE_URL=... gunicorn --workers 2 'benchmarks.bare_app:create_app()'
"""

from __future__ import annotations

import os

from flask import Flask, render_template_string

from config import database_url
from lab import settle_heap
from lab.extensions import db

PAGE = """<!doctype html><html lang="en"><head><title>{{ batch.batch_number }}</title></head>
<body><h1>{{ batch.batch_number }}</h1><p>{{ batch.state }}, version {{ batch.version }}</p></body></html>"""


def create_app() -> Flask:
    from lab.models import Batch

    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(os.environ["DATABASE_URL"])
    db.init_app(app)

    @app.route("/bare/<int:batch_id>")
    def bare(batch_id: int) -> str:
        batch = db.session.get(Batch, batch_id)
        if batch is None:
            return "no such batch", 404  # type: ignore[return-value]
        return render_template_string(PAGE, batch=batch)

    settle_heap()  # as the app's own factory does: the same server settings
    return app
