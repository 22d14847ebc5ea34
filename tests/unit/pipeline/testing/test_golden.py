"""Golden files: masking what changes from run to run, comparing, and writing on request."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import uuid

import pytest
from pydantic import BaseModel

from pipeline.envelope import Event
from pipeline.ids import new_event_id
from pipeline.testing.golden import Golden, GoldenMismatch, mask, render
from pipeline.testing.golden_session import LocalGoldenSession


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


def test_a_file_that_lost_its_final_newline_still_matches(tmp_path):
    golden_in(tmp_path, update=True).check({"status": "completed", "n": 1})
    path = tmp_path / "golden" / "test_x" / "test_y.json"
    path.write_text(path.read_text().rstrip("\n"))  # an editor or a git hook took it

    golden_in(tmp_path).check({"status": "completed", "n": 1})
    with pytest.raises(GoldenMismatch) as failure:
        golden_in(tmp_path).check({"status": "compensated", "n": 1})

    # Only the real difference is shown: no "-}" / "+}" hunk for the newline.
    message = str(failure.value)
    assert '-  "status": "completed"' in message
    assert "-}" not in message and "+}" not in message


def test_a_file_is_compared_as_text_as_update_writes_it(tmp_path):
    path = tmp_path / "golden" / "test_x" / "test_y.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"n": 1}\n')  # the same JSON, indented otherwise

    with pytest.raises(GoldenMismatch, match="--update-golden"):
        golden_in(tmp_path).check({"n": 1})


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


# --- nothing is lost: keys that mask alike, objects, two checks of one file ----------------------


def test_keys_that_mask_alike_are_numbered_in_their_order_so_no_value_is_lost(tmp_path):
    per_day = {"2025-01-02T00:00:00Z": 20, "2025-01-01T00:00:00Z": 10}

    assert mask(per_day) == {"<time-1>": 10, "<time-2>": 20}
    taken = {"took 31 ms": "a", "took 5 ms": "b", "note": "c"}
    assert mask(taken, mask_patterns=[r"\d+ ms"]) == {
        "note": "c",
        "took <masked-1>": "a",
        "took <masked-2>": "b",
    }
    writer = golden_in(tmp_path, update=True)
    writer.check(per_day, "perday")
    assert json.loads(writer.path("perday").read_text()) == {"<time-1>": 10, "<time-2>": 20}


def test_keys_that_are_the_same_text_in_json_are_an_error_not_one_value_dropped(tmp_path):
    with pytest.raises(ValueError, match=r"keys 1 and '1', which are both '1' in JSON"):
        mask({1: "a", "1": "b"})
    with pytest.raises(ValueError, match=r"data\['outer'\] has the keys"):
        golden_in(tmp_path, update=True).check({"outer": {True: 1, "true": 2}}, "x")
    assert not (tmp_path / "golden").exists()


class Colour(enum.Enum):
    RED = "red"


class Reading(BaseModel):
    taken: datetime.datetime
    sensor: uuid.UUID


def test_objects_are_masked_in_their_json_form_as_their_text_would_be():
    now = datetime.datetime.now(datetime.UTC)
    sensor = uuid.uuid4()
    data = {
        "when": now,
        "id": sensor,
        "ids": (sensor, str(sensor)),
        "amount": decimal.Decimal("12.50"),
        "colour": Colour.RED,
        "reading": Reading(taken=now, sensor=sensor),
        "day": datetime.date(2025, 1, 1),  # a date alone is kept, as its text would be...
        "opened_at": datetime.date(2025, 1, 1),  # ...and masked under a time key
        "tags": {"b", "a", "c"},
        now: "a key too",
    }

    assert mask(data) == {
        "when": "<time>",
        "id": "<id-1>",
        "ids": ["<id-1>", "<id-1>"],
        "amount": "12.50",
        "colour": "red",
        "reading": {"taken": "<time>", "sensor": "<id-1>"},
        "day": "2025-01-01",
        "opened_at": "<time>",
        "tags": ["a", "b", "c"],
        "<time>": "a key too",
    }
    event = Event(source="/s", type="t", data={"n": 1})
    assert mask(event.model_dump()) == mask(event.model_dump(mode="json"))
    assert mask(event.model_dump())["time"] == "<time>"


def test_an_object_without_a_json_form_fails_at_once_naming_where_it_is(tmp_path):
    with pytest.raises(TypeError, match=r"data\['x'\]\[1\] is a object, which has no JSON form"):
        golden_in(tmp_path, update=True).check({"x": [1, object()]})
    assert not (tmp_path / "golden").exists()
    with pytest.raises(TypeError, match="no JSON form"):
        render({"x": object()})
    with pytest.raises(TypeError, match=r"the key \(1, 2\) \(tuple\)"):
        mask({(1, 2): "pair"})


def test_arguments_of_the_wrong_kind_are_one_clear_error_each(tmp_path):
    golden = golden_in(tmp_path, update=True)
    with pytest.raises(TypeError, match=r"mask_keys takes a list.*got 'pid' alone"):
        golden.check({"pid": 1}, "mk", mask_keys="pid")
    with pytest.raises(TypeError, match=r"mask_patterns takes a list.*got '\\\\d\+' alone"):
        golden.check({"n": "1"}, "mk", mask_patterns=r"\d+")
    with pytest.raises(TypeError, match=r"mask_keys takes a list of text.*holds 5 \(int\)"):
        mask({}, mask_keys=[5])
    with pytest.raises(TypeError, match=r"name takes the file's name or path.*got 5 \(int\)"):
        golden.check({"n": 1}, 5)
    assert golden.written == []


def test_a_second_unnamed_check_in_one_test_fails_asking_for_a_name(tmp_path):
    for update in (True, False):
        golden = golden_in(tmp_path, update=update)
        golden.check({"first": 1})
        with pytest.raises(ValueError, match=r"already checked its default file .*test_y\.json"):
            golden.check({"second": 2})
        golden.check({"second": 2}, "second")  # named, it has its own file

    assert json.loads((tmp_path / "golden" / "test_x" / "test_y.json").read_text()) == {"first": 1}


def test_a_file_checked_twice_in_a_session_is_written_once_then_compared_with(tmp_path):
    session = LocalGoldenSession()
    first = Golden(tmp_path, "t", base=tmp_path, update=True, session=session, test="t[driver]")
    again = Golden(tmp_path, "t", base=tmp_path, update=True, session=session, test="t[kafka]")
    first.check({"n": 1})
    again.check({"n": 1})  # the same result: fine, and not written again
    assert (first.written, again.written) == ([tmp_path / "t.json"], [])

    with pytest.raises(GoldenMismatch, match=r"written earlier in this session by t\[driver\]"):
        Golden(tmp_path, "t", base=tmp_path, update=True, session=session).check({"n": 2})
    with pytest.raises(GoldenMismatch, match=r'\+  "n": 3'):
        first.check({"n": 3}, "t")  # the same name twice in one test: one file, one result
    assert json.loads((tmp_path / "t.json").read_text()) == {"n": 1}


def test_two_tests_checking_one_named_file_differently_are_told_it_is_shared(tmp_path):
    # A named file is the module's: two tests naming their checks "driver" (backend.kind)
    # fought over it, and the failing one was told to run --update-golden, which cannot mend it.
    session = LocalGoldenSession()
    refused = Golden(tmp_path, "a", base=tmp_path, session=session, test="m.py::test_refused")
    count = Golden(tmp_path, "b", base=tmp_path, session=session, test="m.py::test_count")
    (tmp_path / "driver.json").write_text(render(["o-3"]))

    refused.check(["o-3"], "driver")
    with pytest.raises(GoldenMismatch) as raised:
        count.check({"replayed": 4}, "driver")

    said = str(raised.value)
    assert "(checked earlier in this session by m.py::test_refused)" in said
    assert "a named file is shared by every test of its module" in said
    assert "--update-golden" not in said


def test_a_set_of_ids_seen_before_masks_the_same_in_every_run():
    # The set was sorted by the ids themselves, then masked: ids numbered earlier came out as
    # [<id-1>, <id-2>] or [<id-2>, <id-1>] as the random ids fell.
    files = set()
    for _ in range(20):
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        data = {"events": [{"id": first}, {"id": second}], "seen": {first, second}}
        files.add(render(mask(data)))

    assert len(files) == 1
