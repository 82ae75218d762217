#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver (chromedriver) are
# installed, from Debian's packages when missing, and prints the path of
# chromedriver. The browser tests (tests/tests/e2e/browser.rs) drive it.
set -euo pipefail

driver=$(command -v chromedriver || true)
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $driver || -z $browser ]]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium and chromedriver are required: install them with your package manager" >&2
    exit 1
  fi
  sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || {
      echo "installing chromium needs root: apt-get install chromium chromium-driver" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  echo "installing chromium and chromium-driver (Debian packages)" >&2
  "${sudo[@]}" apt-get update -q >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2
  driver=$(command -v chromedriver || true)
  if [[ -z $driver ]]; then
    echo "chromedriver is still missing after installing chromium-driver" >&2
    exit 1
  fi
fi
"$driver" --version >&2
echo "$driver"
