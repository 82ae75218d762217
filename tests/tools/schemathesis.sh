#!/usr/bin/env bash
# Installs schemathesis (property-based OpenAPI testing, from PyPI) into a
# cached virtualenv and prints the path of its executable.
set -euo pipefail

readonly version="4.32.5"
root="${XDG_CACHE_HOME:-$HOME/.cache}/timbre/tools/schemathesis-$version"
bin="$root/bin/schemathesis"

if [[ -x $bin ]] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "$bin"
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  echo "python3 venv support is required: apt-get install python3-venv" >&2
  exit 1
fi
rm -rf "$root"
python3 -m venv "$root" >&2
"$root/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
"$bin" --version >&2
echo "$bin"
