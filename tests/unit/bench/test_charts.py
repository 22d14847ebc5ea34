"""Which charts a run has, and how the scale-out chart groups its rows into lines (the drawing
itself is matplotlib's)."""

from __future__ import annotations

from bench.suite.charts import LATENCY, SCALE_OUT, THROUGHPUT, chart_names, series_label, series_of
from bench.suite.rows import compared, latency, measurement


def _latest(rows):
    return {"benchmarks": [{"name": "x", "rows": rows}]}


def test_a_chart_is_named_only_when_some_row_belongs_in_it():
    base = measurement("b", "base", "producing", "events/s", 10.0, [10.0, 10.0, 10.0])
    faster = compared(measurement("b", "ours", "producing", "events/s", 20.0, [20.0] * 3), base)
    slow = measurement("b", "at 50%", "end-to-end", "events/s", 5.0, [5.0] * 3, kind="latency",
                       latency_ms=latency(1.0, 2.0, 3.0, 100))  # fmt: skip
    assert chart_names(_latest([base])) == []
    assert chart_names(_latest([base, faster])) == [THROUGHPUT]
    assert chart_names(_latest([base, faster, slow])) == [THROUGHPUT, LATENCY]
    scaled = measurement("b", "2 processes", "scale-out", "events/s", 5.0, [5.0] * 3, processes=2)
    assert chart_names(_latest([scaled])) == [SCALE_OUT]


def test_scale_out_rows_of_one_line_differ_only_by_their_count_of_processes():
    one = measurement("scale_out", "processing, runtime, 2 ms handler, 1 process", "scale-out",
                      "events/s", 300.0, [300.0, 310.0, 290.0], processes=1)  # fmt: skip
    four = measurement("scale_out", "processing, runtime, 2 ms handler, 4 processes", "scale-out",
                       "events/s", 600.0, [600.0, 610.0, 590.0], processes=4)  # fmt: skip
    sagas = measurement("scale_out", "sagas, CreateOrder, 2 orchestrators", "scale-out",
                        "sagas/s", 9.0, [9.0, 9.1, 8.9], processes=2)  # fmt: skip
    assert series_of(one) == series_of(four) != series_of(sagas)
    assert series_label(four) == "processing, runtime, 2 ms handler, N processes"
    assert series_label(sagas) == "sagas, CreateOrder, N orchestrators"
