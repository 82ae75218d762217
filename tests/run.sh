#!/usr/bin/env bash
# The whole test suite: prerequisites, model weights, real Kafka + Cassandra,
# then every unit, integration and end-to-end test against them. Services are
# stopped on exit, pass or fail. `.ci/run` calls exactly this.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

missing=()
command -v cargo >/dev/null 2>&1 || missing+=("cargo (rustup: https://rustup.rs, or apt-get install cargo)")
command -v cc >/dev/null 2>&1 || missing+=("a C toolchain (apt-get install build-essential)")
command -v make >/dev/null 2>&1 || missing+=("make (apt-get install make)")
command -v python3 >/dev/null 2>&1 || missing+=("python3 with pip and venv (apt-get install python3 python3-pip python3-venv)")
command -v java >/dev/null 2>&1 || missing+=("java 17 (apt-get install openjdk-17-jdk-headless)")
pkg-config --exists openssl 2>/dev/null || missing+=("OpenSSL headers for Kafka TLS/SASL (apt-get install pkg-config libssl-dev)")
command -v mvn >/dev/null 2>&1 || missing+=("maven (apt-get install maven)")
if ((${#missing[@]})); then
  printf 'missing prerequisite: %s\n' "${missing[@]}" >&2
  exit 1
fi

# Style and lints first: they fail fast, before any service starts.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

processor/scripts/fetch-model.sh

# Property-based OpenAPI testing of the live API (tests/tests/e2e/api_openapi.rs).
TIMBRE_SCHEMATHESIS=$(tests/tools/schemathesis.sh)
export TIMBRE_SCHEMATHESIS

# The Helm chart: lint, render and validate offline (builds helm and
# kubeconform with Go on first use); tests/tests/e2e/helm_chart.rs renders it
# with the helm binary whose path check.sh prints.
TIMBRE_HELM=$(tests/helm/check.sh)
export TIMBRE_HELM

# Headless Chromium and chromedriver for the browser SDK and console tests
# (tests/tests/e2e/browser.rs); installed from Debian's packages if missing.
TIMBRE_CHROMEDRIVER=$(tests/tools/chromium.sh)
export TIMBRE_CHROMEDRIVER

services=tests/services/services.sh
cleanup() { "$services" stop || true; }
trap cleanup EXIT
"$services" start
set -a
# shellcheck disable=SC1091
source "${TIMBRE_SERVICES_DIR:-$repo/target/services}/env"
set +a
# Tests that need Kafka or Cassandra fail (not skip) when these are unset or
# the servers do not answer.
export TIMBRE_REQUIRE_SERVICES=1

# The e2e tests run the `timbre` binary, whose own test harness is off
# (`test = false`): build it explicitly.
cargo build --workspace --bins --locked
cargo test --workspace --tests --locked --no-fail-fast "$@"
