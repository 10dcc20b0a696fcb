"""Forms. Validators check shape (present, length, a finite number); services check rules."""

from __future__ import annotations

import math
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    DateField,
    FloatField,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice  # WTForms 3.3 deprecates (value, label) tuples
from wtforms.validators import DataRequired, InputRequired, Length, Optional
from wtforms.widgets import HiddenInput

from lab.models.users import ROLE_TITLES
from lab.sent_forms import OnceForm
from lab.services.containers import HANDOFF_EVENTS

ROLE_CHOICES = [SelectChoice(key, title) for key, title in ROLE_TITLES.items()]


class FiniteFloatField(FloatField):
    """A FloatField that refuses NaN and infinities, which float() would accept."""

    data: float | None

    def process_formdata(self, valuelist: list[Any]) -> None:
        super().process_formdata(valuelist)
        if self.data is not None and not math.isfinite(self.data):
            self.data = None
            raise ValueError("Enter a finite number.")


class LoginForm(FlaskForm):
    username = StringField("Username", [DataRequired(), Length(max=64)])
    password = PasswordField("Password", [DataRequired(), Length(max=256)])


class CreateUserForm(OnceForm):
    username = StringField("Username", [DataRequired(), Length(max=64)])
    full_name = StringField("Full name (printed with signatures)", [DataRequired(), Length(max=128)])
    role = SelectField("Role", choices=ROLE_CHOICES)
    #: Choices are the active sites, set by the view (lab.views.sites.site_choices).
    site = SelectField("Treatment site (clinicians only)", choices=[], validate_choice=False)
    password = PasswordField("Temporary password (its owner replaces it at the first sign-in)",
                             [DataRequired(), Length(max=256)])


class UpdateUserForm(OnceForm):
    role = SelectField("Role", choices=ROLE_CHOICES)
    site = SelectField("Treatment site (clinicians only)", choices=[], validate_choice=False)
    status = SelectField("Status", choices=[SelectChoice("active", "Active"), SelectChoice("inactive", "Deactivated")])
    reason = StringField("Reason for the change", [DataRequired(), Length(max=500)])


class UnlockUserForm(OnceForm):
    reason = StringField("Reason for unlocking", [DataRequired(), Length(max=500)])


class RegisterPatientForm(OnceForm):
    patient_ref = StringField("Patient ID (pseudonymous)", [DataRequired(), Length(max=32)])
    initials = StringField("Initials", [DataRequired(), Length(max=4)])
    date_of_birth = DateField("Date of birth", [InputRequired(message="Enter the date of birth.")])
    weight_kg = FiniteFloatField("Weight (kg)", [InputRequired(message="Enter the weight in kg.")])
    indication = StringField("Indication", [DataRequired(), Length(max=128)])
    treating_site = SelectField("Treating site (optional)", choices=[], validate_choice=False)


class VersionedForm(OnceForm):
    """A form that changes a batch carries the batch version it was built from."""

    batch_version = IntegerField(widget=HiddenInput(), validators=[InputRequired()])

    def show_version(self, version: int) -> None:
        """Build the form again on ``version`` (after a refusal, once the user has seen why).
        The raw text is what a field renders, so both change."""
        self.batch_version.data = version
        self.batch_version.raw_data = [str(version)]

    def validate(self, extra_validators: Any = None) -> bool:
        valid = super().validate(extra_validators)
        if self.batch_version.errors:  # a hidden field: its own errors are never shown
            self.form_errors.append("The form did not say which version of the batch it was built from: "
                                    "reload the page and enter it again.")
        return valid


class SigningForm(OnceForm):
    """The components of an electronic signature. The username is asked only for the first
    signature of a sign-in (21 CFR 11.200(a)); the view decides."""

    username = StringField("Username", [Optional(), Length(max=64)])
    password = PasswordField("Password (electronic signature)", [Length(max=256)])


class StepEntryForm(VersionedForm, SigningForm):
    """The comment and version of a step entry; the step's own fields come from its definition."""

    comment = TextAreaField("Comment", [Optional(), Length(max=2000)])


class CorrectionForm(VersionedForm, SigningForm):
    value = StringField("Corrected value", [Length(max=2000)])
    reason = TextAreaField("Reason for the correction", [DataRequired(message="Say why the value is corrected."),
                                                         Length(max=2000)])


class WeightCorrectionForm(SigningForm):
    """A patient's corrected weight, why, and the corrector's signature."""

    weight_kg = FiniteFloatField("Corrected weight (kg)", [InputRequired(message="Enter the weight in kg.")])
    reason = TextAreaField("Reason for the correction", [DataRequired(message="Say why the weight is corrected."),
                                                         Length(max=2000)])


class VerifyForm(VersionedForm, SigningForm):
    """Only the signature: the entry comes from the URL."""


class StartBatchForm(OnceForm):
    """The product (its effective process version) and the target dose; the patient comes from the URL.
    Choices are the effective versions, checked again by the service."""

    product = SelectField("Product", choices=[], validate_choice=False)
    target_dose = StringField("Target dose", [Optional(), Length(max=40)])


class ContainerScanForm(OnceForm):
    """A hand-off scan on a container's page (the event choices are fixed by the service)."""

    event = SelectField("Hand-off", choices=[SelectChoice(e, e) for e in HANDOFF_EVENTS])
    scanned = StringField("Scan the container's label", [DataRequired(message="Scan the label."), Length(max=200)])
    to_location = StringField("To (location)", [Optional(), Length(max=255)])
