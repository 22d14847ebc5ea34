"""An event as JSON (``model_dump(mode="json")``, ``model_dump_json``), binary data included."""

from __future__ import annotations

import base64
import json

from pipeline.envelope import Event


def test_binary_data_is_base64_in_json_mode_not_a_decoding_error():
    data = bytes(range(256))  # not UTF-8
    event = Event(source="/s", type="t", datacontenttype="application/octet-stream", data=data)

    dumped = event.model_dump(mode="json")

    assert base64.b64decode(dumped["data"]) == data
    assert json.loads(event.model_dump_json())["data"] == dumped["data"]
    assert event.model_dump()["data"] == data  # Python mode: the bytes themselves


def test_json_data_is_dumped_as_it_is():
    event = Event(source="/s", type="t", data={"n": 1, "s": "é"})

    assert event.model_dump(mode="json")["data"] == {"n": 1, "s": "é"}
