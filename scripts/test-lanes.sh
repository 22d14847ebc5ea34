#!/usr/bin/env bash
# `make test`: every test, in two pytest sessions at once (lanes), which share the stack.
#
# Most of the suite waits on Kafka, Elasticsearch, PostgreSQL and the programs it starts, not on
# the CPU: one session after the other took over 30 minutes on two cores, two lanes about two
# thirds of that. The lanes are split so that nothing in one disturbs the other:
#   A: tests/unit, tests/integration/pipeline/processing, and the chaos tests, whose outages and
#      kills hit stacks and processes of their own (tests/chaos/*, but the saga one);
#   B: the rest of tests/integration, tests/e2e, and the saga chaos test: the demo's topics and
#      consumer groups (requests.orders, saga.*) are used by the gateway tests, the demo and the
#      saga chaos test alike, so those run one after the other, here.
# Sessions sign in to the shared stack (pipeline.testing.fixtures): the first starts it, the last
# to leave stops what was started. Arguments go to both sessions (-k, -x, -q ...).
#
# Lane B prints as it goes; lane A's output follows at the end. Exit code: 0 when both passed,
# else the first non-zero one; a lane that selected no test (exit code 5, say with -k) counts as
# passed unless the other selected none either (then 5: pytest's "no tests", a failure in CI).
set -uo pipefail
cd "$(dirname "$0")/.."
pytest=.venv/bin/pytest

lane_a=(tests/unit tests/integration/pipeline/processing tests/chaos
        --ignore=tests/chaos/consumers/test_saga_chaos.py)
lane_b=(tests/integration --ignore=tests/integration/pipeline/processing tests/e2e
        tests/chaos/consumers/test_saga_chaos.py)

log_a=$(mktemp -t pipeline-test-lane-a.XXXXXX)
trap 'rm -f "$log_a"' EXIT

echo "lane A (unit, processing, chaos) runs beside; its output follows at the end"
# With job control on, the background lane keeps SIGINT's default (a non-interactive shell
# starts background commands with SIGINT ignored, and Python then has no KeyboardInterrupt:
# the interrupt tests failed); it gets its own process group, so Ctrl-C reaches it through
# the trap below.
set -m
"$pytest" "${lane_a[@]}" "$@" < /dev/null > "$log_a" 2>&1 &
pid_a=$!
set +m
# Ctrl-C stops both lanes.
trap 'kill -INT "$pid_a" 2>/dev/null; wait "$pid_a" 2>/dev/null; rm -f "$log_a"; exit 130' INT TERM

echo "--- lane B (integration, e2e, saga chaos)"
"$pytest" "${lane_b[@]}" "$@"
status_b=$?
wait "$pid_a"
status_a=$?
echo "--- lane A (unit, processing, chaos)"
cat "$log_a"
echo "--- lane A exited $status_a, lane B exited $status_b"

if [ "$status_a" -eq 5 ] && [ "$status_b" -eq 5 ]; then
  exit 5
fi
for status in "$status_a" "$status_b"; do
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    exit "$status"
  fi
done
exit 0
