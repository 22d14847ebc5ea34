#!/usr/bin/env bash
# Build a command-line tool from its Go module at a pinned version, cache it, print its path.
#
#   scripts/go-build-tool.sh NAME MODULE VERSION PACKAGE LDFLAGS VERSION_COMMAND
#
# NAME is the binary's name, PACKAGE the package to build inside the module (`.` or `./cmd`),
# LDFLAGS extra linker flags (e.g. `-X main.Version=v1`), VERSION_COMMAND the arguments that make
# the binary print its version (the output must contain VERSION without its leading v).
#
# Where it comes from: the module's source through the Go module proxy (checked against the Go
# checksum database), built here with the installed Go. Not `go install pkg@version`: some
# modules refuse it (`exclude` directives in go.mod) and the proxy may refuse the version list
# it asks for; so the source is downloaded and built as the main module.
#
# Idempotent: cached in ${PIPELINE_TOOLS_DIR:-~/.cache/pipeline/tools}/NAME-VERSION; a second run
# only checks the binary. Only the binary's path goes to stdout; progress goes to stderr.
set -euo pipefail

if [[ $# -ne 6 ]]; then
    echo "usage: $0 NAME MODULE VERSION PACKAGE LDFLAGS VERSION_COMMAND" >&2
    exit 2
fi
name="$1" module="$2" version="$3" package="$4" ldflags="$5" version_command="$6"
tools_dir="${PIPELINE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pipeline/tools}"
install_dir="$tools_dir/$name-$version"
binary="$install_dir/$name"

log() { printf 'go-build-tool %s: %s\n' "$name" "$*" >&2; }

installed() {
    [[ -x "$binary" ]] || return 1
    local output
    # shellcheck disable=SC2086 # the version command is a list of words
    output="$("$binary" $version_command 2>&1)" || return 1
    [[ "$output" == *"${version#v}"* ]]
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
    log "Go is needed to build $name $version, and \`go\` was not found"
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

work="$(mktemp -d "$tools_dir/.$name-build.XXXXXX")"
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

log "building with $("$go_bin" env GOVERSION) (minutes when Go's caches are cold)"
(cd "$work/src" && "$go_bin" build -trimpath -ldflags "-s -w $ldflags" -o "$work/$name" "$package")

mv -f "$work/$name" "$binary"
if ! installed; then
    log "the built binary does not report version $version"
    exit 1
fi
log "installed in $((SECONDS - started))s"
printf '%s\n' "$binary"
