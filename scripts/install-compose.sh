#!/usr/bin/env bash
# Install the Docker Compose v2 CLI (a standalone `docker-compose` binary) and print its path.
#
# It validates docker-compose.yml (`docker-compose -f docker-compose.yml config`) on machines
# without a Docker engine: `config` only reads and renders the file. Built from Compose's own Go
# module by scripts/go-build-tool.sh (Debian's docker-compose package is Compose v1). A cold
# build takes about 4 minutes on two cores; later runs only check the cached binary.
#
#   compose=$(scripts/install-compose.sh) && "$compose" -f docker-compose.yml config --quiet
set -euo pipefail

# A v2.x release of the github.com/docker/compose/v2 module (v2.40.3 is its last).
version="${PIPELINE_COMPOSE_VERSION:-v2.40.3}"
module="github.com/docker/compose/v2"
exec "$(dirname "$0")/go-build-tool.sh" docker-compose "$module" "$version" ./cmd \
    "-X $module/internal.Version=$version" "version --short"
