"""The benchmark suite (issue 17): runs every benchmark in bench/ and assembles one result.

``python -m bench.suite [--quick]`` (what ``make bench`` runs) starts each benchmark as a
subprocess with its arguments for the full or the quick profile (:mod:`bench.suite.profiles`),
converts each one's JSON into rows of the common format (:mod:`bench.suite.adapters`,
:mod:`bench.suite.rows`), and writes ``bench/results/latest.json``, ``latest.md``
(:mod:`bench.suite.table`), the charts (:mod:`bench.suite.charts`) and the results section of
docs/benchmarks.md (:mod:`bench.suite.results_page`).
"""
