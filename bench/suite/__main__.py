"""``python -m bench.suite [--quick] [--only NAME ...] [--render-only]``: what ``make bench``
runs. See bench/suite/__init__.py and docs/benchmarks.md.

1. run every benchmark of the profile (bench.suite.profiles), each as a subprocess;
2. convert each one's JSON to rows; write bench/results/latest.json and latest.md;
3. draw the charts into bench/results/charts/;
4. rewrite the results section of docs/benchmarks.md;
5. print the total time; exit 1 when a benchmark failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

from rich.console import Console

from bench.suite import charts, latest, machine, results_page, table
from bench.suite.profiles import BENCHMARKS, RESULTS_DIR
from bench.suite.runner import ROOT, run_all

LATEST_JSON = RESULTS_DIR / "latest.json"
LATEST_MD = RESULTS_DIR / "latest.md"
CHARTS_DIR = RESULTS_DIR / "charts"
LOGS_DIR = RESULTS_DIR / "suite-logs"
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_outputs(document: latest.Latest, console: Console) -> None:
    """latest.json, latest.md, the charts and the docs' results section, all from one run."""
    LATEST_JSON.write_text(latest.to_json(document))
    LATEST_MD.write_text(table.latest_markdown(document))
    drawn = charts.draw_charts(document, CHARTS_DIR)
    page = DOCS_PAGE.read_text()
    DOCS_PAGE.write_text(results_page.with_section(page, results_page.results_section(document)))
    for path in (LATEST_JSON, LATEST_MD, *drawn, DOCS_PAGE):
        console.print(f"wrote {path.relative_to(ROOT)}")


def _parser() -> argparse.ArgumentParser:
    names = [benchmark.name for benchmark in BENCHMARKS]
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite", description="Run every benchmark of bench/ and report."
    )
    parser.add_argument(
        "--quick", action="store_true", help="the quick profile (small sizes, 3 rounds)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="NAME",
        help=f"run only this benchmark (repeatable; prints its rows, writes no report): "
        f"{', '.join(names)}",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: rewrite latest.md, the charts and the docs from latest.json",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        console.print("matplotlib is missing: .venv/bin/pip install -e '.[dev]' (make bench does)")
        return 2
    if args.render_only:
        try:
            written = latest.read_latest(LATEST_JSON)
        except (OSError, ValueError) as error:
            console.print(f"cannot render: {' '.join(str(error).split())}")
            return 2
        write_outputs(written, console)
        return 0

    began = time.monotonic()
    selected = tuple(b for b in BENCHMARKS if not args.only or b.name in args.only)
    started = _now()
    commit = machine.commit(ROOT)
    uncommitted = machine.uncommitted_changes(ROOT)
    before = machine.machine_before()
    profile = "quick" if args.quick else "full"
    console.print(f"{len(selected)} benchmarks, {profile} profile, commit {commit}")
    try:
        runs = run_all(selected, args.quick, LOGS_DIR, console)
    except KeyboardInterrupt:
        console.print("interrupted: no results written")
        return 130
    document: latest.Latest = {
        "schema": latest.SCHEMA,
        "started": started,
        "finished": _now(),
        "quick": args.quick,
        "commit": commit,
        "uncommitted_changes": uncommitted,
        "machine": machine.with_load_after(before),
        "benchmarks": runs,
    }
    if args.only:
        print("\n".join(table.markdown_table(latest.all_rows(document))))
    else:
        write_outputs(document, console)
    failed = latest.failures(document)
    total = time.monotonic() - began
    verdict = (
        f"{len(failed)} failed: {', '.join(r['name'] for r in failed)}" if failed else "all ok"
    )
    console.print(f"suite took {total:.0f} s ({total / 60:.1f} min), {profile} profile; {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
