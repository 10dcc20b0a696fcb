"""``row_url`` (lab/templating.py) builds each endpoint's URL once per request and puts every
row's values in: it must give exactly what ``url_for`` gives, however awkward the values."""

from __future__ import annotations

import pytest
from flask import Flask, url_for

from lab.templating import row_url

AWKWARD = ("B-A9999-26-00008-S", "SLE 01", "a/b", "50%", "x?y=1#z", "é–ü", "<tag>&amp;", "..", "+~!$'()*,;=@:")


@pytest.mark.parametrize("base_url", ["http://lab.example/", "http://lab.example/celltrail/"])
def test_row_url_is_url_for_for_every_value(app: Flask, base_url: str) -> None:
    with app.test_request_context("/", base_url=base_url):
        for value in AWKWARD:
            assert row_url("batches.detail", batch_number=value) == url_for("batches.detail", batch_number=value)
            assert row_url("patients.detail", patient_ref=value) == url_for("patients.detail", patient_ref=value)
            # two arguments, named in the other order than the URL has them
            assert (row_url("batches.record", step_key=value, batch_number=f"{value}-2")
                    == url_for("batches.record", batch_number=f"{value}-2", step_key=value))
        assert row_url("batches.detail", batch_number="B-1").startswith(base_url.removeprefix("http://lab.example"))


def test_an_argument_with_its_own_converter_is_left_to_url_for(app: Flask) -> None:
    with app.test_request_context("/"):
        assert (row_url("batches.verify", batch_number="B 1", entry_id=12)
                == url_for("batches.verify", batch_number="B 1", entry_id=12) == "/batches/B%201/entries/12/verify")
        with pytest.raises(ValueError):  # url_for's own refusal of a value its converter cannot write
            row_url("batches.verify", batch_number="B-1", entry_id="twelve")
