//! Shared helpers of the integration tests: where the real services are, and
//! unique names so tests share one Kafka and one Cassandra without colliding.

pub mod api;
pub mod gate;
pub mod pipeline;
pub mod services;
pub mod webdriver;

use std::path::PathBuf;

/// Whether the test command promised real services (`tests/run.sh` sets it).
fn services_required() -> bool {
    std::env::var("TIMBRE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn service(var: &str, what: &str) -> Option<String> {
    required(var, what, "start it with tests/services/services.sh start")
}

/// The value of `var` naming a service or tool the test needs: when unset,
/// a failure under the test command (`TIMBRE_REQUIRE_SERVICES=1`), else a
/// printed skip. `hint` tells how to provide it.
pub fn required(var: &str, what: &str, hint: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if services_required() => {
            panic!("{what} is required by the test command but {var} is unset; {hint}")
        }
        _ => {
            eprintln!("SKIPPED: {what} not configured ({var} unset); {hint}");
            None
        }
    }
}

/// `kafka://…` of the test broker, if configured (a failure when required).
pub fn kafka_url() -> Option<String> {
    service("TIMBRE_TEST_KAFKA_BROKERS", "Apache Kafka").map(|b| format!("kafka://{b}"))
}

/// Contact point of the test Cassandra, if configured (a failure when required).
pub fn cql_nodes() -> Option<String> {
    service("TIMBRE_TEST_CQL_NODES", "Apache Cassandra")
}

/// Folder of the test Cassandra's TLS material (`ca.pem`, `client.pem`,
/// `client.key`, and `other-ca.pem`, a CA that signed nothing), if
/// configured (a failure when required).
pub fn cql_tls_dir() -> Option<PathBuf> {
    service("TIMBRE_TEST_CQL_TLS_DIR", "Cassandra's TLS material").map(PathBuf::from)
}

/// A name unique to this test run, safe for topics and keyspaces.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// The bundled fixtures (`tests/fixtures`).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The `timbre` binary next to this test's build (cargo builds it for the workspace).
pub fn timbre_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let bin = dir.join("timbre");
    assert!(
        bin.is_file(),
        "{} missing: build it with `cargo build -p timbre`",
        bin.display()
    );
    bin
}
