"""Domain errors raised by services; each carries the HTTP status a view answers with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class LabError(Exception):
    """Base of every refusal a user can be shown. ``str(err)`` is the message."""

    status = 400

    def said_to(self, user_id: int | None) -> str:
        """The message as shown to ``user_id`` (the signed-in user)."""
        return str(self)


class NotAllowed(LabError):
    """The user's role may not take this action, or segregation of duties forbids it."""

    status = 403


class InvalidInput(LabError):
    """Submitted values are refused; ``errors`` maps form fields to messages."""

    status = 422

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class StepNotAllowed(LabError):
    """The step may not be recorded now (out of order, batch on hold, already recorded)."""

    status = 409


class ProcessUnavailable(LabError):
    """No usable process definition to start a batch under (missing or malformed file)."""

    status = 409


class ConcurrentChangeError(LabError):
    """Someone else changed the batch after the form was opened."""

    status = 409

    def __init__(self, changed_by: str, changed_at: datetime, changed_by_id: int | None = None) -> None:
        super().__init__(
            f"{changed_by} changed this batch at {changed_at:%Y-%m-%d %H:%M:%S} UTC, after you opened "
            "this form. Nothing of yours was saved; your input is still below. Review the batch "
            "and save again."
        )
        self.changed_by = changed_by
        self.changed_at = changed_at
        self.changed_by_id = changed_by_id

    def said_to(self, user_id: int | None) -> str:
        """The same refusal, to the person who made the change: their form went twice (a
        double click, the back button, a second tab), and the first one stands."""
        if user_id is None or user_id != self.changed_by_id:
            return str(self)
        return (f"You changed this batch at {self.changed_at:%Y-%m-%d %H:%M:%S} UTC, after this form was "
                "opened: it was sent twice, or again from an older page (the back button, another tab). "
                "What you saved first stands and nothing was recorded twice. Review the batch before "
                "saving anything again.")


class SignatureError(LabError):
    """Re-authentication at signing failed.

    ``attempt`` describes a refused attempt that must be kept (a wrong password or someone
    else's username): the view records it, in its own transaction, after rolling back.
    """

    status = 403

    def __init__(self, message: str, attempt: SigningAttempt | None = None) -> None:
        super().__init__(message)
        self.attempt = attempt


@dataclass(frozen=True)
class SigningAttempt:
    """A refused signing attempt: who, to sign what, with which meaning, and why it failed."""

    user_id: int
    batch_id: int | None
    meaning: str
    subject: str
    reason: str


class ImmutableRecordError(LabError):
    """A write tried to change or delete a row that is append-only."""

    status = 409
