"""All models, imported here so that metadata and migrations see every table."""

from lab.models.audit import AuditEvent
from lab.models.base import AppendOnly, Audited, utcnow
from lab.models.batches import Batch, ProcessDefinitionRecord, StepEntry, StepValue
from lab.models.inventory import Equipment, MaterialLot
from lab.models.patients import Patient
from lab.models.quality import Deviation, Signature
from lab.models.sequences import CodeSequence
from lab.models.users import User

__all__ = [
    "AppendOnly",
    "AuditEvent",
    "Audited",
    "Batch",
    "CodeSequence",
    "Deviation",
    "Equipment",
    "MaterialLot",
    "Patient",
    "ProcessDefinitionRecord",
    "Signature",
    "StepEntry",
    "StepValue",
    "User",
    "utcnow",
]
