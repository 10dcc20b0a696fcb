"""All models, imported here so that metadata and migrations see every table."""

from lab.models.api import ApiToken, Submission
from lab.models.attachments import Attachment
from lab.models.audit import AuditChainHead, AuditEvent
from lab.models.audit_reviews import AuditReview
from lab.models.base import AppendOnly, Audited, utcnow
from lab.models.batches import Batch, ProcessDefinitionRecord, StepEntry, StepValue
from lab.models.clinic import (
    Administration,
    BagDisposal,
    BedsideCheck,
    Shipment,
    ShipmentBag,
    ShipmentDecision,
    ShipmentReceipt,
    Site,
    SiteNotice,
)
from lab.models.containers import Container, CustodyEvent, LabelPrint
from lab.models.equipment import Equipment, EquipmentLogEntry
from lab.models.forms import SentForm
from lab.models.inventory import LotCheck, LotConsumption, LotDecision, MaterialItem, MaterialLot
from lab.models.patients import Patient
from lab.models.processes import ProcessVersion
from lab.models.quality import Deviation, Signature, SigningFailure
from lab.models.records import Download, IssuedRecord
from lab.models.release import Disposition, QcResult
from lab.models.sequences import CodeSequence
from lab.models.users import User

__all__ = [
    "Administration",
    "ApiToken",
    "AppendOnly",
    "Attachment",
    "AuditChainHead",
    "AuditEvent",
    "AuditReview",
    "Audited",
    "BagDisposal",
    "Batch",
    "BedsideCheck",
    "CodeSequence",
    "Container",
    "CustodyEvent",
    "Deviation",
    "Disposition",
    "Download",
    "Equipment",
    "EquipmentLogEntry",
    "IssuedRecord",
    "LabelPrint",
    "LotCheck",
    "LotConsumption",
    "LotDecision",
    "MaterialItem",
    "MaterialLot",
    "Patient",
    "ProcessDefinitionRecord",
    "ProcessVersion",
    "QcResult",
    "SentForm",
    "Shipment",
    "ShipmentBag",
    "ShipmentDecision",
    "ShipmentReceipt",
    "Signature",
    "SigningFailure",
    "Site",
    "SiteNotice",
    "StepEntry",
    "StepValue",
    "Submission",
    "User",
    "utcnow",
]
