"""Signing from a form: which components this session's next signature needs (21 CFR
11.200(a)), and keeping a refused attempt once the refused action is rolled back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from flask import session
from flask_login import current_user
from flask_wtf import FlaskForm

from lab.exceptions import InvalidInput, LabError, SignatureError
from lab.extensions import db
from lab.services.signatures import Credentials, record_failed_attempt
from lab.views.common import apply_errors

T = TypeVar("T")

_SIGNED = "signed_session"


def _sign_in_marker() -> str:
    """Names this sign-in: a new sign-in (or a session that timed out) starts a new series."""
    login = current_user.last_login_at
    return f"{current_user.id}@{login.isoformat() if login else ''}"


def needs_username() -> bool:
    """True until the first signature of this sign-in: that one takes both components."""
    return bool(current_user.is_authenticated) and session.get(_SIGNED) != _sign_in_marker()


def credentials(form: FlaskForm) -> Credentials:
    """The components typed on a signing form (lab.forms.SigningForm)."""
    username = (form.username.data or "") if needs_username() else None
    return Credentials(form.password.data or "", username)


def signed() -> None:
    """Call once a signature is committed: later signatures of this sign-in need the password only."""
    session[_SIGNED] = _sign_in_marker()


def refused(error: SignatureError) -> str:
    """Roll back the refused action, keep the refused attempt in a transaction of its own,
    and return what to tell the signer (with the attempts left, or that the account is locked)."""
    db.session.rollback()
    if error.attempt is None:
        return str(error)
    note = record_failed_attempt(error.attempt)
    db.session.commit()
    return f"{error} {note}"


@dataclass
class Attempt(Generic[T]):
    """What became of one signed service call: its value when done, else the HTTP status."""

    done: bool
    value: T | None = None
    status: int = 200


def attempt(form: FlaskForm, work: Callable[[], T],
            passthrough: tuple[type[LabError], ...] = ()) -> Attempt[T]:
    """Run one service call that signs from ``form``: one transaction, one outcome.

    Done: commit, and remember that this sign-in has signed. Refused: roll back, keep a
    refused signature's attempt, and put the reason on the form (on the field it names,
    else at the top). Errors of the ``passthrough`` types are left to the caller.
    """
    try:
        value = work()
    except passthrough:
        raise
    except SignatureError as error:
        form.password.errors = [refused(error)]
        return Attempt(False, status=error.status)
    except InvalidInput as error:
        db.session.rollback()
        apply_errors(form, error)
        return Attempt(False, status=error.status)
    except LabError as error:
        db.session.rollback()
        form.form_errors.append(error.said_to(current_user.id))
        return Attempt(False, status=error.status)
    db.session.commit()
    signed()
    return Attempt(True, value)
