"""Helpers shared by views."""

from __future__ import annotations

from flask_wtf import FlaskForm

from lab.exceptions import InvalidInput


def apply_errors(form: FlaskForm, error: InvalidInput) -> None:
    """Show a service's refusal on the form: each message on the field it names; at the top,
    the refusal itself with the messages of fields this form does not have."""
    unplaced = []
    for name, message in error.errors.items():
        field = getattr(form, name, None)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*field.errors, message] if isinstance(field.errors, list) else [message]
        else:
            unplaced.append(message)
    if unplaced or not error.errors:
        form.form_errors.extend([str(error), *unplaced])
