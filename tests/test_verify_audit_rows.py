"""``verify-audit`` reads the many signed records (step entries, QC results, decisions) as plain
rows, not models: each must hash, under every scheme, exactly as its model does, or a stored
signature would stop matching (or a changed record would pass)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from lab.extensions import db
from lab.models import Disposition, QcResult, Signature, StepEntry
from lab.services.signatures import HASH_SCHEMES, RECORD_TYPES, Credentials, digest, record_batch_id
from lab.services.signed_rows import load_records
from lab.services.steps import correct_value
from tests.factories import PASSWORD, entries, get_batch, user
from tests.quality import released_with_deviation

pytestmark = pytest.mark.requirements("P11-70")


@pytest.fixture
def signed(app: Flask, make_batch: Callable[..., str]) -> str:
    """A released batch with a deviation, and a batch with a corrected value: every kind of batch
    record signed. Returns the second batch's number."""
    released_with_deviation(app, make_batch())
    corrected = make_batch(until="enrichment", ref="SLE-02")
    with app.app_context():
        batch = get_batch(corrected)
        correct_value(batch, entries(corrected, "receipt")[0], "volume_ml", "185",
                      reason="Scale print-out reads 185 mL.", expected_version=batch.version, actor=user("tech1"),
                      credentials=Credentials(PASSWORD))
        db.session.commit()
    return corrected


def test_records_read_as_rows_hash_as_their_models_do(app: Flask, signed: str) -> None:
    with app.app_context():
        wanted: dict[str, list[int]] = defaultdict(list)
        for record_type, record_id in set(db.session.execute(select(Signature.record_type, Signature.record_id))):
            wanted[record_type].append(record_id)
        connection = db.session.connection()
        models = {name: model for model, name in RECORD_TYPES.items()}
        with Session(bind=connection) as session:  # open while hashing: a model may load what it signs
            loaded = load_records(connection, session, wanted)
            assert {"step_entry", "qc_result", "disposition", "deviation"} <= set(wanted)
            assert set(loaded) == {(kind, record_id) for kind, ids in wanted.items() for record_id in ids}
            for (record_type, record_id), record in loaded.items():
                model = db.session.get(models[record_type], record_id)
                assert record.batch_id == record_batch_id(model)
                for scheme in HASH_SCHEMES:
                    assert record.digest(scheme) == digest(model, scheme), (record_type, record_id, scheme)
        for model in (StepEntry, QcResult, Disposition):  # read as rows, not as models
            assert not any(isinstance(record.content, model) for record in loaded.values())
        corrected = loaded[("step_entry", entries(signed, "receipt")[0].id)]
        assert len(corrected.content.values) > len({value.field_key for value in corrected.content.values})


def test_a_record_whose_rows_are_gone_is_left_out(app: Flask, signed: str) -> None:
    with app.app_context():
        connection = db.session.connection()
        with Session(bind=connection) as session:
            assert load_records(connection, session, {"step_entry": [10 ** 9], "no_such_kind": [1]}) == {}
