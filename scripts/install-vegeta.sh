#!/usr/bin/env bash
# Install vegeta (the HTTP load generator that drives a server at a fixed request rate) and print
# its path. bench/gateway_load.py uses it. Built from vegeta's Go module at a pinned version by
# scripts/go-build-tool.sh; a cold build takes about a minute.
#
#   vegeta=$(scripts/install-vegeta.sh) && "$vegeta" -version
set -euo pipefail

version="${PIPELINE_VEGETA_VERSION:-v12.12.0}"
exec "$(dirname "$0")/go-build-tool.sh" vegeta github.com/tsenart/vegeta/v12 "$version" . \
    "-X main.Version=$version" "-version"
