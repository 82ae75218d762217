//! The Helm chart (`helm/timbre`) as the real `helm` renders it, checked
//! against the binary it deploys: the rendered `timbre.toml` and env must load
//! through `timbre::config::Config`, the probes must hit the routes on the
//! ports that config listens on, the hook must run the real commands, KEDA must
//! watch the topics the processor consumes, and no secret may appear as a
//! literal. `tests/helm/check.sh` installs helm and prints its path; set
//! `TIMBRE_HELM` to it (`tests/run.sh` does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml_ng::Value;
use timbre::config::Config;
use timbre::topics::{TopicNames, catalogue};

/// The Kubernetes version `tests/helm/check.sh` validates against.
const KUBE_VERSION: &str = "1.33.0";
/// Every value set the chart ships (`None`: the defaults).
const VALUE_SETS: [Option<&str>; 4] = [
    None,
    Some("all-features-values.yaml"),
    Some("model-image-values.yaml"),
    Some("model-baked-values.yaml"),
];
/// Env vars that carry secrets into the containers.
const SECRET_ENV: [&str; 4] = [
    "TIMBRE_KAFKA_SASL_PASSWORD",
    "TIMBRE_CQL_PASSWORD",
    "TIMBRE__API__TOKEN_SIGNING_KEY",
    "TIMBRE__API__KEY_PEPPER",
];
const SCHEMA_ERROR: &str = "values don't meet the specifications of the schema";

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../helm/timbre")
}

/// The helm binary, if configured (a failure when the test command requires it).
fn helm() -> Option<PathBuf> {
    match std::env::var("TIMBRE_HELM") {
        Ok(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ if std::env::var("TIMBRE_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => panic!(
            "helm is required by the test command but TIMBRE_HELM is unset; \
             tests/helm/check.sh installs helm and prints its path"
        ),
        _ => {
            eprintln!(
                "SKIPPED: helm not configured (TIMBRE_HELM unset); \
                 run TIMBRE_HELM=$(tests/helm/check.sh) cargo test -p timbre-tests --test helm_chart"
            );
            None
        }
    }
}

fn template(helm: &Path, values: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(helm);
    cmd.arg("template").arg("timbre").arg(chart()).args([
        "--namespace",
        "timbre",
        "--kube-version",
        KUBE_VERSION,
    ]);
    if let Some(file) = values {
        cmd.arg("-f").arg(chart().join("ci").join(file));
    }
    cmd.args(args).output().expect("helm runs")
}

/// One rendering of the chart: its documents and raw text.
struct Rendered {
    label: String,
    docs: Vec<Value>,
    text: String,
}

fn render(helm: &Path, values: Option<&str>) -> Rendered {
    let label = values.unwrap_or("default values").to_string();
    let out = template(helm, values, &[]);
    assert!(
        out.status.success(),
        "helm template with {label} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm prints utf-8");
    let docs: Vec<Value> = documents(&text)
        .iter()
        .map(|doc| serde_yaml_ng::from_str(doc).expect("helm renders valid YAML"))
        .collect();
    assert!(docs.len() >= 8, "{label}: only {} documents", docs.len());
    Rendered { label, docs, text }
}

/// The YAML documents of a `---`-separated stream, comment-only ones dropped.
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("at least one");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

fn renders() -> Option<Vec<Rendered>> {
    let helm = helm()?;
    Some(VALUE_SETS.iter().map(|v| render(&helm, *v)).collect())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], |s| s.as_slice())
}

impl Rendered {
    fn all(&self, kind: &str) -> impl Iterator<Item = &Value> + '_ {
        let kind = kind.to_string();
        self.docs.iter().filter(move |d| s(&d["kind"]) == kind)
    }

    /// The one `kind` whose name ends with `-suffix`.
    fn one(&self, kind: &str, suffix: &str) -> &Value {
        let found: Vec<&Value> = self
            .all(kind)
            .filter(|d| s(&d["metadata"]["name"]).ends_with(&format!("-{suffix}")))
            .collect();
        assert_eq!(found.len(), 1, "{}: {kind} *-{suffix}", self.label);
        found[0]
    }

    fn by_name(&self, kind: &str, name: &str) -> Option<&Value> {
        self.all(kind).find(|d| s(&d["metadata"]["name"]) == name)
    }

    /// (kind/name, pod spec) of every Deployment and Job.
    fn pods(&self) -> Vec<(String, &Value)> {
        self.docs
            .iter()
            .filter(|d| matches!(s(&d["kind"]), "Deployment" | "Job"))
            .map(|d| {
                let id = format!("{}/{}", s(&d["kind"]), s(&d["metadata"]["name"]));
                (id, &d["spec"]["template"]["spec"])
            })
            .collect()
    }

    fn has_hook(&self, doc: &Value, event: &str) -> bool {
        s(&doc["metadata"]["annotations"]["helm.sh/hook"])
            .split(',')
            .any(|e| e == event)
    }
}

/// Init containers, then containers.
fn containers(pod: &Value) -> Vec<&Value> {
    seq(&pod["initContainers"])
        .iter()
        .chain(seq(&pod["containers"]))
        .collect()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    containers(pod)
        .into_iter()
        .find(|c| s(&c["name"]) == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn argv(c: &Value) -> Vec<&str> {
    seq(&c["command"])
        .iter()
        .chain(seq(&c["args"]))
        .map(s)
        .collect()
}

fn env_value<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    seq(&c["env"]).iter().find(|e| s(&e["name"]) == name)
}

/// The literal env of a container (what `Config::load` sees; secrets omitted).
fn literal_env(c: &Value) -> Vec<(String, String)> {
    seq(&c["env"])
        .iter()
        .filter_map(|e| Some((s(&e["name"]).to_string(), e["value"].as_str()?.to_string())))
        .collect()
}

fn container_port(c: &Value, name: &str) -> u16 {
    let port = seq(&c["ports"])
        .iter()
        .find(|p| s(&p["name"]) == name)
        .unwrap_or_else(|| panic!("container {} has no port named {name}", s(&c["name"])));
    port["containerPort"]
        .as_u64()
        .expect("numeric containerPort") as u16
}

/// The ConfigMap a pod mounts as `config`, and the file TIMBRE_CONFIG names in it.
fn config_toml<'a>(r: &'a Rendered, pod: &Value, c: &Value) -> &'a str {
    let file = s(&env_value(c, "TIMBRE_CONFIG").expect("TIMBRE_CONFIG is set")["value"]);
    let mount = seq(&c["volumeMounts"])
        .iter()
        .find(|m| s(&m["name"]) == "config")
        .expect("the config volume is mounted");
    let key = file
        .strip_prefix(&format!("{}/", s(&mount["mountPath"])))
        .unwrap_or_else(|| panic!("{file} is not in the config mount"));
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| s(&v["name"]) == "config")
        .expect("config volume");
    let map = r
        .by_name("ConfigMap", s(&volume["configMap"]["name"]))
        .unwrap_or_else(|| panic!("{}: the mounted ConfigMap is rendered", r.label));
    map["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap has no {key}"))
}

/// Loads a container's config exactly as the binary would: the rendered file,
/// then its literal `TIMBRE__…` env.
fn load_config(r: &Rendered, pod: &Value, c: &Value) -> Config {
    let dir = timbre_tests::scratch_dir("helm");
    let file = dir.join("timbre.toml");
    std::fs::write(&file, config_toml(r, pod, c)).unwrap();
    let config = Config::load(Some(&file), literal_env(c))
        .unwrap_or_else(|e| panic!("{}: the binary refuses the rendered config: {e}", r.label));
    std::fs::remove_dir_all(dir).ok();
    config
}

fn assert_probes(label: &str, c: &Value, listen: std::net::SocketAddr) {
    assert!(
        listen.ip().is_unspecified(),
        "{label}: {} listens on {listen}, unreachable by the kubelet",
        s(&c["name"])
    );
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &c[probe]["httpGet"];
        if probe == "startupProbe" && get.is_null() {
            continue;
        }
        assert_eq!(s(&get["path"]), path, "{label}: {probe} path");
        let port = container_port(c, s(&get["port"]));
        assert_eq!(
            port,
            listen.port(),
            "{label}: {probe} of {} targets port {port}, the binary listens on {listen}",
            s(&c["name"])
        );
    }
}

#[test]
fn chart_app_version_is_the_workspace_version() {
    // timbre-tests takes `version.workspace = true`: this is [workspace.package].version.
    let workspace = env!("CARGO_PKG_VERSION");
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(s(&chart["apiVersion"]), "v2");
    assert_eq!(
        s(&chart["appVersion"]),
        workspace,
        "bump appVersion in helm/timbre/Chart.yaml with the workspace version"
    );
}

#[test]
fn probes_hit_the_real_routes_on_the_ports_the_binaries_listen_on() {
    let Some(renders) = renders() else { return };
    for r in &renders {
        let processor = &r.one("Deployment", "processor")["spec"]["template"]["spec"];
        let c = container(processor, "processor");
        assert_eq!(argv(c), ["timbre", "run"], "{}", r.label);
        let config = load_config(r, processor, c);
        assert_probes(&r.label, c, config.listen);
        // Static group membership from the pod name (README, "Crash recovery").
        assert_eq!(
            s(
                &env_value(c, "TIMBRE__INSTANCE_ID").expect("TIMBRE__INSTANCE_ID is set")["valueFrom"]
                    ["fieldRef"]["fieldPath"]
            ),
            "metadata.name",
            "{}",
            r.label
        );
        // The weights are where the config says, on the volume the init
        // container fills (or baked into the image at that path).
        let model_dir = config.model_dir.clone().expect("model_dir is set");
        let mounted = seq(&c["volumeMounts"])
            .iter()
            .any(|m| s(&m["name"]) == "model" && Path::new(s(&m["mountPath"])) == model_dir);
        let volume = seq(&processor["volumes"])
            .iter()
            .any(|v| s(&v["name"]) == "model");
        assert_eq!(
            mounted, volume,
            "{}: model volume mounted at model_dir",
            r.label
        );
        if let Some(init) = containers(processor)
            .into_iter()
            .find(|c| s(&c["name"]) == "fetch-model")
        {
            assert_eq!(
                s(&env_value(init, "TIMBRE_MODEL_DIR").unwrap()["value"]),
                model_dir.to_str().unwrap(),
                "{}: fetch-model writes where the processor reads",
                r.label
            );
        }

        let Some(adapter) = r
            .all("Deployment")
            .find(|d| s(&d["metadata"]["name"]).ends_with("-adapter"))
        else {
            continue;
        };
        let pod = &adapter["spec"]["template"]["spec"];
        let c = container(pod, "adapter");
        assert_eq!(argv(c), ["timbre", "serve"], "{}", r.label);
        let config = load_config(r, pod, c);
        // Probes reach the operations listener; the API port is separate.
        assert_probes(&r.label, c, config.listen);
        assert_eq!(
            container_port(c, "http"),
            config.api.listen.port(),
            "{}: the http port is api.listen",
            r.label
        );
        assert_ne!(config.api.listen.port(), config.listen.port());
        assert!(!config.api.demo_keys, "{}: demo keys are off", r.label);
    }

    // Values reach the engine with their types (Helm reads every number as a float).
    let r = &renders[1];
    let processor = &r.one("Deployment", "processor")["spec"]["template"]["spec"];
    let config = load_config(r, processor, container(processor, "processor"));
    assert_eq!(config.workers, 2);
    assert_eq!(config.topic_prefix, "prod.");
    assert_eq!(config.audio.max_millis, 30_000);
    assert_eq!(config.policy.max_voiceprint_weight, 20.0);
    assert_eq!(config.tenants["acme"].accept_threshold, 0.55);
    assert_eq!(config.tenants["GlobexCorp"].free_failures, 5);
    // The processors load the re-scoring target, and the Job runs for one tenant.
    assert_eq!(config.extra_models.len(), 1);
    assert_eq!(config.extra_models[0].name, "campplus-next");
    let job = r
        .all("Job")
        .find(|d| s(&d["metadata"]["name"]).contains("-rescore-"))
        .expect("the rescore Job");
    let job = &job["spec"]["template"]["spec"];
    assert_eq!(
        argv(container(job, "rescore")),
        [
            "timbre",
            "rescore",
            "--to-model",
            "campplus-next@sha256:92f29b94e694",
            "--tenant",
            "acme"
        ]
    );
    let adapter = &r.one("Deployment", "adapter")["spec"]["template"]["spec"];
    let api = load_config(r, adapter, container(adapter, "adapter")).api;
    assert_eq!(
        (api.rate_limit_per_minute, api.wait_timeout_ms),
        (300, 8000)
    );
    assert!(api.console);
    assert_eq!(
        api.cors_origins,
        ["https://app.example.com", "https://portal.example.com:8443"]
    );
}

#[test]
fn the_upgrade_hook_runs_migrate_then_topics_apply() {
    let Some(helm) = helm() else { return };
    for values in VALUE_SETS {
        let r = render(&helm, values);
        let job = r.one("Job", "migrate");
        assert!(
            r.has_hook(job, "pre-install") && r.has_hook(job, "pre-upgrade"),
            "{}: the migrate Job is a pre-install and pre-upgrade hook",
            r.label
        );
        let pod = &job["spec"]["template"]["spec"];
        let steps: Vec<Vec<&str>> = containers(pod).into_iter().map(argv).collect();
        let topics_enabled = values != Some("model-image-values.yaml");
        if topics_enabled {
            // Init containers run one after the other, each to success, before the container.
            assert_eq!(seq(&pod["initContainers"]).len(), 1, "{}", r.label);
            assert_eq!(steps[0], ["timbre", "migrate"], "{}", r.label);
            assert_eq!(steps[1][..3], ["timbre", "topics", "apply"], "{}", r.label);
            assert_eq!(steps.len(), 2, "{}", r.label);
        } else {
            assert_eq!(steps, [["timbre", "migrate"]], "{}", r.label);
        }
        if values == Some("all-features-values.yaml") {
            assert_eq!(steps[1][3..], ["--replication", "3"]);
        }

        // Hooks run before the release's own resources exist: the Job's config
        // must be a hook created before it, and its ServiceAccount not the chart's.
        let weight = |d: &Value| -> i64 {
            s(&d["metadata"]["annotations"]["helm.sh/hook-weight"])
                .parse()
                .unwrap_or(0)
        };
        let volume = seq(&pod["volumes"])
            .iter()
            .find(|v| s(&v["name"]) == "config")
            .unwrap();
        let map = r
            .by_name("ConfigMap", s(&volume["configMap"]["name"]))
            .expect("hook config rendered");
        assert!(
            r.has_hook(map, "pre-install") && r.has_hook(map, "pre-upgrade"),
            "{}: the hook's ConfigMap exists before the release's resources",
            r.label
        );
        assert!(
            weight(map) < weight(job),
            "{}: config before the Job",
            r.label
        );
        let main = r.one("ConfigMap", "config");
        assert_eq!(
            map["data"], main["data"],
            "{}: the hook loads the same config",
            r.label
        );
        if let Some(sa) = pod["serviceAccountName"].as_str() {
            assert!(
                r.by_name("ServiceAccount", sa).is_none(),
                "{}: the hook cannot use a ServiceAccount made by the release",
                r.label
            );
        }
        let c = &seq(&pod["containers"])[0];
        load_config(&r, pod, c);
    }
}

#[test]
fn secrets_come_from_secret_key_refs_and_never_as_literals() {
    let Some(renders) = renders() else { return };
    for r in &renders {
        assert_eq!(
            r.all("Secret").count(),
            0,
            "{}: the chart makes no Secret",
            r.label
        );
        for (pod_id, pod) in r.pods() {
            for c in containers(pod) {
                for e in seq(&c["env"]) {
                    let name = s(&e["name"]);
                    let upper = name.to_uppercase();
                    let secret_like = SECRET_ENV.contains(&name)
                        || ["PASSWORD", "SECRET", "PEPPER", "SIGNING_KEY", "PRIVATE_KEY"]
                            .iter()
                            .any(|w| upper.contains(w));
                    if secret_like {
                        let key_ref = &e["valueFrom"]["secretKeyRef"];
                        assert!(
                            e["value"].is_null()
                                && !s(&key_ref["name"]).is_empty()
                                && !s(&key_ref["key"]).is_empty(),
                            "{}: {pod_id} {name} must come from a secretKeyRef",
                            r.label
                        );
                    }
                }
            }
        }
        for literal in ["password=", "secret=", "BEGIN ", "sasl.jaas"] {
            assert!(
                !r.text.contains(literal),
                "{}: `{literal}` in the rendered output",
                r.label
            );
        }
    }

    // With every credential configured, each timbre container gets exactly the
    // references it needs, and KEDA reads the same Secrets.
    let r = &renders[1];
    let secret_ref = |c: &Value, var: &str| -> (String, String) {
        let key_ref = &env_value(c, var).unwrap_or_else(|| panic!("{var} is set"))["valueFrom"]["secretKeyRef"];
        (s(&key_ref["name"]).into(), s(&key_ref["key"]).into())
    };
    let kafka = ("timbre".to_string(), "password".to_string());
    let cql = ("timbre-cql".to_string(), "password".to_string());
    for (pod_id, pod) in r.pods() {
        for c in containers(pod) {
            if argv(c)[0] != "timbre" {
                continue;
            }
            assert_eq!(
                secret_ref(c, "TIMBRE_KAFKA_SASL_PASSWORD"),
                kafka,
                "{pod_id}"
            );
            assert_eq!(secret_ref(c, "TIMBRE_CQL_PASSWORD"), cql, "{pod_id}");
            let serves = argv(c) == ["timbre", "serve"];
            for var in ["TIMBRE__API__TOKEN_SIGNING_KEY", "TIMBRE__API__KEY_PEPPER"] {
                assert_eq!(env_value(c, var).is_some(), serves, "{pod_id} {var}");
            }
            if serves {
                assert_eq!(
                    secret_ref(c, "TIMBRE__API__TOKEN_SIGNING_KEY").0,
                    "timbre-api"
                );
            }
            // File-based Kafka and CQL TLS options point into the mounted Secrets.
            let config = load_config(r, pod, c);
            for (volume, url, is_file) in [
                (
                    "kafka-tls",
                    &config.bus,
                    (|k: &str| k.ends_with(".location")) as fn(&str) -> bool,
                ),
                ("cql-tls", &config.store, |k: &str| k.starts_with("tls_")),
            ] {
                let mount = seq(&c["volumeMounts"])
                    .iter()
                    .find(|m| s(&m["name"]) == volume)
                    .unwrap_or_else(|| panic!("{pod_id}: {volume} mounted"));
                let query = url.split_once('?').map_or("", |(_, q)| q);
                let files: Vec<(&str, &str)> = query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(k, _)| is_file(k))
                    .collect();
                assert!(!files.is_empty(), "{pod_id}: {url} names {volume} files");
                for (key, path) in files {
                    assert!(
                        path.starts_with(s(&mount["mountPath"])),
                        "{pod_id}: {key}={path} is outside the mounted Secret"
                    );
                }
            }
        }
    }
    let auth = r.one("TriggerAuthentication", "kafka-lag");
    let refs: BTreeMap<&str, (&str, &str)> = seq(&auth["spec"]["secretTargetRef"])
        .iter()
        .map(|t| (s(&t["parameter"]), (s(&t["name"]), s(&t["key"]))))
        .collect();
    assert_eq!(refs["password"], ("timbre", "password"));
    assert_eq!(refs["ca"].0, "timbre-kafka-cluster-ca-cert");
    assert!(refs.contains_key("username"));
}

/// Millicores of a CPU quantity ("2", "1500m", "0.5").
fn millicores(q: &Value) -> u64 {
    let text = match q {
        Value::Number(n) => n.to_string(),
        other => s(other).to_string(),
    };
    match text.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => (text.parse::<f64>().unwrap() * 1000.0) as u64,
    }
}

#[test]
fn every_pod_runs_locked_down_with_resources() {
    let Some(renders) = renders() else { return };
    for r in &renders {
        for (pod_id, pod) in r.pods() {
            let ctx = &pod["securityContext"];
            assert_eq!(ctx["runAsNonRoot"].as_bool(), Some(true), "{pod_id}");
            assert_eq!(
                s(&ctx["seccompProfile"]["type"]),
                "RuntimeDefault",
                "{pod_id}"
            );
            assert_eq!(
                pod["automountServiceAccountToken"].as_bool(),
                Some(false),
                "{pod_id}: no API token mounted"
            );
            let volumes: BTreeSet<&str> =
                seq(&pod["volumes"]).iter().map(|v| s(&v["name"])).collect();
            for c in containers(pod) {
                let id = format!("{}: {pod_id} {}", r.label, s(&c["name"]));
                let ctx = &c["securityContext"];
                assert_eq!(ctx["runAsNonRoot"].as_bool(), Some(true), "{id}");
                assert_eq!(
                    ctx["allowPrivilegeEscalation"].as_bool(),
                    Some(false),
                    "{id}"
                );
                assert_eq!(ctx["readOnlyRootFilesystem"].as_bool(), Some(true), "{id}");
                assert_ne!(ctx["privileged"].as_bool(), Some(true), "{id}");
                assert!(
                    seq(&ctx["capabilities"]["drop"])
                        .iter()
                        .any(|d| s(d) == "ALL"),
                    "{id}: drops all capabilities"
                );
                let res = &c["resources"];
                for field in [
                    &res["requests"]["cpu"],
                    &res["requests"]["memory"],
                    &res["limits"]["memory"],
                ] {
                    assert!(!field.is_null(), "{id}: requests and a memory limit");
                }
                // A read-only root needs a writable /tmp (HOME, pip, mktemp).
                let mounts: Vec<(&str, &str)> = seq(&c["volumeMounts"])
                    .iter()
                    .map(|m| (s(&m["name"]), s(&m["mountPath"])))
                    .collect();
                assert!(mounts.contains(&("tmp", "/tmp")), "{id}: writable /tmp");
                for (name, _) in &mounts {
                    assert!(volumes.contains(name), "{id}: volume {name} is declared");
                }
            }
        }
        // One scoring worker per requested core (README, "Speed and memory").
        let processor = &r.one("Deployment", "processor")["spec"]["template"]["spec"];
        let c = container(processor, "processor");
        let workers = load_config(r, processor, c).workers as u64;
        assert!(
            millicores(&c["resources"]["requests"]["cpu"]) >= 1000 * workers,
            "{}: CPU request below {workers} workers",
            r.label
        );
    }
}

#[test]
fn services_budgets_and_monitors_select_the_right_pods() {
    let Some(renders) = renders() else { return };
    for r in &renders {
        let labels_of = |deployment: &str| -> BTreeMap<String, String> {
            let d = r.one("Deployment", deployment);
            serde_yaml_ng::from_value(d["spec"]["template"]["metadata"]["labels"].clone()).unwrap()
        };
        let selects = |selector: &Value, labels: &BTreeMap<String, String>| -> bool {
            let wanted: BTreeMap<String, String> =
                serde_yaml_ng::from_value(selector.clone()).unwrap_or_default();
            !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        for component in ["processor", "adapter"] {
            let Some(deployment) = r
                .all("Deployment")
                .find(|d| s(&d["metadata"]["name"]).ends_with(&format!("-{component}")))
            else {
                continue;
            };
            let labels = labels_of(component);
            let c = &seq(&deployment["spec"]["template"]["spec"]["containers"])[0];
            let service = r.one("Service", component);
            assert!(
                selects(&service["spec"]["selector"], &labels),
                "{}: Service {component}",
                r.label
            );
            for port in seq(&service["spec"]["ports"]) {
                container_port(c, s(&port["targetPort"]));
            }
            let pdb = r.one("PodDisruptionBudget", component);
            assert!(
                selects(&pdb["spec"]["selector"]["matchLabels"], &labels),
                "{}: PDB {component}",
                r.label
            );
            if let Some(monitor) = r
                .all("ServiceMonitor")
                .find(|m| s(&m["metadata"]["name"]).ends_with(&format!("-{component}")))
            {
                let service_labels: BTreeMap<String, String> =
                    serde_yaml_ng::from_value(service["metadata"]["labels"].clone()).unwrap();
                assert!(selects(
                    &monitor["spec"]["selector"]["matchLabels"],
                    &service_labels
                ));
                // Scraped on the ops port of a Service of this component,
                // never on the public one.
                let scraped: Vec<&Value> = r
                    .all("Service")
                    .filter(|svc| {
                        let svc_labels: BTreeMap<String, String> =
                            serde_yaml_ng::from_value(svc["metadata"]["labels"].clone())
                                .unwrap_or_default();
                        selects(&monitor["spec"]["selector"]["matchLabels"], &svc_labels)
                    })
                    .collect();
                for endpoint in seq(&monitor["spec"]["endpoints"]) {
                    assert_eq!(s(&endpoint["path"]), "/metrics");
                    assert_eq!(s(&endpoint["port"]), "ops", "{}: {component}", r.label);
                    assert!(
                        scraped.iter().any(|svc| seq(&svc["spec"]["ports"])
                            .iter()
                            .any(|p| s(&p["name"]) == "ops")),
                        "{}: a Service of {component} has the ops port",
                        r.label
                    );
                }
                assert!(
                    seq(&service["spec"]["ports"])
                        .iter()
                        .all(|p| s(&p["name"]) != "ops" || component == "processor"),
                    "{}: the public adapter Service has no ops port",
                    r.label
                );
            }
        }
        for hpa in r.all("HorizontalPodAutoscaler") {
            let target = s(&hpa["spec"]["scaleTargetRef"]["name"]);
            let d = r.by_name("Deployment", target).expect("HPA target exists");
            assert!(
                d["spec"]["replicas"].is_null(),
                "the HPA owns the replica count"
            );
        }
    }
}

#[test]
fn keda_scales_the_processor_on_the_lag_of_every_request_topic() {
    let Some(helm) = helm() else { return };
    let r = render(&helm, Some("all-features-values.yaml"));
    let deployment = r.one("Deployment", "processor");
    let pod = &deployment["spec"]["template"]["spec"];
    let config = load_config(&r, pod, container(pod, "processor"));
    assert_eq!(config.topic_prefix, "prod.");
    let scaled = r.one("ScaledObject", "processor");
    assert_eq!(
        s(&scaled["spec"]["scaleTargetRef"]["name"]),
        s(&deployment["metadata"]["name"])
    );
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "KEDA owns the replica count"
    );

    let expected: BTreeSet<String> = TopicNames::with_prefix(&config.topic_prefix)
        .requests()
        .into_iter()
        .collect();
    let brokers = config
        .bus
        .strip_prefix("kafka://")
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let mut topics = BTreeSet::new();
    for trigger in seq(&scaled["spec"]["triggers"]) {
        assert_eq!(s(&trigger["type"]), "kafka");
        let meta = &trigger["metadata"];
        for (k, v) in meta.as_mapping().unwrap() {
            assert!(v.is_string(), "KEDA metadata {k:?} must be a string");
        }
        assert_eq!(s(&meta["consumerGroup"]), config.group);
        assert_eq!(s(&meta["bootstrapServers"]), brokers);
        assert_eq!(s(&meta["offsetResetPolicy"]), "earliest");
        topics.insert(s(&meta["topic"]).to_string());
    }
    assert_eq!(topics, expected, "one trigger per request topic, prefixed");

    // More consumers than partitions would sit idle.
    let partitions = catalogue(&config.topic_prefix, None)
        .into_iter()
        .filter(|t| expected.contains(&t.name))
        .map(|t| t.partitions as u64)
        .min()
        .unwrap();
    let max = scaled["spec"]["maxReplicaCount"].as_u64().unwrap();
    assert!(
        max <= partitions,
        "maxReplicaCount {max} > {partitions} partitions"
    );
}

#[test]
fn bad_values_fail_at_install_time() {
    let Some(helm) = helm() else { return };
    for set in [
        "processor.workers=-1",
        "processor.workers=0",
        "config.bus=amqp://broker:5672",
        "config.bus=embedded://",
        "config.bus=kafka://b:9092?sasl.password=hunter2",
        "config.store=cql://app:hunter2@db:9042/timbre",
        "config.store=file://timbre-data/timbre.redb",
        "config.policy.accept_treshold=0.5",
        "secrets.cql.password=hunter2",
        "processor.extraEnv[0].name=DB_PASSWORD,processor.extraEnv[0].value=hunter2",
        "securityContext.readOnlyRootFilesystem=false",
        "podSecurityContext.runAsNonRoot=false",
        "model.volume=pvc",
        "rescore.enabled=true",
        "adapter.port=70000",
    ] {
        let out = template(&helm, None, &["--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(stderr.contains(SCHEMA_ERROR), "--set {set}: {stderr}");
    }
    // And good ones pass. (`--set` leaves fractions as strings, which the
    // schema refuses too: fractional values go through -f or --set-json.)
    let out = template(
        &helm,
        None,
        &[
            "--set",
            "processor.workers=4",
            "--set-json",
            r#"config.tenants={"acme":{"accept_threshold":0.6}}"#,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("workers = 4") && text.contains("accept_threshold = 0.6"));
}
