"""Plain data the printers take: one label (``LabelData``) and one certificate of analysis (``CoaData``).

``lab/`` builds these from its records; ``labels/`` only reads them. Dates are plain dates,
times are timezone-aware datetimes (a naive one is refused: a printed time must say its zone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from workflows.codes import CodeKind, parse_code
from workflows.model import LABEL_DATES

# 21 CFR 1271.90(c); lab/ decides which lines a container needs and passes them in.
FOR_AUTOLOGOUS_USE_ONLY = "FOR AUTOLOGOUS USE ONLY"
NOT_EVALUATED_FOR_INFECTIOUS_SUBSTANCES = "NOT EVALUATED FOR INFECTIOUS SUBSTANCES"


def check_code(value: str, kind: CodeKind) -> None:
    """Refuse a code whose check character is wrong or that is not written in its canonical form."""
    if str(parse_code(value, kind)) != value:
        raise ValueError(f"Print the {kind.value} as {parse_code(value, kind)}, not {value!r}.")


def check_aware(name: str, *moments: datetime | None) -> None:
    """Refuse a naive time: a printed time must say its zone. ``None`` (not yet happened) passes."""
    for moment in moments:
        if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
            raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}.")


class Stock(StrEnum):
    """Label stock: a product bag label (4 x 4 in) or a cryo-tube label (38 x 19 mm)."""

    BAG = "bag"
    TUBE = "tube"

    @property
    def size_mm(self) -> tuple[float, float]:
        """Width and height of one label in millimetres."""
        return (101.6, 101.6) if self is Stock.BAG else (38.0, 19.0)


#: The word a label prints before each of its date-times ("Collected 2026-11-13 00:05 UTC"), in the order
#: the container kind lists them.
DATE_WORDS = {what: what.capitalize() for what in LABEL_DATES}


@dataclass(frozen=True)
class LabelDate:
    """One date-time a label prints: ``what`` (a key of DATE_WORDS) and when, in the zone it carries."""

    what: str
    moment: datetime

    def __post_init__(self) -> None:
        if self.what not in DATE_WORDS:
            raise ValueError(f"A label prints the dates {', '.join(DATE_WORDS)}, not {self.what!r}.")
        check_aware(self.what, self.moment)


@dataclass(frozen=True)
class Dose:
    """The CAR+ viable T cells in one bag, and the patient weight its dose per kg is counted for.

    ``total_cells`` is what all bags of the fill hold together (printed when there are several).
    """

    cells: Decimal
    weight_kg: Decimal
    total_cells: Decimal | None = None

    def __post_init__(self) -> None:
        if self.cells <= 0 or self.weight_kg <= 0 or (self.total_cells is not None and self.total_cells < self.cells):
            raise ValueError(f"{self.cells} cells for {self.weight_kg} kg (of {self.total_cells}) is not a dose.")

    @property
    def per_kg(self) -> Decimal:
        return self.cells / self.weight_kg

    @property
    def total_per_kg(self) -> Decimal | None:
        return None if self.total_cells is None else self.total_cells / self.weight_kg


@dataclass(frozen=True)
class LabelData:
    """Everything printed on one container label.

    ``code`` is the container code and the whole QR payload; it, ``coi`` and ``batch_number``
    must be valid codes in canonical form (workflows.codes), so a label never carries a code
    with a wrong check character. ``kind`` is the title printed on the label ("Final product
    bag", "QC sample", ...) and ``description`` what the container holds (the product, the
    starting material, a sample of the product). Tube labels print only the code, kind,
    description, COI, batch number, REPRINT and the dates; bag labels print every field given.
    ``regulatory_lines`` print in bold in the order given (e.g. FOR_AUTOLOGOUS_USE_ONLY on
    product bags), then the ``warnings`` and the ``investigational`` statement. Every time
    (``dates``, ``printed_at``) is printed in the zone it carries.
    """

    code: str
    kind: str
    stock: Stock
    coi: str
    batch_number: str
    description: str
    printed_at: datetime
    patient_ref: str | None = None
    patient_initials: str | None = None
    patient_dob: date | None = None
    bag_number: int | None = None
    bag_count: int | None = None
    volume_ml: Decimal | None = None
    dose: Dose | None = None
    dates: tuple[LabelDate, ...] = ()
    storage: str | None = None
    facility_name: str | None = None
    facility_address: tuple[str, ...] = ()
    regulatory_lines: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    investigational: str | None = None
    reprint: bool = False
    copy_note: str | None = None

    def __post_init__(self) -> None:
        check_code(self.code, CodeKind.CONTAINER)
        check_code(self.coi, CodeKind.COI)
        check_code(self.batch_number, CodeKind.BATCH)
        check_aware("printed_at", self.printed_at)
        if not self.kind.strip() or not self.description.strip():
            raise ValueError("A label needs the container's kind and what it holds.")
        if (self.bag_number is None) != (self.bag_count is None):
            raise ValueError("bag_number and bag_count go together.")
        if self.bag_number is not None and self.bag_count is not None and not 1 <= self.bag_number <= self.bag_count:
            raise ValueError(f"Bag {self.bag_number} of {self.bag_count} is not a bag of the set.")
        if self.volume_ml is not None and self.volume_ml <= 0:
            raise ValueError(f"A volume of {self.volume_ml} mL cannot be printed.")
        if len({d.what for d in self.dates}) != len(self.dates):
            raise ValueError("A label prints each of its dates once.")


class ResultStatus(StrEnum):
    """The verdict of one release test, printed in words on the certificate."""

    PASS = "pass"
    FAIL = "fail"
    PENDING = "pending"


@dataclass(frozen=True)
class CoaResult:
    """One release test on the certificate; ``result``, ``analyst`` and ``tested_on`` are None while pending.

    ``interim`` marks a result reported before its final one (sterility "no growth to date").
    """

    test: str
    method: str
    specification: str
    status: ResultStatus
    result: str | None = None
    analyst: str | None = None
    tested_on: date | None = None
    interim: bool = False

    def __post_init__(self) -> None:
        if self.interim and self.result is None:
            raise ValueError(f"An interim result of {self.test} needs the result.")


@dataclass(frozen=True)
class CoaBag:
    """One bag of the product on the certificate: bag n of m, its volume and the CAR+ viable
    T cells it holds (None where the process records no concentration)."""

    code: str
    number: int
    count: int
    volume_ml: Decimal | None
    cells: Decimal | None = None

    def __post_init__(self) -> None:
        check_code(self.code, CodeKind.CONTAINER)
        if not 1 <= self.number <= self.count:
            raise ValueError(f"Bag {self.number} of {self.count} is not a bag of the set.")


@dataclass(frozen=True)
class CoaDeviation:
    """A deviation of the batch as the certificate sums it up: classification and closure."""

    number: str
    title: str
    status: str
    classification: str | None = None
    closed_by: str | None = None
    closed_at: datetime | None = None

    def __post_init__(self) -> None:
        check_aware("closed_at", self.closed_at)
        if (self.closed_by is None) != (self.closed_at is None):
            raise ValueError(f"Deviation {self.number}: who closed it and when go together.")


@dataclass(frozen=True)
class SignatureData:
    """An electronic signature as 21 CFR 11.50 wants it shown: printed name, meaning and time."""

    printed_name: str
    meaning: str
    signed_at: datetime

    def __post_init__(self) -> None:
        check_aware("signed_at", self.signed_at)


@dataclass(frozen=True)
class CoaData:
    """A certificate of analysis for one batch.

    ``batch_number`` (also the QR payload) and ``coi`` must be valid codes in canonical form.
    ``disposition`` is None until QA decides, and a signature needs a disposition.
    ``downloaded_by`` is the printed name of whoever downloads the PDF; the footer then says
    "Downloaded by <name> at <generated_at in UTC>".

    The product: ``filled_at`` and ``expires_at`` (printed in the zone they carry, as on the
    bag labels), its ``bags``, and the dose: ``dose_per_kg`` CAR+ viable T cells per kg of
    ``weight_kg``, the weight it was counted for. ``qc_analysts`` recorded and signed the
    results; ``released_on_interim``: the batch was released while a result was interim.
    """

    batch_number: str
    coi: str
    product: str
    patient_ref: str
    process_key: str
    process_version: int
    facility_name: str
    results: tuple[CoaResult, ...]
    generated_at: datetime
    facility_address: tuple[str, ...] = ()
    disposition: str | None = None
    disposition_signature: SignatureData | None = None
    exceptional_release_notes: str | None = None
    downloaded_by: str | None = None
    filled_at: datetime | None = None
    expires_at: datetime | None = None
    bags: tuple[CoaBag, ...] = ()
    dose_per_kg: Decimal | None = None
    weight_kg: Decimal | None = None
    deviations: tuple[CoaDeviation, ...] = ()
    qc_analysts: tuple[str, ...] = ()
    released_on_interim: bool = False

    def __post_init__(self) -> None:
        check_code(self.batch_number, CodeKind.BATCH)
        check_code(self.coi, CodeKind.COI)
        check_aware("generated_at", self.generated_at, self.filled_at, self.expires_at)
        if self.disposition_signature is not None and self.disposition is None:
            raise ValueError("A disposition signature needs the disposition it signs.")
        if (self.dose_per_kg is None) != (self.weight_kg is None):
            raise ValueError("A dose per kg needs the weight it was counted for.")
        if self.released_on_interim and not any(result.interim for result in self.results):
            raise ValueError("A release on an interim result needs that result.")
