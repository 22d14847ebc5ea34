"""Golden files: a test's outputs compared with a JSON file, ids and timestamps masked.

::

    def test_invoices_are_totalled(golden):
        outputs = run_my_processor(...)
        golden.check(outputs)                 # tests/golden/<module>/<test>.json
        golden.check(summary, "summary")      # tests/golden/<module>/summary.json

(a test in a class ``TestA``: ``tests/golden/<module>/TestA/<test>.json``, and its named files
there too).

``pytest --update-golden`` writes the files instead of comparing (review the diff, commit it).
A file is compared with the outputs as text, as ``--update-golden`` writes it (:func:`render`:
indented JSON with sorted keys), but for its final newline, which may be missing.

What changes from run to run is masked before comparing (:func:`mask`): UUIDs (event ids) and
ULIDs become ``<id-1>``, ``<id-2>``, ... numbered by first appearance, so "the same id twice"
is still checked; ISO-8601 date-times in text become ``<time>``; the value of a key named
``time``, ``ts``, ``timestamp``, ``timestamp_ms`` or ending in ``_at`` becomes ``<time>``. More
keys or patterns can be masked per check (``mask_keys``, ``mask_patterns``).

Objects are first made what they are in JSON, as pydantic's ``model_dump(mode="json")`` makes
them (a datetime its ISO text, a UUID its text, a ``Decimal`` its text, an enum its value, a
model or dataclass its fields), and then masked like that text; an object with no JSON form is
a :class:`TypeError` naming where it is. Nothing is dropped: two keys of one mapping that mask
to the same text are numbered in the order of their original keys (``<time-1>``,
``<time-2>``), and two keys that are the same text in JSON (``1`` and ``"1"``) are a
:class:`ValueError`.

One file holds one check: a second ``check`` without a name in one test is a
:class:`ValueError` (name it). A file checked again in the same session (the same name twice,
the same test on both backends, in one process or in several: pytest-xdist's workers, see
golden_session.py) is compared with what the first check wrote, also with ``--update-golden``,
so it is never overwritten by a different result.

:func:`mask` and :func:`render` are pure; :class:`Golden` reads and writes the files.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from pipeline.testing.golden_session import GoldenSession, LocalGoldenSession

__all__ = ["Golden", "GoldenMismatch", "mask", "render"]

_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_ULID = re.compile(r"\b[0-7][0-9A-HJKMNP-TV-Z]{25}\b")
_DATETIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?(?![\d.:])"
)
_TIME_KEYS = frozenset({"time", "ts", "timestamp", "timestamp_ms"})
TIME = "<time>"
MASKED = "<masked>"
_DIFF_LINES = 120
#: The last placeholder in a masked key (numbered when several keys mask to the same text).
_PLACEHOLDER = re.compile(r"<(?:time|masked|id-\d+)(?:-\d+)*>")


class GoldenMismatch(AssertionError):
    """The outputs differ from the golden file (the message holds the diff)."""


def _is_time_key(key: str) -> bool:
    return key in _TIME_KEYS or key.endswith("_at")


class _SetItems(list[Any]):
    """A set's items in a list (JSON has no sets): sorted again once masked."""


def _where(path: tuple[object, ...] | None) -> str:
    """Where a value is in the data: ``data["events"][2]["when"]`` (None: not known)."""
    if path is None:
        return "a value in the data"
    return "data" + "".join(f"[{part!r}]" for part in path)


def _json_form(value: Any, path: tuple[object, ...] | None) -> Any:
    """``value`` as JSON has it: text, numbers, true/false/null, mappings and lists as they are;
    any other object as pydantic's JSON mode makes it (before masking, so that a datetime or a
    UUID is masked like its text); a :class:`TypeError` for an object with no JSON form (rather
    than its ``repr`` in the file, which changes from run to run)."""
    if value is None or isinstance(value, str | int | float | Mapping | list | tuple):
        return value
    if isinstance(value, set | frozenset):
        # Sets have no order: sorted (by their JSON text when they do not compare: numbers with
        # text, mappings), so that new ids are numbered the same in every run; the masker sorts
        # them again once masked (_SetItems), as ids seen earlier have numbers of their own.
        items = [
            _json_form(item, None if path is None else (*path, "<set item>")) for item in value
        ]
        try:
            return _SetItems(sorted(items))
        except TypeError:
            return _SetItems(sorted(items, key=render))
    try:
        return to_jsonable_python(value)
    except (PydanticSerializationError, ValueError):  # UnicodeDecodeError too (bytes)
        raise TypeError(
            f"golden: {_where(path)} is a {type(value).__qualname__}, which has no JSON form: "
            "give its fields (a dict) or its text instead"
        ) from None


def _key_text(key: Any, path: tuple[object, ...]) -> str:
    """The text a mapping key is in JSON (``1`` -> ``"1"``, ``None`` -> ``"null"``, a datetime
    its ISO text); a :class:`TypeError` for a key JSON cannot have (a tuple, an object)."""
    if isinstance(key, str):
        return str.__str__(key)  # a str enum's value, not its name
    if key is None or isinstance(key, int | float):  # bool and int enums too, as json writes them
        return json.dumps(key)
    converted = _json_form(key, path)
    if isinstance(converted, str | int | float):
        return _key_text(converted, path)
    raise TypeError(
        f"golden: {_where(path)} has the key {key!r:.60} ({type(key).__name__}): JSON keys are "
        "text; give the mapping text keys"
    )


def _numbered(masked: str, number: int) -> str:
    """``masked`` with ``number`` added to its last placeholder: ``<time>`` -> ``<time-2>``."""
    found = None
    for match in _PLACEHOLDER.finditer(masked):
        found = match
    if found is None:  # not reached: keys that differ only mask alike through a placeholder
        return f"{masked} #{number}"
    return f"{masked[: found.end() - 1]}-{number}>{masked[found.end() :]}"


@dataclass
class _Masker:
    mask_keys: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]
    ids: dict[str, str] = field(default_factory=dict)

    def id_of(self, match: re.Match[str]) -> str:
        found = match.group(0).lower()
        if found not in self.ids:
            self.ids[found] = f"<id-{len(self.ids) + 1}>"
        return self.ids[found]

    def text(self, value: str) -> str:
        for pattern in self.patterns:
            value = pattern.sub(MASKED, value)
        value = _UUID.sub(self.id_of, value)
        value = _ULID.sub(self.id_of, value)
        return _DATETIME.sub(TIME, value)

    def value(self, value: Any, key: str | None = None, path: tuple[object, ...] = ()) -> Any:
        if key is not None and key in self.mask_keys:
            return MASKED
        value = _json_form(value, path)
        timelike = isinstance(value, int | float | str) and not isinstance(value, bool)
        if key is not None and _is_time_key(key) and timelike:
            return TIME
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return self.mapping(value, path)
        if isinstance(value, list | tuple):
            masked = [self.value(item, None, (*path, n)) for n, item in enumerate(value)]
            # A set's items in the order of their masked text: the same file in every run
            # whatever the ids were (sorted by the ids themselves, they were not).
            return sorted(masked, key=render) if isinstance(value, _SetItems) else masked
        return value

    def mapping(self, value: Mapping[Any, Any], path: tuple[object, ...]) -> dict[str, Any]:
        keyed = sorted(
            ((_key_text(k, path), k, v) for k, v in value.items()), key=lambda item: item[0]
        )
        for (text, first, _), (same, second, _) in itertools.pairwise(keyed):
            if text == same:  # JSON cannot hold both: one of them would be lost
                raise ValueError(
                    f"golden: {_where(path)} has the keys {first!r:.40} and {second!r:.40}, "
                    f"which are both {text!r} in JSON: make the keys distinct"
                )
        # Sorted, so ids are numbered the same however the mapping was built (the key, then
        # its value, as before: a file written earlier keeps its numbers).
        masked = [(self.text(text), self.value(v, text, (*path, k))) for text, k, v in keyed]
        counts: dict[str, int] = {}
        for name, _ in masked:
            counts[name] = counts.get(name, 0) + 1
        if all(count == 1 for count in counts.values()):
            return dict(masked)
        # Keys that differed mask alike (two dates, two numbers under one pattern): numbered in
        # the order of their original keys, so no value is lost and the file stays the same.
        seen: dict[str, int] = {}
        result: dict[str, Any] = {}
        for name, item in masked:
            if counts[name] > 1:
                seen[name] = seen.get(name, 0) + 1
                name = _numbered(name, seen[name])
            if name in result:
                raise ValueError(
                    f"golden: {_where(path)} has several keys that mask to {name!r}: mask the "
                    "values rather than the keys (a list of pairs, sorted(data.items()))"
                )
            result[name] = item
        return result


def _texts(given: Any, what: str, example: str, kinds: tuple[type, ...]) -> tuple[Any, ...]:
    """``given``, a collection of names or patterns, as a tuple; a :class:`TypeError` naming
    ``what`` for one text (which would be taken letter by letter) or anything else."""
    if isinstance(given, str | bytes | re.Pattern):
        raise TypeError(
            f"golden: {what} takes a list, like {what}={example}; got {given!r:.60} alone "
            "(one text would be taken letter by letter): put it in a list"
        )
    try:
        items = tuple(given)
    except TypeError:
        raise TypeError(
            f"golden: {what} takes a list, like {what}={example}; got {type(given).__name__}"
        ) from None
    for item in items:
        if not isinstance(item, kinds):
            raise TypeError(
                f"golden: {what} takes a list of text, like {what}={example}; it holds "
                f"{item!r:.60} ({type(item).__name__})"
            )
    return items


def mask(
    data: Any,
    *,
    mask_keys: Iterable[str] = (),
    mask_patterns: Iterable[str | re.Pattern[str]] = (),
) -> Any:
    """``data`` as JSON has it, with what changes from run to run masked, as the module's
    docstring says; ``mask_keys`` (a list of key names) are masked whole (``<masked>``), and
    text matching any of ``mask_patterns`` (a list of regular expressions) is replaced by
    ``<masked>``. :class:`TypeError` for an argument of the wrong kind or an object with no JSON
    form; :class:`ValueError` for keys that JSON cannot tell apart."""
    keys = _texts(mask_keys, "mask_keys", '["pid"]', (str,))
    patterns = _texts(mask_patterns, "mask_patterns", '[r"\\d+ ms"]', (str, re.Pattern))
    masker = _Masker(
        frozenset(keys),
        tuple(re.compile(p) if isinstance(p, str) else p for p in patterns),
    )
    return masker.value(data)


def render(data: Any) -> str:
    """The text of a golden file: indented JSON with sorted keys and a final newline. Objects
    are written in their JSON form (as :func:`mask` makes it); one with none is a
    :class:`TypeError`, never its ``repr``."""

    def json_form(value: Any) -> Any:
        return _json_form(value, None)

    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=json_form) + "\n"


class Golden:
    """Compares outputs with golden files next to a test (the ``golden`` fixture's object).

    ``folder``: where files named without a folder go; ``name``: the file name when none is
    given; ``update``: write the files instead of comparing them. Each file written is
    appended to ``written``. ``session``: the files checked with ``update`` in this test session
    so far, each with the test that did (``test``) and the text it gave; shared by the
    session's :class:`Golden` objects, so that a file checked twice in one session is written
    once and then compared with.
    """

    def __init__(
        self,
        folder: Path,
        name: str,
        *,
        base: Path,
        update: bool = False,
        session: GoldenSession | None = None,
        test: str = "this test",
    ) -> None:
        self.folder = folder
        self.name = name
        self.base = base
        self.update = update
        self.written: list[Path] = []
        self.session: GoldenSession = LocalGoldenSession() if session is None else session
        self.test = test
        self._checked_default = False

    def path(self, name: str | Path | None = None) -> Path:
        """The file of ``name``: the test's own file by default; a bare name goes into
        :attr:`folder`, a relative path is taken from :attr:`base` (the test's folder); ``.json``
        is added when there is no suffix."""
        if name is None:
            path = self.folder / self.name
        else:
            if not isinstance(name, str | Path):
                raise TypeError(
                    f"golden: name takes the file's name or path (text or a Path), like "
                    f'"summary"; got {name!r:.60} ({type(name).__name__})'
                )
            if not str(name).strip():
                raise ValueError('golden: name is empty: give the file a name, like "summary"')
            given = Path(name)
            path = (
                given
                if given.is_absolute()
                else (self.folder / given if len(given.parts) == 1 else self.base / given)
            )
        return path if path.suffix else path.with_suffix(".json")

    def check(
        self,
        data: Any,
        name: str | Path | None = None,
        *,
        mask_keys: Iterable[str] = (),
        mask_patterns: Iterable[str | re.Pattern[str]] = (),
    ) -> None:
        """Compare ``data``, masked, with the golden file; :class:`GoldenMismatch` with a diff
        when it differs or is missing (``--update-golden`` writes it instead, unless this
        session wrote it already: then it is compared with that). A second check without a
        ``name`` in one test is a :class:`ValueError`: each check needs its own file."""
        __tracebackhide__ = True  # a failing test's report shows the test and the diff
        path = self.path(name)
        if name is None and self._checked_default:
            # Both would go to one file: with --update-golden the last would overwrite the
            # first, and every run after would fail on the first.
            raise ValueError(
                f"golden: this test already checked its default file {path}; a second "
                f'check needs its own name: golden.check(data, "summary")'
            )
        actual = render(mask(data, mask_keys=mask_keys, mask_patterns=mask_patterns))
        if name is None:
            self._checked_default = True
        if self.update:
            first = self.session.first_check(path, self.test, actual)
            if first is None:
                if not path.exists() or path.read_text(encoding="utf-8") != actual:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(actual, encoding="utf-8")
                    self.written.append(path)
                return
            # Written in this session already (the same name twice, the same test on both
            # backends): a different result must fail, not overwrite the first one. Compared
            # with the text the first check gave: another process may be writing the file.
            what = f"written earlier in this session by {first.test}"
            self._compare(path, actual, what, expected=first.text)
            return
        first = self.session.first_check(path, self.test, actual)
        if first is not None and first.test != self.test and first.text != actual:
            # Two tests' different results for one file (a name shared by the module's tests):
            # --update-golden, which the comparison with the file would advise, cannot mend it.
            self._compare(
                path,
                actual,
                f"checked earlier in this session by {first.test}",
                expected=first.text,
            )
        if not path.exists():
            raise GoldenMismatch(
                f"no golden file {path}: run pytest with --update-golden to write it, "
                "then review and commit it"
            )
        self._compare(path, actual, "golden")

    def _compare(self, path: Path, actual: str, what: str, *, expected: str | None = None) -> None:
        """:class:`GoldenMismatch` with a diff when ``actual`` is not ``expected`` (by default,
        the file's text)."""
        __tracebackhide__ = True
        if expected is None:
            expected = path.read_text(encoding="utf-8")
        # A file that lost its final newline (an editor, a git hook) holds the same text: the
        # same result. (Compared as text otherwise: indented as --update-golden writes it.)
        if not expected.endswith("\n"):
            expected += "\n"
        if expected == actual:
            return
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{path} ({what})",
            tofile="this run",
            n=2,
        )
        lines = list(diff)
        shown = "".join(lines[:_DIFF_LINES])
        if len(lines) > _DIFF_LINES:
            shown += f"... {len(lines) - _DIFF_LINES} more lines\n"
        if what == "golden":
            advice = (
                "If the change is intended, run pytest with --update-golden and commit the file."
            )
        else:
            advice = (
                "One file holds one result: a named file is shared by every test of its module "
                "(and a test's default file by its runs on both backends): give the checks "
                "different names if they differ, e.g. "
                'golden.check(data, f"refused-{backend.kind}").'
            )
        raise GoldenMismatch(f"the outputs differ from {path}:\n{shown}{advice}")
