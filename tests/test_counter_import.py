"""Importing a cell counter's export for a count step, in the browser and through the API: the
file becomes a pending submission (viable cells = concentration × volume, the viability, the
file's sample ID and time) kept with its SHA-256, which the executed record names once the
entry is signed; a file of another format, sample or time is refused and nothing is written."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Attachment, Container, Submission
from lab.services.submissions import withdraw
from tests.factories import form_data, get_batch, page_text, snapshot, step_values, user
from tests.readback import text_of

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("CNT-1")]

DATA = Path(__file__).parent / "data" / "counters"
SAMPLE = b"B-A9999-26-00001-5 D6"
VICELL_TIME = b"11/25/2026 9:41:07 AM"
NC200_TIME = b"Date time;20261125 093012\r\nTime zone offset;1"
Login = Callable[..., FlaskClient]


def vicell(sample: str, when: datetime, *, viable: str = "2.03") -> bytes:
    """The Vi-CELL BLU test export for ``sample`` measured at ``when`` (written in the lab's zone, UTC in tests)."""
    content = (DATA / "vicell_blu_count.csv").read_bytes()
    return (content.replace(SAMPLE, sample.encode()).replace(VICELL_TIME, when.strftime("%m/%d/%Y %I:%M:%S %p")
                                                             .encode()).replace(b'"2.03"', f'"{viable}"'.encode()))


def nc200(sample: str, when: datetime) -> bytes:
    content = (DATA / "nc200_count.csv").read_bytes()
    return content.replace(SAMPLE, sample.encode()).replace(
        NC200_TIME, f"Date time;{when:%Y%m%d %H%M%S}\r\nTime zone offset;0".encode())


def rows(app: Flask, number: str) -> dict[str, Any]:
    """What a refused import must leave unchanged: the record's rows, submissions and files."""
    with app.app_context():
        kept = {model.__name__: db.session.scalar(select(func.count()).select_from(model))
                for model in (Submission, Attachment)}
    return {**snapshot(app, number), **kept}


def upload(client: FlaskClient, number: str, step_key: str, content: bytes | None, *, volume: str = "120",
           filename: str = "count.csv", **extra: Any) -> Any:
    data: dict[str, Any] = {"volume_ml": volume, "batch_version": version(client, number), **extra}
    if content is not None:
        data["file"] = (BytesIO(content), filename)
    return client.post(f"/batches/{number}/steps/{step_key}/counter-file", data=data,
                       content_type="multipart/form-data")


def version(client: FlaskClient, number: str) -> int:
    with client.application.app_context():
        return get_batch(number).version


def culture_bag(app: Flask, number: str) -> str:
    with app.app_context():
        return db.session.scalars(select(Container.code).where(
            Container.batch_id == get_batch(number).id, Container.kind == "culture_bag")).one()


def submission(app: Flask, submission_id: int) -> tuple[Submission, Attachment]:
    with app.app_context():
        found = db.session.get(Submission, submission_id)
        assert found is not None and found.attachment is not None
        attachment = found.attachment
        _ = attachment.content
        db.session.expunge_all()
        return found, attachment


@pytest.fixture
def expanding(make_batch: Callable[..., str]) -> str:
    """A batch in expansion (day 6 counted), its harvest window open since about 21 hours."""
    return make_batch(until="harvest")


def test_the_count_steps_offer_the_import_and_say_what_sample_id_to_type(app, login, expanding):
    client = login("tech1")
    for step_key in ("expansion", "harvest"):
        text = page_text(client.get(f"/batches/{expanding}/steps/{step_key}"))
        assert "Import a counter file" in text
        assert f"Type the batch number {expanding} or the code of its container ({culture_bag(app, expanding)})" in text
        assert f"/batches/{expanding}/steps/{step_key}/counter-file" in text
    page = client.get(f"/batches/{expanding}/steps/expansion/counter-file")
    assert page.status_code == 200 and "Viable cells = viable cells per mL × the culture volume" in page_text(page)
    missing = client.get(f"/batches/{expanding}/steps/transduction/counter-file")
    assert missing.status_code == 404 and "takes no cell count" in page_text(missing)


def test_a_counter_file_becomes_a_submission_then_an_entry_whose_record_names_the_file(app, login, expanding):
    client = login("tech1")
    measured = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    content = vicell(f"{expanding} D12", measured)
    response = upload(client, expanding, "expansion", content, volume="120", filename="ViCELL_D12.csv")
    assert response.status_code == 302, page_text(response)
    found = re.search(r"/submissions/(\d+)$", response.headers["Location"])
    assert found is not None
    made, attachment = submission(app, int(found.group(1)))
    assert (made.status, made.kind, made.key, made.token_id) == ("pending", "step", "expansion", None)
    assert made.values == {"viable_cells": "2.436e8", "viability_pct": "94.42"}  # 2.03 × 10⁶/mL × 120 mL
    assert made.sample_id == f"{expanding} D12" and made.measured_at == measured
    assert (attachment.filename, attachment.content_type) == ("ViCELL_D12.csv", "text/csv")
    assert attachment.sha256 == hashlib.sha256(content).hexdigest() and attachment.content == content
    assert "Beckman Coulter Vi-CELL BLU" in (made.comment or "") and "× 120 mL" in (made.comment or "")
    shown = page_text(client.get(response.headers["Location"]))
    assert attachment.sha256 in shown and f"{expanding} D12" in shown  # the file, its hash and its sample

    # the person completes the entry from the submission and signs it: the record names the file
    with app.app_context():
        values = step_values("expansion", when=datetime.now(UTC), batch=get_batch(expanding),
                             culture_day="12", viable_cells="2.436e8", viability_pct="94.42")
    signed = client.post(f"/batches/{expanding}/steps/expansion?submission={made.id}",
                         data=form_data(values, batch_version=version(client, expanding)))
    assert signed.status_code == 302, page_text(signed)
    assert submission(app, made.id)[0].status == "recorded"
    text = text_of(client.get(f"/batches/{expanding}/record.pdf").data)
    assert f"Original instrument record: ViCELL_D12.csv, SHA-256 {attachment.sha256}" in text


@pytest.mark.parametrize(("content", "volume", "reason"), [
    (b"", "120", "The file is empty"),
    (None, "120", "The file is empty"),  # no file chosen
    (b"%PDF-1.7\n\x00\x00binary", "120", "The file is binary"),
    ((DATA / "plate_reader.csv").read_bytes(), "120", "is not an export of a ChemoMetec NucleoCounter NC-200"),
    ((DATA / "vicell_blu_two_samples.csv").read_bytes(), "120", "The file holds 2 samples"),
    ("other", "120", "is not of batch"),
    ("future", "120", "later than now"),
    ("early", "120", "before Expansion (daily count) could be counted: its window opens at"),
    ("good", "", "Enter the culture volume the count stands for, in mL."),
    ("good", "a lot", "not “a lot”"),
    ("good", "NaN", "not “NaN”"),
    ("good", "-5", "not “-5”"),
])
def test_a_refused_file_or_volume_says_why_and_writes_nothing(app, login, expanding, content, volume, reason):
    client = login("tech1")
    now = datetime.now(UTC)
    with app.app_context():
        activation = next(e for e in get_batch(expanding).entries if e.step_key == "activation").performed_at
    made = {"other": vicell("B-A9999-26-99999-X", now - timedelta(hours=1)),
            "future": vicell(expanding, now + timedelta(hours=2)),
            "early": vicell(expanding, activation - timedelta(hours=1)),
            "good": vicell(expanding, now - timedelta(hours=1))}
    body = made.get(content, content) if isinstance(content, str) else content
    before = rows(app, expanding)
    response = upload(client, expanding, "expansion", body, volume=volume)
    assert response.status_code == 422
    assert reason in page_text(response)
    assert rows(app, expanding) == before


def test_the_sample_id_may_name_the_culture_bag_and_the_harvest_window_is_kept(app, login, expanding):
    client = login("tech1")
    now = datetime.now(UTC)
    bag = culture_bag(app, expanding).replace("-", "")  # a counter's keypad may drop the hyphens
    early = upload(client, expanding, "harvest", nc200(bag, now - timedelta(days=2)))
    assert early.status_code == 422
    assert "its window opens at" in page_text(early) and "culture day 12 after Activation" in page_text(early)
    accepted = upload(client, expanding, "harvest", nc200(bag, now - timedelta(hours=2)), volume="250")
    assert accepted.status_code == 302, page_text(accepted)
    made, _ = submission(app, int(accepted.headers["Location"].rsplit("/", 1)[1]))
    assert made.values == {"total_viable_cells": "4.55e8", "viability_pct": "93.8"}  # 1.82 × 10⁶/mL × 250 mL


def test_the_same_file_twice_is_a_duplicate_until_withdrawn(app, login, expanding):
    client = login("tech1")
    content = vicell(expanding, datetime.now(UTC) - timedelta(hours=1))
    first = upload(client, expanding, "expansion", content)
    assert first.status_code == 302
    first_id = int(first.headers["Location"].rsplit("/", 1)[1])
    before = rows(app, expanding)
    again = upload(client, expanding, "expansion", content, filename="renamed.csv")
    assert again.status_code == 409
    assert f"already imported for batch {expanding}: submission {first_id} (pending" in page_text(again)
    assert rows(app, expanding) == before
    with app.app_context():
        withdraw(db.session.get(Submission, first_id), reason="Wrong culture volume typed", actor=user("tech1"))
        db.session.commit()
    assert upload(client, expanding, "expansion", content, volume="125").status_code == 302


def test_enrichment_takes_a_count_of_the_apheresis_bag_after_the_receipt(app, login, make_batch):
    number = make_batch(until="enrichment")
    client = login("tech1")
    with app.app_context():
        batch = get_batch(number)
        bag = next(c.code for c in batch.containers if c.kind == "apheresis_bag")
        received = batch.entries[0].performed_at
    early = upload(client, number, "enrichment", vicell(bag, received - timedelta(minutes=30)))
    assert early.status_code == 422 and "(Apheresis receipt was recorded then)" in page_text(early)
    assert upload(client, number, "enrichment", vicell(bag, received + timedelta(hours=1))).status_code == 302


def test_the_time_in_the_file_is_the_labs_local_time(app, login, expanding):
    app.config["TIMEZONE"] = "Pacific/Auckland"  # 11 to 13 hours ahead of UTC
    client = login("tech1")
    now = datetime.now(UTC)
    local = (now - timedelta(hours=1)).astimezone(ZoneInfo("Pacific/Auckland"))
    accepted = upload(client, expanding, "expansion", vicell(expanding, local))
    assert accepted.status_code == 302, page_text(accepted)
    made, _ = submission(app, int(accepted.headers["Location"].rsplit("/", 1)[1]))
    assert made.measured_at == (now - timedelta(hours=1)).replace(microsecond=0)


# --- the API ----------------------------------------------------------------------------------------


@pytest.fixture
def api(app: Flask) -> FlaskClient:
    """A client as an instrument's bridge is: no cookies, no form token."""
    return FlaskClient(app, app.response_class)


def api_post(client: FlaskClient, number: str, step_key: str, headers: dict[str, str], **data: Any) -> Any:
    return client.post(f"/api/v1/batches/{number}/steps/{step_key}/counter-files", data=data, headers=headers,
                       content_type="multipart/form-data")


def test_the_api_takes_a_counter_file_as_a_pending_submission(app, api, api_token, expanding):
    headers = api_token("tech1", "write", name="NC-200 bridge")
    content = nc200(culture_bag(app, expanding), datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3))
    response = api_post(api, expanding, "expansion", headers, file=(BytesIO(content), "nc200.csv"),
                        volume_ml="200", version=str(version(api, expanding)))
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == "pending" and body["values"] == {"viable_cells": "3.64e8", "viability_pct": "93.8"}
    assert body["file"] == {"filename": "nc200.csv", "sha256": hashlib.sha256(content).hexdigest(),
                            "size": len(content)}
    assert body["sample_id"] == culture_bag(app, expanding) and body["measured_at"].endswith("Z")
    assert body["via"].startswith("API token “NC-200 bridge”")


def test_the_api_refuses_with_a_problem_and_writes_nothing(app, api, api_token, expanding):
    write, read = api_token("tech1", "write"), api_token("tech1", "read")
    good = vicell(expanding, datetime.now(UTC) - timedelta(hours=1))
    before = rows(app, expanding)

    def refused(status: int, step_key: str = "expansion", headers: dict[str, str] = write, **data: Any) -> dict:
        response = api_post(api, expanding, step_key, headers, **data)
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.mimetype == "application/problem+json"
        return response.get_json()

    assert refused(403, headers=read, file=(BytesIO(good), "c.csv"), volume_ml="1")
    json_sent = api.post(f"/api/v1/batches/{expanding}/steps/expansion/counter-files", json={"volume_ml": "1"},
                            headers=write)
    assert json_sent.status_code == 415
    assert "takes no cell count" in refused(409, "activation", file=(BytesIO(good), "c.csv"), volume_ml="1")["detail"]
    refused(404, "no_such_step", file=(BytesIO(good), "c.csv"), volume_ml="1")
    missing = refused(422, colour="blue")
    assert set(missing["errors"]) == {"file", "volume_ml", "colour"}
    assert "volume_ml" in refused(422, file=(BytesIO(good), "c.csv"), volume_ml="inf")["errors"]
    other = refused(422, file=(BytesIO(vicell("SOMEONE-ELSE", datetime.now(UTC))), "c.csv"), volume_ml="100")
    assert other["errors"]["file"].startswith(f"The file's sample ID SOMEONE-ELSE is not of batch {expanding}")
    future = refused(422, file=(BytesIO(vicell(expanding, datetime.now(UTC) + timedelta(days=1))), "c.csv"),
                     volume_ml="100")
    assert "later than now" in future["errors"]["file"]
    assert "binary" in refused(422, file=(BytesIO(b"\x00\x01" * 50), "c.csv"), volume_ml="100")["errors"]["file"]
    too_large = api.post(f"/api/v1/batches/{expanding}/steps/expansion/counter-files", headers=write,
                         data=b"a;b\n" * 300_000, content_type="multipart/form-data; boundary=x")  # over 1 MiB
    assert too_large.status_code == 413 and too_large.mimetype == "application/problem+json"
    stale = refused(409, file=(BytesIO(good), "c.csv"), volume_ml="100", version=str(version(api, expanding) - 1))
    assert "changed this batch" in stale["detail"]
    assert "version" in refused(422, file=(BytesIO(good), "c.csv"), volume_ml="100", version="v2")["errors"]
    assert rows(app, expanding) == before
