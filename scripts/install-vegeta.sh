#!/usr/bin/env bash
# Install vegeta (the HTTP load generator that drives a server at a fixed request rate) and print
# its path. bench/gateway_load.py uses it.
#
# Where it comes from: vegeta's own Go module at a pinned version, fetched through the Go module
# proxy (checked against the Go checksum database) and built here with the installed Go. Not
# `go install pkg@version`: it also asks the proxy for the module's version list (to look for a
# deprecation notice), which the proxy may refuse; so the module's source is downloaded and built
# as the main module, like scripts/install-compose.sh does.
#
# Idempotent: the binary is cached in ${PIPELINE_TOOLS_DIR:-~/.cache/pipeline/tools}, outside the
# repository; a second run only checks it. A cold build takes about a minute.
#
# Only the binary's path goes to stdout; progress goes to stderr.
#
#   vegeta=$(scripts/install-vegeta.sh) && "$vegeta" -version
set -euo pipefail

version="${PIPELINE_VEGETA_VERSION:-v12.12.0}"
module="github.com/tsenart/vegeta/v12"
tools_dir="${PIPELINE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pipeline/tools}"
install_dir="$tools_dir/vegeta-$version"
binary="$install_dir/vegeta"

log() { printf 'install-vegeta: %s\n' "$*" >&2; }

# `go install` leaves the binary without version stamping, so the version is the folder's;
# `-version` proves the binary runs.
installed() {
    [[ -x "$binary" ]] && "$binary" -version >/dev/null 2>&1
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
    log "Go is needed to build vegeta $version, and \`go\` was not found"
    exit 1
fi

mkdir -p "$install_dir"

# One build at a time (parallel runs); the second one finds the binary ready.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$install_dir/.lock"
    flock 9
    if installed; then
        printf '%s\n' "$binary"
        exit 0
    fi
fi

work="$(mktemp -d "$tools_dir/.vegeta-build.XXXXXX")"
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

log "building vegeta $version with $("$go_bin" env GOVERSION)"
(cd "$work/src" && "$go_bin" build -trimpath -ldflags "-s -w -X main.Version=$version" -o "$work/vegeta" .)

mv -f "$work/vegeta" "$binary"
if ! installed; then
    log "the built binary does not run"
    exit 1
fi
log "installed in $((SECONDS - started))s"
printf '%s\n' "$binary"
