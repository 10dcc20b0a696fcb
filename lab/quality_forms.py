"""Forms of release testing, deviations and QA decisions. Validators check shape; the
services check the rules (and say which field is at fault)."""

from __future__ import annotations

from wtforms import RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional

from lab.forms import SigningForm, VersionedForm
from lab.models.quality import CLASSIFICATIONS
from lab.sent_forms import OnceForm

LONG = 4000


class ResultForm(VersionedForm, SigningForm):
    value = StringField("Result", [Length(max=255)])
    comment = TextAreaField("Comment", [Optional(), Length(max=2000)])


class ResultCorrectionForm(VersionedForm, SigningForm):
    value = StringField("Corrected result", [Length(max=255)])
    reason = TextAreaField("Reason for the correction", [Length(max=2000)])


class DecisionForm(VersionedForm, SigningForm):
    """A QA decision; its choices are the decisions open to the officer, set by the view."""

    decision = RadioField("Decision", choices=[])
    reason = TextAreaField("Reason", [Length(max=LONG)])
    physician_name = StringField("Treating physician", [Length(max=128)])
    physician_request = TextAreaField("The physician's request", [Length(max=LONG)])
    risk_assessment = TextAreaField("Risk assessment given to the physician", [Length(max=LONG)])
    physician_confirmation = TextAreaField("The physician's confirmation", [Length(max=LONG)])


class ReportDeviationForm(OnceForm):
    title = StringField("What departed from the process", [Length(max=255)])
    description = TextAreaField("What happened, when, and what was done at once", [Length(max=LONG)])


class InvestigationForm(OnceForm):
    classification = SelectField("Classification", choices=[SelectChoice("", "not classified yet"),
                                                            *(SelectChoice(c, c) for c in CLASSIFICATIONS)])
    root_cause = TextAreaField("Root cause", [Length(max=LONG)])
    impact = TextAreaField("Impact on this batch, its patient and other batches", [Length(max=LONG)])
    corrective_action = TextAreaField("Corrective action", [Length(max=LONG)])
    preventive_action = TextAreaField("Preventive action", [Length(max=LONG)])


class CloseDeviationForm(SigningForm):
    """Only the signature: the deviation comes from the URL."""
