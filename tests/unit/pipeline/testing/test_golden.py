"""Golden files: masking what changes from run to run, comparing, and writing on request."""

from __future__ import annotations

import pytest

from pipeline.ids import new_event_id
from pipeline.testing.golden import Golden, GoldenMismatch, mask, render


def test_ids_are_numbered_by_first_appearance_so_repeats_stay_visible():
    first, second = new_event_id(), new_event_id()
    data = {"a": first, "b": [second, first], "c": f"caused by {second}"}

    assert mask(data) == {"a": "<id-1>", "b": ["<id-2>", "<id-1>"], "c": "caused by <id-2>"}


def test_ulids_and_upper_case_uuids_are_ids_too():
    uuid = new_event_id()
    assert mask([uuid.upper(), uuid, "01ARZ3NDEKTSV4RRFFQ69G5FAV"]) == [
        "<id-1>",
        "<id-1>",
        "<id-2>",
    ]


def test_timestamps_are_masked_in_text_and_under_time_keys():
    data = {
        "published_at": "2026-12-02 17:16:25+00:00",
        "ts": 1_764_690_000_123,
        "time": "anything",
        "note": "sent 2026-12-02T17:16:25.123Z, retried 2026-12-02T17:16:26Z",
        "count": 3,
        "done": True,
    }
    assert mask(data) == {
        "published_at": "<time>",
        "ts": "<time>",
        "time": "<time>",
        "note": "sent <time>, retried <time>",
        "count": 3,
        "done": True,
    }


def test_what_is_not_volatile_is_kept():
    data = {"order_id": "o-17", "status": "compensated", "amount": 12.5, "lines": [1, 2], "x": None}
    assert mask(data) == data


def test_chosen_keys_and_patterns_are_masked_too():
    data = {"pid": 4242, "host": "worker-7", "note": "took 31 ms"}
    masked = mask(data, mask_keys=["pid"], mask_patterns=[r"\d+ ms"])
    assert masked == {"pid": "<masked>", "host": "worker-7", "note": "took <masked>"}


def test_render_sorts_keys_and_ends_with_a_newline():
    assert render({"b": 1, "a": "é"}) == '{\n  "a": "é",\n  "b": 1\n}\n'


def golden_in(tmp_path, update=False) -> Golden:
    return Golden(tmp_path / "golden" / "test_x", "test_y", base=tmp_path, update=update)


def test_update_writes_the_file_and_a_check_then_passes(tmp_path):
    data = {"id": new_event_id(), "n": 1}
    writer = golden_in(tmp_path, update=True)
    writer.check(data)

    path = tmp_path / "golden" / "test_x" / "test_y.json"
    assert writer.written == [path]
    assert path.read_text() == '{\n  "id": "<id-1>",\n  "n": 1\n}\n'
    golden_in(tmp_path).check({"id": new_event_id(), "n": 1})  # another id, same shape


def test_a_difference_fails_with_a_diff_and_the_way_to_accept_it(tmp_path):
    golden_in(tmp_path, update=True).check({"status": "completed", "n": 1})

    with pytest.raises(GoldenMismatch) as failure:
        golden_in(tmp_path).check({"status": "compensated", "n": 1})

    message = str(failure.value)
    assert '-  "status": "completed"' in message
    assert '+  "status": "compensated"' in message
    assert "--update-golden" in message


def test_a_missing_golden_file_fails_and_says_how_to_write_it(tmp_path):
    with pytest.raises(GoldenMismatch, match=r"no golden file .*--update-golden"):
        golden_in(tmp_path).check({"n": 1})


def test_an_unchanged_file_is_not_rewritten_on_update(tmp_path):
    golden_in(tmp_path, update=True).check({"n": 1})
    again = golden_in(tmp_path, update=True)
    again.check({"n": 1})
    assert again.written == []


def test_names_and_paths_of_golden_files(tmp_path):
    golden = golden_in(tmp_path)
    assert golden.path("summary") == tmp_path / "golden" / "test_x" / "summary.json"
    assert golden.path("data/outcomes.golden.json") == tmp_path / "data" / "outcomes.golden.json"
    assert golden.path(tmp_path / "abs.txt") == tmp_path / "abs.txt"
