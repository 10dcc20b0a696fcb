"""Who may do what. Views check before rendering a form; services check again before writing."""

from __future__ import annotations

from lab.exceptions import NotAllowed
from lab.models import User
from lab.models.users import ROLE_TITLES

#: Actions outside the process definition, and the roles that may take them.
ACTIONS: dict[str, tuple[str, ...]] = {
    "register_patient": ("technician", "supervisor"),
    "start_batch": ("technician", "supervisor"),
    "manage_users": ("admin",),
    "record_result": ("qc_analyst",),
    "report_deviation": ("technician", "supervisor", "qc_analyst", "qa_officer"),
    "investigate_deviation": ("supervisor", "qc_analyst", "qa_officer"),
    "close_deviation": ("qa_officer",),
    "print_labels": ("technician", "supervisor", "qc_analyst"),
    # Reviewing the trail is the quality unit's and the inspector's job (Annex 11 §9; reviewed
    # by someone independent of the process); administrators answer for accounts and access.
    "review_audit_trail": ("qa_officer", "auditor", "admin"),
    # A batch's own trail is part of its executed batch record (its appendix), which every
    # role that works on or inspects batches reads: one rule for the page, the record and /audit.
    "read_batch_trail": ("technician", "supervisor", "qc_analyst", "qa_officer", "auditor", "admin"),
    # Equipment (211.67, 211.182): supervisors and QA keep the register; whoever calibrates, cleans or
    # maintains writes the logbook; only QA puts an instrument back in service, signing for it.
    "register_equipment": ("supervisor", "qa_officer"),
    "record_equipment_log": ("technician", "supervisor", "qa_officer"),
    "take_equipment_out_of_service": ("supervisor", "qa_officer"),
    "return_equipment_to_service": ("qa_officer",),
    # Materials (211.80-211.89): QA or a supervisor keeps the catalogue; technicians receive lots;
    # QC records the incoming check; only QA (the quality unit) releases, rejects or recalls a lot.
    "manage_material_items": ("supervisor", "qa_officer"),
    "receive_lot": ("technician", "supervisor"),
    "check_lot": ("qc_analyst",),
    "decide_lot": ("qa_officer",),
    # After release (DOMAIN §5): administrators keep the register of treatment sites; the lab packs
    # and a second person of the lab verifies; the site's clinicians receive, check at the bedside,
    # infuse and acknowledge notices; QA decides on a product quarantined at a site.
    "manage_sites": ("admin",),
    "pack_shipment": ("technician", "supervisor"),
    "verify_packing": ("technician", "supervisor"),
    "receive_shipment": ("clinician",),
    "decide_site_quarantine": ("qa_officer",),
    "check_at_bedside": ("clinician",),
    "administer": ("clinician",),
    "dispose_bag": ("clinician", "technician", "supervisor"),
    "acknowledge_notice": ("clinician",),
    "read_coi_report": ("supervisor", "qa_officer", "auditor", "clinician"),
    "read_patient_positions": ("supervisor", "qa_officer", "auditor"),
}


def require_role(actor: User, roles: tuple[str, ...] | str, what: str) -> None:
    """Raise NotAllowed unless ``actor`` holds (or acts for) one of ``roles``."""
    roles = (roles,) if isinstance(roles, str) else roles
    if not actor.can_act_as(*roles):
        names = " or ".join(ROLE_TITLES.get(r, r).lower() for r in roles)
        article = "an" if names[0] in "aeiou" else "a"  # an administrator, an auditor
        raise NotAllowed(f"Only {article} {names} may {what}; you are signed in as {actor.role_title.lower()}.")


def require(actor: User, action: str, what: str) -> None:
    require_role(actor, ACTIONS[action], what)
