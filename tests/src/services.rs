//! A private Kafka and Cassandra for fault tests: started by
//! `tests/services/services.sh` in a scratch folder, on their own ports, so
//! killing them never touches the services the other tests share.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// The two services of one fault test; stopped when dropped.
pub struct PrivateServices {
    dir: PathBuf,
    /// `host:port` of the broker.
    pub kafka: String,
    /// `host:port` of the CQL node.
    pub cql: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("services/services.sh")
}

impl PrivateServices {
    /// Starts both services in `dir` (blocking: tens of seconds).
    pub fn start(dir: &Path) -> Self {
        let mut services = Self {
            dir: dir.to_path_buf(),
            kafka: String::new(),
            cql: String::new(),
        };
        services.run(&["start"]);
        let env = std::fs::read_to_string(dir.join("env")).expect("services env file");
        let vars: HashMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
        services.kafka = vars["TIMBRE_TEST_KAFKA_BROKERS"].to_string();
        services.cql = vars["TIMBRE_TEST_CQL_NODES"].to_string();
        services
    }

    /// `kill -9` of one service's JVM (`kafka` or `cassandra`); its data stays.
    pub fn crash(&self, service: &str) {
        self.run(&["crash", service]);
    }

    /// Restarts a crashed service on its data and port, once it answers.
    pub fn resume(&self, service: &str) {
        self.run(&["resume", service]);
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(script())
            .args(args)
            .env("TIMBRE_SERVICES_DIR", &self.dir)
            // The keyspace must outlive the crash, as in production.
            .env("TIMBRE_CASSANDRA_DURABLE", "1")
            .output()
            .expect("services.sh runs");
        assert!(
            out.status.success(),
            "services.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `body` on its own runtime with private services started in `dir`,
/// failing it after `deadline`. The runtime, and with it every client and
/// processor task, ends before the services stop, pass or fail: a Kafka
/// consumer closed against a dead broker can block for ever.
pub fn with_private_services<F, Fut>(dir: &Path, deadline: Duration, body: F)
where
    F: FnOnce(Arc<PrivateServices>) -> Fut,
    Fut: Future<Output = ()>,
{
    let services = Arc::new(PrivateServices::start(dir));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime");
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async { tokio::time::timeout(deadline, body(services.clone())).await })
    }));
    runtime.shutdown_timeout(Duration::from_secs(30));
    drop(services);
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(_)) => panic!("not finished within {deadline:?}"),
        Ok(Ok(())) => {}
    }
}

impl Drop for PrivateServices {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .env("TIMBRE_SERVICES_DIR", &self.dir)
            .output();
    }
}
