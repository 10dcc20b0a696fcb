"""Helpers shared by views."""

from __future__ import annotations

from flask_wtf import FlaskForm

from lab.exceptions import InvalidInput


def apply_errors(form: FlaskForm, error: InvalidInput) -> None:
    """Show a service's refusal on the form: on each named field, the rest at the top."""
    for name, message in error.errors.items():
        field = getattr(form, name, None)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*field.errors, message] if isinstance(field.errors, list) else [message]
        else:
            form.form_errors.append(message)
    if not error.errors:
        form.form_errors.append(str(error))
