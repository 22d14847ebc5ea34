"""Which benchmarks the suite runs, in which order, and with which arguments in the full and
the quick profile.

The quick profile (``make bench QUICK=1``; issue 17 wants it under 5 minutes) keeps 3 rounds
of every benchmark and takes the smallest sizes that still give a meaningful figure: enough
events that a round lasts well beyond its start-up, and every baseline kept. Most of what is
left is the benchmarks' own process start-ups and group joins (relays, saga services, the
processors of each case). On 2 cores the suite took 241 s on a stack that had been running,
and 266-275 s on one just started (JVMs still cold); `make bench QUICK=1` starting the stack
itself (24-27 s) took 4:49-5:04 in five runs. bench/results/latest.json has each one's seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = BENCH_DIR / "results"
ROUNDS = 3


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of bench/: its file stem, and its arguments per profile."""

    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    #: Seconds after which the suite stops it and records it failed.
    timeout_full_s: float = 3_600.0
    timeout_quick_s: float = 180.0
    #: Where the script is; it writes its JSON to ``results/`` there.
    directory: Path = BENCH_DIR

    @property
    def script(self) -> Path:
        return self.directory / f"{self.name}.py"

    @property
    def result_json(self) -> Path:
        return self.directory / "results" / f"{self.name}.json"

    def arguments(self, quick: bool) -> tuple[str, ...]:
        return self.quick if quick else self.full

    def timeout_s(self, quick: bool) -> float:
        return self.timeout_quick_s if quick else self.timeout_full_s


_REPEAT = ("--repeat", str(ROUNDS))
#: The quick profile's processing cases: those of issue 16's goals (async handlers on
#: PostgreSQL and synchronous handlers against the plain agent; ordering + inbox against the bare
#: runtime, B) and their baselines, with small sizes: half the cases, each started once, its
#: 3 rounds the consecutive thirds of that run.
_PROCESSING_QUICK_CASES = "|".join(
    (
        "A. runtime, async handler, key + inbox, PostgreSQL",
        "A. runtime, sync handler",
        "A. plain Faust agent (one at a time), uvloop",
        "B. runtime",
    )
)
_PROCESSING_QUICK = (
    *("--io-events", "2000", "--thread-events", "400"),
    *("--plain-events", "200", "--noop-events", "2000"),
    *("--only", _PROCESSING_QUICK_CASES, "--save"),
    "--rounds-in-one-run",
)

BENCHMARKS: tuple[Benchmark, ...] = (
    # Quick: 10,000 records, so that a round outlasts each producer's start-up.
    Benchmark("producer_throughput", full=_REPEAT, quick=("--records", "10000", *_REPEAT)),
    # Quick: 0.5 s attacks after a 0.1 s warm-up (1 and 2 processes, gateway and baseline):
    # some 500 requests per saturation attack at the gateway's rate.
    Benchmark(
        "gateway_load", full=_REPEAT, quick=("--duration", "0.5", "--warmup", "0.1", *_REPEAT)
    ),
    # Quick: 10,000 rows (with 5,000, EventProducer's start-up and flush halve its figure and
    # the relays' ratios mean nothing); the latency at 200 events/s for 1 s with LISTEN/NOTIFY
    # (the full profile also polling only).
    Benchmark(
        "outbox_relay",
        full=_REPEAT,
        quick=(
            *("--rows", "10000", "--rate", "200", "--seconds", "1", "--no-poll-latency"),
            *_REPEAT,
        ),
    ),
    Benchmark("log_shipping", full=_REPEAT, quick=("--records", "5000", *_REPEAT)),
    # Quick: the goals' cases and their baselines (--only ... --save), with 2,000 events per
    # runtime run, 400 for the synchronous handler, 200 for the plain ones.
    Benchmark(
        "processing",
        full=_REPEAT,
        quick=(*_PROCESSING_QUICK, *_REPEAT),
    ),
    # sagas.py has no rounds: each offered level is measured once (the full profile: its 5
    # levels of 20 s; the quick one: one level of 2 s at 10 sagas/s).
    Benchmark("sagas", full=(), quick=("--rates", "10", "--seconds", "2")),
    # Quick: 20,000 records, without the one-process command (for information only).
    Benchmark(
        "replay",
        full=_REPEAT,
        quick=("--records", "20000", "--no-one-process-command", *_REPEAT),
    ),
    Benchmark("e2e_latency", full=(), quick=("--quick",)),
    Benchmark("scale_out", full=(), quick=("--quick",)),
)
