#!/usr/bin/env bash
# Install the Debian packages named as arguments when their command is missing.
# Usage: ensure-debian-packages.sh COMMAND=PACKAGE ...   e.g. kcat=kcat
set -euo pipefail
missing=()
for pair in "$@"; do
  command_name="${pair%%=*}"; package="${pair#*=}"
  command -v "$command_name" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
echo "installing Debian packages: ${missing[*]}" >&2
"${as_root[@]}" apt-get update -qq >/dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
