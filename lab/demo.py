"""The demo lab of ``flask --app lab seed-demo``: people, lots, equipment and batches at
every stage, recorded through the same services the screens use, at past times on a
simulated clock that every stored time of the demo reads (lab.models.base.simulated_clock)."""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from io import BytesIO

from sqlalchemy import func, inspect, select

from lab import audit
from lab.extensions import db
from lab.models import Batch, Equipment, MaterialLot, ProcessVersion, Shipment, StepEntry, User, utcnow
from lab.models.base import SimulatedClock, simulated_clock
from lab.services.batches import start_batch
from lab.services.bedside import AdministrationInput, BedsideInput, check_at_bedside, record_administration
from lab.services.containers import confirm_scan
from lab.services.deviations import Investigation, close_deviation, record_investigation
from lab.services.disposition import DecisionInput, decide
from lab.services.labels import print_labels
from lab.services.patients import PatientInput, register_patient
from lab.services.processes import approve_shipped, effective_version, import_definition
from lab.services.progress import definition_for, lab_timezone
from lab.services.results import record_result
from lab.services.shipments import PackInput, pack_shipment, product_bags, verify_packing
from lab.services.signatures import Credentials
from lab.services.site_receipt import ReceiptInput, receive_shipment, store_logger_file
from lab.services.sites import SiteInput, register_site
from lab.services.steps import correct_value, record_step, verify_entry
from lab.services.submissions import submit_step
from lab.services.users import create_user
from workflows.definition import load_definition_text
from workflows.formatting import format_datetime
from workflows.model import FINISHED_CONTAINER_STATUSES

USERS = [  # username, role, printed name
    ("tech1", "technician", "Alex Rivera"),
    ("tech2", "technician", "Sam Chen"),
    ("supervisor1", "supervisor", "Priya Nair"),
    ("qc1", "qc_analyst", "Jonas Weber"),
    ("qa1", "qa_officer", "Maria Rossi"),
    ("auditor1", "auditor", "Olu Adeyemi"),
    ("admin", "admin", "Lab Administrator"),
]
#: The treatment site the demo's products go to, and its clinicians (username, printed name).
SITE = SiteInput("NUH-HEM", "Northern University Hospital, Haematology and Cell Therapy Unit",
                 "Level 4, 1 Infirmary Road, Newcastle upon Tyne NE1 4LP, United Kingdom",
                 "Cell therapy coordinator, +44 191 000 0400, celltherapy@nuh.example")
CLINICIANS = [("nurse1", "Grace Okafor"), ("doctor1", "Daniel Lee")]
# Lots are received through lab.services.materials, which gives each lot a code with a check
# character (L-...): look a demo lot's code up by its supplier lot number (lot_code).
ITEMS = [  # name, material kind, supplier, catalogue number, storage, unit, QC needed
    ("CliniMACS CD4 MicroBeads", "cd4_microbeads", "Miltenyi Biotec", "170-076-702", "2-8 °C", "vials", True),
    ("CliniMACS CD8 MicroBeads", "cd8_microbeads", "Miltenyi Biotec", "170-076-703", "2-8 °C", "vials", True),
    ("CliniMACS Prodigy tubing set TS520", "tubing_set", "Miltenyi Biotec", "130-111-004", "15-25 °C", "sets", False),
    ("MACS GMP T Cell TransAct", "transact", "Miltenyi Biotec", "170-076-156", "2-8 °C", "mL", True),
    ("TexMACS GMP medium", "medium", "Miltenyi Biotec", "170-076-306", "2-8 °C, protected from light", "mL", True),
    ("MACS GMP IL-7 / IL-15", "cytokine", "Miltenyi Biotec", "170-076-111", "-20 °C", "vials", True),
    ("CD19-CAR lentiviral vector", "lentiviral_vector", "Demo Vector Facility", "LV-CD19", "≤ -70 °C", "mL", True),
    ("CryoStor CS10", "cryomedium", "BioLife Solutions", "210102", "2-8 °C", "mL", True),
    ("Cryopreservation bag 250 mL", "cryobag", "Demo Bags Inc.", "CB-250", "15-25 °C", "bags", False),
]
LOTS = [  # item name, supplier lot number, quantity received, containers, titer (vector lots)
    ("CliniMACS CD4 MicroBeads", "CD4-2611", 40, 40, None),
    ("CliniMACS CD8 MicroBeads", "CD8-2611", 40, 40, None),
    ("CliniMACS Prodigy tubing set TS520", "TS520-2609", 40, 40, None),
    ("MACS GMP T Cell TransAct", "TRA-2610", 200, 20, None),
    ("TexMACS GMP medium", "TEX-2610", 50000, 50, None),
    ("MACS GMP IL-7 / IL-15", "IL715-2609", 40, 40, None),
    ("CD19-CAR lentiviral vector", "LV-CD19-0042", 500, 50, 1.0e8),
    ("CryoStor CS10", "CS10-2607", 2000, 20, None),
    ("Cryopreservation bag 250 mL", "BAG-2605", 100, 2, None),
]
#: Lots the demo shows being refused: item, supplier lot number, days to expiry, what happens to it
#: (an expired released lot, a lot in quarantine waiting for QC, a lot QC failed and QA rejected).
UNUSABLE_LOTS = [
    ("TexMACS GMP medium", "TEX-2501", -5, "released"),
    ("CD19-CAR lentiviral vector", "LV-CD19-0043", 365, "quarantined"),
    ("CliniMACS CD4 MicroBeads", "CD4-2612", 365, "rejected"),
]
# Equipment is registered through lab.services.equipment, which gives each instrument a code
# with a check character (E-...): look a demo instrument's code up by its name (equipment_code).
PROCESSOR, CABINET, INCUBATOR = "CliniMACS Prodigy #1", "Biosafety cabinet class II, room 2", "CO2 incubator #1"
FREEZER, LN2_FREEZER, OVERDUE_INCUBATOR = "Controlled-rate freezer", "LN2 vapour-phase freezer #1", "CO2 incubator #2"
EQUIPMENT = [  # kind, name, serial number, location
    ("cell_processor", PROCESSOR, "PRD-10452", "Clean room 1"),
    ("biosafety_cabinet", CABINET, "BSC-77120", "Clean room 2"),
    ("incubator", INCUBATOR, "HC-40871", "Clean room 2"),
    ("controlled_rate_freezer", FREEZER, "CRF-2291", "Cryo room"),
    ("ln2_freezer", LN2_FREEZER, "LN2-5530", "Cryo room"),
]
OVERDUE_EQUIPMENT = ("incubator", OVERDUE_INCUBATOR, "HC-40877", "Clean room 2")
#: When each step is recorded: (day after batch start, hour of that day after the start's
#: time). Activation is culture day 0; the harvest falls on culture day 12; the freezer run
#: (from 2 h to 30 min before cryopreservation is recorded) starts after the fill.
STEP_TIME = {"receipt": (0, 2), "enrichment": (0, 4), "activation": (1, 2.5), "transduction": (2, 2.75),
             "harvest": (13, 3), "formulation": (13, 3.5), "cryopreservation": (13, 6), "storage": (13, 6.5)}


class DemoRefused(Exception):
    """Seeding cannot run on this database; the message says why."""


class DemoExists(DemoRefused):
    """The database is not empty: seeding would duplicate or mix with real records."""


def add_inventory(today: date, password: str) -> None:
    """Usable lots and equipment for every step, plus an expired lot, a quarantined lot, a rejected
    lot and an incubator past its calibration date, through the services people use: a supervisor
    adds the items, a technician receives each lot with a certificate, QC checks it and QA
    releases it, signing with ``password``. Call inside ``audit.action``, after the users exist."""
    add_lots(today, password)
    add_equipment(today)


def add_equipment(today: date) -> None:
    """The demo's instruments, registered by QA with a calibration in their logbooks (certificate
    attached): due in 90 days from ``today``, and one incubator 10 days past its due date."""
    from lab.services.equipment import EquipmentInput, LogInput, record_log_entry, register_equipment

    actor = db.session.scalars(select(User).where(User.role == "qa_officer").order_by(User.id)).first()
    assert actor is not None, "add the demo's users first"
    now = utcnow()
    calibrated = min(now.date(), today) - timedelta(days=20)
    for (kind, name, serial, location), due in [*((row, today + timedelta(days=90)) for row in EQUIPMENT),
                                               (OVERDUE_EQUIPMENT, today - timedelta(days=10))]:
        item = register_equipment(EquipmentInput(name, kind, serial, location, "qualified", None), actor=actor, now=now)
        done = min(calibrated, due - timedelta(days=365))
        certificate = _certificate(f"Calibration certificate {serial}", f"{name}, serial {serial}",
                                   f"Calibrated {done.isoformat()}: within tolerance. Next due {due.isoformat()}.")
        record_log_entry(item, LogInput("calibration", done, "Demo Calibration Services Ltd.",
                                        "Calibrated against traceable reference standards; within tolerance.",
                                        "pass", due, (BytesIO(certificate), f"calibration-{serial}.pdf")),
                         actor=actor, now=now)


def _certificate(*lines: str) -> bytes:
    """A one-page PDF standing in for a supplier's certificate in the demo."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen.canvas import Canvas

    buffer = BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=True)
    for n, line in enumerate(("DEMO - not a real certificate", *lines)):
        canvas.drawString(72, 770 - 18 * n, line)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def add_lots(today: date, password: str) -> None:
    """The demo's material items and lots (see add_inventory)."""
    from lab.services.materials import (
        CheckInput,
        ItemInput,
        LotInput,
        create_item,
        decide_lot,
        receive_lot,
        record_check,
    )

    def person(role: str) -> User:
        found = db.session.scalars(select(User).where(User.role == role).order_by(User.id)).first()
        assert found is not None, "add the demo's users first"
        return found

    supervisor, tech, qc, qa = person("supervisor"), person("technician"), person("qc_analyst"), person("qa_officer")
    now = utcnow()
    items = {name: create_item(ItemInput(name, material, supplier, catalogue, storage, unit, qc_needed), actor=supervisor,
                               now=now) for name, material, supplier, catalogue, storage, unit, qc_needed in ITEMS}
    rows = [(name, number, quantity, count, titer, 365, "released") for name, number, quantity, count, titer in LOTS]
    rows += [(name, number, 10, 10, 1.0e8 if "vector" in name else None, days, outcome)
             for name, number, days, outcome in UNUSABLE_LOTS]
    for name, number, quantity, count, titer, days, outcome in rows:
        expiry = today + timedelta(days=days)
        # A lot that is expired now was received, checked and released while still in date (the demo's
        # clock starts before it expired; a test's inventory, on the real clock, is set up in its past).
        when = now if expiry > now.date() else datetime.combine(expiry - timedelta(days=60), now.timetz())
        item = items[name]
        certificate = _certificate(f"Certificate of analysis: {name}", f"Lot {number}, expiry {expiry.isoformat()}",
                                   f"Functional titer {titer:.2e} TU/mL" if titer else "Conforms to specification.")
        lot = receive_lot(LotInput(str(item.id), number, expiry.isoformat(), str(quantity), str(count),
                                   when.date().isoformat(), "" if titer is None else repr(titer)),
                          BytesIO(certificate), f"coa-{number}.pdf", actor=tech, now=when)
        if outcome == "quarantined":
            continue
        passed = outcome != "rejected"
        if item.needs_qc or not passed:
            record_check(lot, CheckInput(True, passed, True, "" if passed else "Two vials arrived cracked."),
                         actor=qc, now=when)
        decide_lot(lot, outcome, reason="" if passed else "Incoming check failed: containers damaged in transit.",
                   actor=qa, credentials=Credentials(password), now=when)


def lot_code(lot_number: str) -> str:
    """The code the demo lot with supplier lot number ``lot_number`` was received under."""
    code = db.session.scalar(select(MaterialLot.code).where(MaterialLot.lot_number == lot_number)
                             .order_by(MaterialLot.id))
    if code is None:
        raise LookupError(f"No demo lot {lot_number!r}: was add_inventory run?")
    return code


def equipment_code(name: str) -> str:
    """The code the demo instrument called ``name`` was registered under (codes are generated)."""
    code = db.session.scalar(select(Equipment.code).where(Equipment.name == name).order_by(Equipment.id))
    if code is None:
        raise LookupError(f"No demo equipment called {name!r}: was add_inventory run?")
    return code


def local(when: datetime) -> str:
    """``when`` as a datetime-local form field sends it, in UTC."""
    return when.strftime("%Y-%m-%dT%H:%M") + "Z"


def step_values(step_key: str, *, when: datetime, batch: Batch, **overrides: str) -> dict[str, str]:
    """Typical in-limit form text for ``step_key`` of ``batch`` recorded at ``when``, with the
    batch's COI and its containers scanned where the step hands them over."""
    coi = batch.patient.coi
    values: dict[str, dict[str, str]] = {
        "receipt": {"coi_on_bag": coi, "collection_end": local(when - timedelta(hours=9)),
                    "shipping_temp_min": "3.5", "shipping_temp_max": "6.0", "volume_ml": "180",
                    "bag_intact": "yes", "documents_complete": "yes", "decision": "accept"},
        "enrichment": {"pre_tnc": "8.0e9", "post_viable_cells": "2.4e9", "post_viability_pct": "95",
                       "cd3_purity_pct": "97.5", "cd4_microbeads_lot": lot_code("CD4-2611"), "cd8_microbeads_lot": lot_code("CD8-2611"),
                       "tubing_set_lot": lot_code("TS520-2609"), "processor": equipment_code(PROCESSOR)},
        "activation": {"cells_seeded": "1.0e8", "transact_lot": lot_code("TRA-2610"), "transact_volume_ml": "2", "medium_volume_ml": "250",
                       "medium_lot": lot_code("TEX-2610"), "cytokine_lot": lot_code("IL715-2609"), "processor": equipment_code(PROCESSOR)},
        "transduction": {"vector_lot": lot_code("LV-CD19-0042"), "titer_tu_per_ml": "1.0e8", "vector_volume_ml": "7.5",
                         "viable_cells": "1.0e8", "biosafety_cabinet": equipment_code(CABINET)},
        "expansion": {"culture_day": "6", "viable_cells": "1.5e9", "viability_pct": "92", "incubator": equipment_code(INCUBATOR)},
        "harvest": {"total_viable_cells": "3.0e9", "viability_pct": "91", "cd3_pct": "96", "car_pct": "34",
                    "biosafety_cabinet": equipment_code(CABINET)},
        "formulation": {"target_dose_per_kg": "1e6", "car_t_per_ml": "2.0e6", "max_fill_ml": "70",
                        "cryomedium_lot": lot_code("CS10-2607"), "bag_lot": lot_code("BAG-2605"), "biosafety_cabinet": equipment_code(CABINET)},
        "cryopreservation": {"freezer": equipment_code(FREEZER), "program": "CAR-T -1 C/min to -90 C",
                             "run_start": local(when - timedelta(hours=2)),
                             "run_end": local(when - timedelta(minutes=30)), "profile_ok": "yes"},
        "storage": {"ln2_freezer": equipment_code(LN2_FREEZER), "rack": "R3", "box": "B12", "position": "A5", "freezer_temp_c": "-185"},
    }
    return {**values[step_key], **_scans(batch, step_key), **overrides}


def _scans(batch: Batch, step_key: str) -> dict[str, str]:
    """The codes a technician would scan into the step's hand-off fields."""
    step = definition_for(batch).step(step_key)
    scans = {}
    for spec in step.handoffs:
        usable = [c.code for c in batch.containers
                  if c.kind == spec.container and c.status not in FINISHED_CONTAINER_STATUSES]
        scans[spec.key] = "\n".join(usable) if spec.type == "containers" else (usable[-1] if usable else "")
    return scans


#: The demo patients: ref, initials, born, kg, indication, days since the batch started, what it shows.
PATIENTS = [
    ("SLE-01", "KM", date(1988, 3, 14), 64.5, "Systemic lupus erythematosus, refractory", 16, "manufacturing complete"),
    ("SLE-02", "JT", date(1995, 7, 2), 71.0, "Systemic lupus erythematosus, refractory", 8,
     "out-of-limit viability with its deviation, and a corrected count"),
    ("SLE-03", "AH", date(1979, 11, 23), 55.2, "Systemic lupus erythematosus, lupus nephritis", 8,
     "mid-expansion, several daily counts"),
    ("DLBCL-04", "RS", date(1961, 1, 9), 82.3, "Diffuse large B-cell lymphoma, relapsed", 14,
     "harvest waiting for verification"),
    ("SLE-05", "LB", date(2001, 5, 30), 49.8, "Systemic lupus erythematosus, refractory", 0,
     "just received, receipt waiting for verification"),
    ("SLE-07", "MN", date(1992, 9, 17), 58.0, "Systemic lupus erythematosus, refractory", 0,
     "scheduled: leukapheresis expected today"),
]


#: A demo story (one batch's history): each ``next`` gives the time of its next action, and
#: resuming it performs that action. ``play`` runs the stories together in time order.
Story = Iterator[datetime]
#: How long after a step is recorded the second person verifies it (before the next step).
VERIFIED_AFTER = timedelta(minutes=20)


def step_time(start: datetime, step_key: str) -> datetime:
    """When the demo records ``step_key`` of a batch started at ``start`` (its STEP_TIME)."""
    day, hour = STEP_TIME[step_key]
    return start + timedelta(days=day, hours=hour)


def count_time(start: datetime, culture_day: int) -> datetime:
    """When the demo records the culture-day count ``culture_day``: that many days after activation."""
    return step_time(start, "activation") + timedelta(days=culture_day)


class Recorder:
    """Records batches through the services at past times: one person performs every step,
    another verifies, each signing with ``password``. Used by the demo and by the tests."""

    def __init__(self, performer: User, verifier: User, password: str, now: datetime) -> None:
        self.performer = performer
        self.verifier = verifier
        self.password = password
        self.now = now

    def record(self, batch: Batch, step_key: str, when: datetime, *, comment: str = "",
               **overrides: str) -> StepEntry:
        values = step_values(step_key, when=when, batch=batch, **overrides)
        entry = record_step(batch, step_key, values, comment=comment, expected_version=None,
                            actor=self.performer, credentials=Credentials(self.password), now=when)
        db.session.flush()
        made = [c for c in batch.containers if c.created_entry is entry]
        if made:  # print their labels, stick them on and scan them back
            print_labels(made, actor=self.performer, output="pdf", now=when)
            for container in made:
                confirm_scan(container, container.code, event="label applied", to_location="",
                             actor=self.performer, now=when)
        return entry

    def verify(self, batch: Batch, entry: StepEntry, when: datetime) -> None:
        verify_entry(batch, entry, credentials=Credentials(self.password), expected_version=None,
                     actor=self.verifier, now=when)

    def steps(self, batch: Batch, start: datetime, *, until: str | None = None,
              expansion: tuple[dict[str, str], ...] = (), unverified: frozenset[str] = frozenset()) -> Story:
        """The story of recording every step from receipt up to ``until`` (excluded), verifying
        all but ``unverified``: ``start`` is when the batch started, each step is recorded at
        its STEP_TIME and each count on its culture day; a day's "comment" explains an
        out-of-limit count."""
        for step in definition_for(batch).steps:
            if step.key == until:
                return
            if step.key == "expansion":
                for day in expansion:
                    when = count_time(start, int(day["culture_day"]))
                    yield when
                    values = {key: lot_code(value) if key.endswith("_lot") else value
                              for key, value in day.items() if key != "comment"}
                    self.record(batch, "expansion", when, comment=day.get("comment", ""), **values)
                continue
            when = step_time(start, step.key)
            yield when
            entry = self.record(batch, step.key, when)
            if step.verify and step.key not in unverified:
                verified = min(when + VERIFIED_AFTER, self.now)
                yield verified
                self.verify(batch, entry, verified)

    def run(self, batch: Batch, start: datetime, *, until: str | None = None,
            expansion: tuple[dict[str, str], ...] = (), unverified: frozenset[str] = frozenset()) -> None:
        """Play ``steps`` at once, on the real clock: each service is still given its past time (tests)."""
        for _ in self.steps(batch, start, until=until, expansion=expansion, unverified=unverified):
            pass


def play(stories: Iterable[Story], clock: SimulatedClock) -> None:
    """Run ``stories`` together on ``clock``, every action of every story in time order (ties
    in the order given), so the audit trail's ids follow its times."""
    queue: list[tuple[datetime, int, Story]] = []

    def resume(index: int, story: Story) -> None:  # perform its pending action, queue its next
        when = next(story, None)
        if when is not None:
            heapq.heappush(queue, (when, index, story))

    for index, story in enumerate(stories):
        resume(index, story)
    while queue:
        when, index, story = heapq.heappop(queue)
        clock.set(when)
        resume(index, story)


@dataclass(frozen=True)
class Cast:
    """Who does what in the demo: ``recorder`` records and verifies steps; people by username."""

    recorder: Recorder
    people: dict[str, User]

    def credentials(self) -> Credentials:
        return Credentials(self.recorder.password)


#: A demo batch's stage: the story of ``batch`` from its start at ``start`` on.
Stage = Callable[[Cast, Batch, datetime], Story]


def _refuse_unless_empty() -> None:
    if not inspect(db.engine).has_table("users"):
        raise DemoRefused("The database has no tables yet: run `flask --app lab init-db` first.")
    users = db.session.scalar(select(func.count()).select_from(User)) or 0
    if db.session.scalar(select(User.id).where(User.username == "tech1")) is not None:
        batches = db.session.scalar(select(func.count()).select_from(Batch)) or 0
        raise DemoExists(f"The demo lab is already here ({users} users, {batches} batches): nothing was added.")
    if users:
        raise DemoRefused(f"This database already holds {users} user account(s): seed-demo only fills an "
                          "empty database, so nothing was added.")


def seed(password: str) -> str:
    """Build the demo lab in an empty database and say how to sign in.

    Its history (a lab opened the day before its first batch, then every batch's steps) is
    recorded on a simulated clock, in time order, ending before now; every audit entry's
    reason says it is demo data. Raises DemoExists when the demo is already there,
    DemoRefused when the database is not empty or has no schema, InvalidInput when
    ``password`` is too weak.
    """
    _refuse_unless_empty()
    now = utcnow()
    rows = PATIENTS + RELEASE_PATIENTS + CLINIC_PATIENTS
    starts = {ref: now - timedelta(days=days_ago, hours=3) for ref, *_, days_ago, _ in rows}
    opened = min(starts.values()) - timedelta(days=1)
    with simulated_clock(opened) as clock:
        for username, role, full_name in USERS:
            # The one exception to temporary passwords: the README's demo sign-in must work as printed.
            create_user(username, full_name, role, password, actor=None, temporary=False)
        site = register_site(SITE, actor=db.session.scalars(select(User).where(User.username == "admin")).one())
        for username, full_name in CLINICIANS:
            create_user(username, full_name, "clinician", password, actor=None, temporary=False, site_id=site.id)
        with audit.action("demo.inventory", actor=None):
            add_inventory(now.date(), password)
        people = {u.username: u for u in db.session.scalars(select(User))}
        treated = {p[0] for p in CLINIC_PATIENTS}
        patients = [(PatientInput(ref, initials, born, weight, indication,
                                  treating_site_id=site.id if ref in treated else None), starts[ref])
                    for ref, initials, born, weight, indication, _, _ in rows]
        # Installation: QA approves the shipped process versions once (approve-shipped-processes).
        approve_shipped(actor=people["qa1"], credentials=Credentials(password, "qa1"), now=clock.now)
        cast = Cast(Recorder(people["tech1"], people["tech2"], password, now), people)
        play([_story(cast, patient, start, STAGES[patient.patient_ref]) for patient, start in patients], clock)
        ended = clock.now
        draft = demo_draft(people["admin"], now=ended)
    batches = {b.patient.patient_ref: b for b in db.session.scalars(select(Batch))}
    lines = [f"Demo lab ready. Sign in with password {password!r} as one of: "
             + ", ".join(f"{u} ({r})" for u, r, _ in USERS) + "; at the treatment site " + SITE.code + ": "
             + ", ".join(f"{u} (clinician)" for u, _ in CLINICIANS) + ".",
             (f"Its history, {format_datetime(opened)} to {format_datetime(ended)}, was recorded on a simulated "
              "clock: every audit entry's reason says it is demo data."), "Batches:"]
    for ref, *_, shows in rows:
        batch = batches[ref]
        lines.append(f"  {batch.batch_number}  {ref:<9} {batch.state:<11} {shows}")
    lines.append(f"Process {draft.key} version {draft.version} waits for QA's approval: "
                 f"/processes/{draft.key}/{draft.version}.")
    return "\n".join(lines)


def _story(cast: Cast, patient: PatientInput, start: datetime, stage: Stage) -> Story:
    """The supervisor registers ``patient`` and starts its batch at ``start``; then ``stage``."""
    yield start
    supervisor = cast.people["supervisor1"]
    product = "cd19-car-t-nhl" if patient.patient_ref in LYMPHOMA_PRODUCT else "cd19-car-t"
    batch = start_batch(register_patient(patient, actor=supervisor, now=start), actor=supervisor, now=start,
                        process_key=product)
    yield from stage(cast, batch, start)


#: Patients whose batch is made under the lymphoma product (its dose chosen at scheduling).
LYMPHOMA_PRODUCT = frozenset({"DLBCL-04"})
#: The receipt volume's acceptance limit (>= 50 mL): the demo's draft raises it.
_VOLUME_LIMIT = re.compile(r"^(\s*limit_min\s*=\s*)50\b", re.MULTILINE)


def demo_draft(uploader: User, *, now: datetime) -> ProcessVersion:
    """A new version of cd19-car-t waiting for QA's approval: the effective one with a higher
    minimum apheresis volume, so its page shows what changed."""
    current = effective_version("cd19-car-t", now)
    assert current is not None
    text = current.definition.source_text
    version = current.version + 1
    text = re.sub(r"^version\s*=\s*\d+\s*$", f"version = {version}", text, count=1, flags=re.MULTILINE)
    text = _VOLUME_LIMIT.sub(r"\g<1>60", text, count=1)
    definition = load_definition_text(text, f"cd19_car_t_v{version}.toml")
    return import_definition(definition, actor=uploader, origin="uploaded", now=now,
                             reason="Raise the minimum apheresis volume to 60 mL (site validation report).")


#: Daily counts of the batches in manufacturing.
COUNTS = ({"culture_day": "3", "viable_cells": "4.0e8", "viability_pct": "90"},
          {"culture_day": "5", "viable_cells": "9.5e8", "viability_pct": "93", "feed_volume_ml": "100",
           "medium_lot": "TEX-2610"},  # a supplier lot number: Recorder.steps scans the lot's code
          {"culture_day": "7", "viable_cells": "1.6e9", "viability_pct": "94"})


def _complete(cast: Cast, batch: Batch, start: datetime) -> Story:
    yield from cast.recorder.steps(batch, start, expansion=COUNTS)


def _expanding(cast: Cast, batch: Batch, start: datetime) -> Story:
    yield from cast.recorder.steps(batch, start, until="harvest", expansion=COUNTS[:2] + (
        {"culture_day": "6", "viable_cells": "1.3e9", "viability_pct": "92"},))
    # Day 7's count, sent by the cell counter in tech1's name: it waits for a technician's signature. (Without
    # an API token: a token's expiry would be a stored time in the future of the demo's history.)
    when = count_time(start, 7) - timedelta(hours=1)
    yield when
    submit_step(batch, "expansion", {"viable_cells": "1.45e9", "viability_pct": "91"}, comment="Cell counter NC-202",
                actor=cast.people["tech1"], token=None, expected_version=None, sample_id=f"{batch.batch_number}-D7",
                measured_at=when, now=when)


def _harvest_unverified(cast: Cast, batch: Batch, start: datetime) -> Story:
    yield from cast.recorder.steps(batch, start, until="formulation", expansion=COUNTS,
                                   unverified=frozenset({"harvest"}))


def _received(cast: Cast, batch: Batch, start: datetime) -> Story:
    yield from cast.recorder.steps(batch, start, until="enrichment", unverified=frozenset({"receipt"}))


def _scheduled(cast: Cast, batch: Batch, start: datetime) -> Story:
    yield from ()


def _deviating(cast: Cast, batch: Batch, start: datetime) -> Story:
    """An out-of-limit day-6 viability (its deviation opens), a typo in the day-5 count
    corrected, and the culture bag's label reprinted."""
    demo = cast.recorder
    yield from demo.steps(batch, start, until="harvest", expansion=(
        COUNTS[0], {"culture_day": "5", "viable_cells": "1.2e9", "viability_pct": "91"}))
    day6 = count_time(start, 6)
    yield day6
    demo.record(batch, "expansion", day6, culture_day="6", viable_cells="6.1e8", viability_pct="62",
                comment="Viability below limit after medium exchange; supervisor informed, count repeated "
                        "next day.")
    corrected, reprinted = day6 + timedelta(minutes=15), day6 + timedelta(minutes=20)
    yield corrected
    typo = next(e for e in batch.entries if e.step_key == "expansion" and e.occurrence == 2)
    correct_value(batch, typo, "viable_cells", "1.2e8", reason="Transcription error: counter print-out "
                  "reads 1.2 × 10⁸ viable cells, not 1.2 × 10⁹.", expected_version=None, actor=demo.performer,
                  credentials=cast.credentials(), now=corrected)
    yield reprinted
    culture = next(c for c in batch.containers if c.kind == "culture_bag")
    print_labels([culture], actor=demo.performer, output="pdf", now=reprinted,
                 reason="Label smudged by condensation in the incubator")


#: In-specification release results (DOMAIN §2); sterility is still "no growth to date".
RELEASE_RESULTS = {"appearance": "conforms", "viability": "91.2", "cd3_identity": "96.8", "car_expression": "34",
                   "dose": "1.02e6", "sterility": "no growth to date", "mycoplasma": "negative",
                   "endotoxin": "< 0.5", "potency": "412", "rcl": "not detected"}
#: Batches past manufacturing, as PATIENTS lists them.
RELEASE_PATIENTS = [
    ("SLE-08", "PW", date(1990, 2, 11), 61.0, "Systemic lupus erythematosus, refractory", 17,
     "results in, waiting for QA review, with a closed deviation"),
    ("DLBCL-09", "GH", date(1958, 6, 3), 77.4, "Diffuse large B-cell lymphoma, relapsed", 21,
     "released, certificate of analysis ready; sterility final still to come"),
]


#: Daily counts of the batches past manufacturing: a low viability on day 6, recovered on day 7.
RELEASE_COUNTS = ({"culture_day": "3", "viable_cells": "4.2e8", "viability_pct": "91"},
                  {"culture_day": "6", "viable_cells": "1.1e9", "viability_pct": "68",
                   "comment": "Viability 68 % after the day-5 feed; count repeated on day 7 at 88 %. "
                              "Supervisor informed."},
                  {"culture_day": "7", "viable_cells": "1.5e9", "viability_pct": "88"})


def _tested(cast: Cast, batch: Batch, start: datetime, expansion: tuple[dict[str, str], ...]) -> Story:
    """Manufactured, then every release test in specification, recorded on day 15."""
    yield from cast.recorder.steps(batch, start, expansion=expansion)
    tested = start + timedelta(days=15)
    yield tested
    for test_key, text in RELEASE_RESULTS.items():
        record_result(batch, test_key, text, comment="", actor=cast.people["qc1"], credentials=cast.credentials(),
                      now=tested)


def _in_review(cast: Cast, batch: Batch, start: datetime) -> Story:
    """Results in, waiting for QA review; the day-6 deviation investigated and closed."""
    yield from _tested(cast, batch, start, RELEASE_COUNTS)
    [deviation] = batch.deviations
    investigated = start + timedelta(days=15, hours=4)
    yield investigated
    record_investigation(deviation, Investigation(
        "minor", "Medium exchange on day 5 with medium not pre-warmed (incubator door left open during the feed).",
        "Transient: viability recovered to 88 % by day 7 and 91 % at release; no effect on the product or on "
        "other batches.", "Culture checked daily until harvest.",
        "Feeding SOP now requires pre-warmed medium; technicians re-trained."),
        actor=cast.people["supervisor1"], now=investigated)
    closed = start + timedelta(days=16)
    yield closed
    close_deviation(deviation, actor=cast.people["qa1"], credentials=cast.credentials(), now=closed)


def _released(cast: Cast, batch: Batch, start: datetime) -> Story:
    """Released by QA on day 16, sterility still "no growth to date"."""
    yield from _tested(cast, batch, start, (RELEASE_COUNTS[0], RELEASE_COUNTS[2]))
    decided = start + timedelta(days=16)
    yield decided
    decide(batch, DecisionInput("release"), expected_version=None, actor=cast.people["qa1"],
           credentials=cast.credentials(), now=decided)


#: Batches that leave the lab for the treatment site, as PATIENTS lists them.
CLINIC_PATIENTS = [
    ("SLE-12", "TK", date(1984, 8, 19), 66.0, "Systemic lupus erythematosus, refractory", 27,
     "shipped to NUH-HEM, received, checked at the bedside and infused: its chain is closed"),
    ("SLE-11", "CD", date(1979, 12, 5), 59.5, "Systemic lupus erythematosus, refractory", 19,
     "shipped to NUH-HEM, in transit"),
]
#: The dry shipper and its temperature logger, by patient.
SHIPPERS = {"SLE-12": ("DS-NUH-03", "TL-5521"), "SLE-11": ("DS-NUH-04", "TL-5530")}


def _shipped(cast: Cast, batch: Batch, start: datetime) -> Story:
    """Released on day 16; tech1 packs its bags into a dry shipper for the patient's site on day 17
    and tech2 verifies the packing: the batch is shipped, the shipment in transit."""
    yield from _released(cast, batch, start)
    packed = start + timedelta(days=17)
    yield packed
    shipper, logger = SHIPPERS[batch.patient.patient_ref]
    assert batch.patient.treating_site_id is not None
    shipment = pack_shipment(batch, PackInput([c.code for c in product_bags(batch)], shipper, logger,
                                              batch.patient.treating_site_id, packed + timedelta(minutes=45),
                                              "Cryoport courier, waybill 7731"),
                             actor=cast.people["tech1"], now=packed)
    verified = packed + timedelta(minutes=20)
    yield verified
    verify_packing(shipment, actor=cast.people["tech2"], credentials=cast.credentials(), now=verified)


def _infused(cast: Cast, batch: Batch, start: datetime) -> Story:
    """Shipped on day 17, received at the site on day 18 (logger -182.4 to -171.0 °C, its printout
    filed), checked at the bedside by two clinicians and infused on day 19 within the limit."""
    yield from _shipped(cast, batch, start)
    nurse, password = cast.people["nurse1"], cast.recorder.password
    [shipment] = [s for s in db.session.scalars(select(Shipment).where(Shipment.batch_id == batch.id))]
    arrived = start + timedelta(days=18)
    yield arrived + timedelta(minutes=15)
    printout = store_logger_file(BytesIO(_certificate(f"Temperature logger {shipment.logger_code}",
                                                      "Minimum -182.4 °C", "Maximum -171.0 °C",
                                                      "No alarm during transit")),
                                 f"{shipment.logger_code}.pdf", actor=nurse, now=arrived)
    codes = [c.code for c in product_bags(batch)]
    receive_shipment(shipment, ReceiptInput(shipment.shipper_code, codes, "-182.4", "-171.0", True, arrived,
                                            "Haematology LN2 dewar 2, rack B"),
                     logger_file=printout, actor=nurse, credentials=Credentials(password, "nurse1"),
                     now=arrived + timedelta(minutes=15))
    infusion_day = start + timedelta(days=19)
    for code in codes:
        checked = infusion_day
        yield checked
        check = check_at_bedside(BedsideInput(code, "wristband", wristband=batch.patient.coi, second_username="doctor1",
                                      second_password=password),
                                 actor=nurse, credentials=Credentials(password), now=checked)
        # Thaw, infusion start and end as typed (whole minutes); recorded as the infusion ends.
        minute = checked.replace(second=0, microsecond=0)
        times = [minute + timedelta(minutes=m) for m in (2, 5, 10, 18)]
        recorded = times[-1]
        yield recorded
        record_administration(
            check, AdministrationInput(*(f"{t.astimezone(lab_timezone()):%Y-%m-%d %H:%M}" for t in times),
                                                    reactions="None during the infusion; vital signs stable."),
            actor=nurse, credentials=Credentials(password), now=recorded)
        infusion_day = recorded + timedelta(minutes=10)


#: What happens to each demo patient's batch (PATIENTS, RELEASE_PATIENTS and CLINIC_PATIENTS say what it shows).
STAGES: dict[str, Stage] = {"SLE-12": _infused, "SLE-11": _shipped, "SLE-01": _complete, "SLE-02": _deviating, "SLE-03": _expanding,
                            "DLBCL-04": _harvest_unverified, "SLE-05": _received, "SLE-07": _scheduled,
                            "SLE-08": _in_review, "DLBCL-09": _released}
