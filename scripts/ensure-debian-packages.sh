#!/usr/bin/env bash
# Install the Debian packages named as arguments when their command is missing.
# Usage: ensure-debian-packages.sh COMMAND=PACKAGE ...   e.g. kcat=kcat
# A COMMAND with a slash is a path pattern instead, for programs Debian keeps off PATH:
#   '/usr/lib/postgresql/*/bin/postgres=postgresql'
set -euo pipefail
present() {
  if [[ "$1" == */* ]]; then compgen -G "$1" >/dev/null; else command -v "$1" >/dev/null 2>&1; fi
}
missing=()
for pair in "$@"; do
  command_name="${pair%%=*}"; package="${pair#*=}"
  present "$command_name" || missing+=("$package")
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
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
  # `pipeline stack up` runs its own cluster on 5432; Debian's main cluster would take that port.
  "${as_root[@]}" mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" |
    "${as_root[@]}" tee /etc/postgresql-common/createcluster.d/pipeline.conf >/dev/null
fi
"${as_root[@]}" apt-get update -qq >/dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
