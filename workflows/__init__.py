"""Process definitions as data, and the pure engine that checks entries against them."""

from workflows.definition import (
    DEFINITIONS_DIR,
    DefinitionError,
    latest,
    load_definition,
    load_definition_text,
    load_directory,
)
from workflows.engine import (
    can_start,
    compute_derived,
    next_state,
    scanned_codes,
    step_states,
    typed_value,
    validate_entry,
)
from workflows.engine_types import (
    ContainerInfo,
    EntryContext,
    EntryResult,
    EquipmentInfo,
    FieldValue,
    LotInfo,
    PriorEntry,
    StepProgress,
    Value,
)
from workflows.formatting import format_number
from workflows.model import ProcessDefinition, StepSpec, StepState

__all__ = [
    "DEFINITIONS_DIR",
    "ContainerInfo",
    "DefinitionError",
    "EntryContext",
    "EntryResult",
    "EquipmentInfo",
    "FieldValue",
    "LotInfo",
    "PriorEntry",
    "ProcessDefinition",
    "StepProgress",
    "StepSpec",
    "StepState",
    "Value",
    "can_start",
    "compute_derived",
    "format_number",
    "latest",
    "load_definition",
    "load_definition_text",
    "load_directory",
    "next_state",
    "scanned_codes",
    "step_states",
    "typed_value",
    "validate_entry",
]
