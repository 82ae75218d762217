# Sourced by the benchmark scripts (after `cd "$repo"`): a `work` folder,
# `pids` killed on exit, and Kafka + Cassandra — the running ones when
# TIMBRE_TEST_KAFKA_BROKERS and TIMBRE_TEST_CQL_NODES are set, else started
# here by tests/services/services.sh (under the command prefix given to
# `bench_services`, e.g. `taskset -c 1`) and stopped on exit.

work=$(mktemp -d)
pids=()
services=
bench_cleanup() {
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
  if [[ -n $services ]]; then "$services" stop >&2 2>/dev/null || true; fi
}
trap bench_cleanup EXIT

bench_services() { # [command prefix…]
  if [[ -z ${TIMBRE_TEST_KAFKA_BROKERS:-} || -z ${TIMBRE_TEST_CQL_NODES:-} ]]; then
    services=tests/services/services.sh
    "$@" "$services" start >&2
    set -a
    # shellcheck disable=SC1091
    source "${TIMBRE_SERVICES_DIR:-$PWD/target/services}/env"
    set +a
  fi
}
