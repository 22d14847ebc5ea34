"""Golden files: a test's outputs compared with a JSON file, ids and timestamps masked.

::

    def test_invoices_are_totalled(golden):
        outputs = run_my_processor(...)
        golden.check(outputs)                 # tests/golden/<module>/<test>.json
        golden.check(summary, "summary")      # tests/golden/<module>/summary.json

``pytest --update-golden`` writes the files instead of comparing (review the diff, commit it).

What changes from run to run is masked before comparing (:func:`mask`): UUIDs (event ids) and
ULIDs become ``<id-1>``, ``<id-2>``, ... numbered by first appearance, so "the same id twice"
is still checked; ISO-8601 date-times in text become ``<time>``; the value of a key named
``time``, ``ts``, ``timestamp``, ``timestamp_ms`` or ending in ``_at`` becomes ``<time>``. More
keys or patterns can be masked per check (``mask_keys``, ``mask_patterns``).

:func:`mask` and :func:`render` are pure; :class:`Golden` reads and writes the files.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


class GoldenMismatch(AssertionError):
    """The outputs differ from the golden file (the message holds the diff)."""


def _is_time_key(key: str) -> bool:
    return key in _TIME_KEYS or key.endswith("_at")


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

    def value(self, value: Any, key: str | None = None) -> Any:
        if key is not None and key in self.mask_keys:
            return MASKED
        timelike = isinstance(value, int | float | str) and not isinstance(value, bool)
        if key is not None and _is_time_key(key) and timelike:
            return TIME
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            # Sorted, so ids are numbered the same however the mapping was built.
            return {
                self.text(str(k)): self.value(v, str(k))
                for k, v in sorted(value.items(), key=lambda item: str(item[0]))
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value


def mask(
    data: Any,
    *,
    mask_keys: Iterable[str] = (),
    mask_patterns: Iterable[str | re.Pattern[str]] = (),
) -> Any:
    """``data`` (JSON-like: mappings, lists, text, numbers) with what changes from run to run
    masked, as the module's docstring says; ``mask_keys`` are masked whole (``<masked>``), and
    text matching any of ``mask_patterns`` is replaced by ``<masked>``."""
    masker = _Masker(
        frozenset(mask_keys),
        tuple(re.compile(p) if isinstance(p, str) else p for p in mask_patterns),
    )
    return masker.value(data)


def render(data: Any) -> str:
    """The text of a golden file: indented JSON with sorted keys and a final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


class Golden:
    """Compares outputs with golden files next to a test (the ``golden`` fixture's object).

    ``folder``: where files named without a folder go; ``name``: the file name when none is
    given; ``update``: write the files instead of comparing them. Each file written is
    appended to ``written``.
    """

    def __init__(self, folder: Path, name: str, *, base: Path, update: bool = False) -> None:
        self.folder = folder
        self.name = name
        self.base = base
        self.update = update
        self.written: list[Path] = []

    def path(self, name: str | Path | None = None) -> Path:
        """The file of ``name``: the test's own file by default; a bare name goes into
        :attr:`folder`, a relative path is taken from :attr:`base` (the test's folder); ``.json``
        is added when there is no suffix."""
        if name is None:
            path = self.folder / self.name
        else:
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
        when it differs or is missing (``--update-golden`` writes it instead)."""
        path = self.path(name)
        actual = render(mask(data, mask_keys=mask_keys, mask_patterns=mask_patterns))
        if self.update:
            if not path.exists() or path.read_text(encoding="utf-8") != actual:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(actual, encoding="utf-8")
                self.written.append(path)
            return
        if not path.exists():
            raise GoldenMismatch(
                f"no golden file {path}: run pytest with --update-golden to write it, "
                "then review and commit it"
            )
        expected = path.read_text(encoding="utf-8")
        if expected == actual:
            return
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{path} (golden)",
            tofile="this run",
            n=2,
        )
        lines = list(diff)
        shown = "".join(lines[:_DIFF_LINES])
        if len(lines) > _DIFF_LINES:
            shown += f"... {len(lines) - _DIFF_LINES} more lines\n"
        raise GoldenMismatch(
            f"the outputs differ from {path}:\n{shown}"
            "If the change is intended, run pytest with --update-golden and commit the file."
        )
