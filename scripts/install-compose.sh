#!/usr/bin/env bash
# Install the Docker Compose v2 CLI (a standalone `docker-compose` binary) and print its path.
#
# It validates docker-compose.yml (`docker-compose -f docker-compose.yml config`) on machines
# without a Docker engine: `config` only reads and renders the file.
#
# Where it comes from: Compose's own Go module, fetched through the Go module proxy (checked
# against the Go checksum database) and built here with the installed Go. `go install pkg@version`
# refuses this module (its go.mod has `exclude` directives), so the module's source is downloaded
# and built as the main module. Debian's docker-compose package is Compose v1 and is not used.
#
# Idempotent: the binary is cached in ${PIPELINE_TOOLS_DIR:-~/.cache/pipeline/tools}; a second
# run only checks it. A cold build takes a few minutes (about 4 on two cores); Go's module and
# build caches make later builds faster.
#
# Only the binary's path goes to stdout; progress goes to stderr.
#
#   compose=$(scripts/install-compose.sh) && "$compose" -f docker-compose.yml config --quiet
set -euo pipefail

# A v2.x release of the github.com/docker/compose/v2 module (v2.40.3 is its last).
version="${PIPELINE_COMPOSE_VERSION:-v2.40.3}"
module="github.com/docker/compose/v2"
tools_dir="${PIPELINE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pipeline/tools}"
install_dir="$tools_dir/docker-compose-$version"
binary="$install_dir/docker-compose"

log() { printf 'install-compose: %s\n' "$*" >&2; }

installed() {
    [[ -x "$binary" ]] && [[ "$("$binary" version --short 2>/dev/null)" == "${version#v}" ]]
}

if installed; then
    printf '%s\n' "$binary"
    exit 0
fi

go_bin="$(command -v go || true)"
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then
    go_bin=/usr/local/go/bin/go
fi
if [[ -z "$go_bin" ]]; then
    log "Go is needed to build Docker Compose $version, and \`go\` was not found"
    exit 1
fi

mkdir -p "$install_dir"

# One build at a time (parallel test sessions); the second one finds the binary ready.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$install_dir/.lock"
    flock 9
    if installed; then
        printf '%s\n' "$binary"
        exit 0
    fi
fi

work="$(mktemp -d "$tools_dir/.compose-build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

# Neither the caller's module settings nor a go.mod around the caller's folder apply here.
export GOFLAGS="-buildvcs=false" GO111MODULE=on GOWORK=off CGO_ENABLED=0

started=$SECONDS
log "downloading $module@$version (Go module proxy)"
source_dir="$(cd "$work" && "$go_bin" mod download -json "$module@$version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
if [[ -z "$source_dir" || ! -f "$source_dir/go.mod" ]]; then
    log "could not download $module@$version"
    exit 1
fi

# The module cache is read-only; build in a writable copy, as the main module.
cp -R "$source_dir" "$work/src"
chmod -R u+w "$work/src"

log "building docker-compose $version with $("$go_bin" env GOVERSION) (a few minutes when cold)"
(
    cd "$work/src"
    "$go_bin" build -trimpath \
        -ldflags "-s -w -X $module/internal.Version=$version" \
        -o "$work/docker-compose" ./cmd
)

mv -f "$work/docker-compose" "$binary"
if ! installed; then
    log "the built binary does not report version $version"
    exit 1
fi
log "installed in $((SECONDS - started))s"
printf '%s\n' "$binary"
