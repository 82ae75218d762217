//! The browser SDK and the console in a real headless Chromium whose
//! microphone plays real fixture recordings (Chromium's fake capture
//! device): an integrator's page enrolls and verifies a user with client
//! tokens, another voice is rejected, a page of a disallowed origin is
//! refused by CORS, and the console shows the user's decisions. Needs
//! `chromedriver` (`tests/tools/chromium.sh` installs it; the test command
//! sets `TIMBRE_CHROMEDRIVER`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use timbre_tests::api::{Deployment, deploy};
use timbre_tests::pipeline::{spoken_digits, wav};
use timbre_tests::webdriver::Browser;
use timbre_tests::{cql_nodes, kafka_url, required, scratch_dir, unique};

/// The FSDD speaker who enrolls (take 1) and answers (take 0).
const SPEAKER: &str = "jackson";
/// Another speaker (LibriSpeech), whose voice must not pass for his.
const IMPOSTOR: &str = "librispeech-r/test-other/1998/1998-15444-0000.wav";
/// What the enrolling speaker reads, one code per sample.
const ENROLL_CODES: [&str; 3] = ["0123456789", "9876543210", "1357924680"];

/// The integrator's page: loads the SDK from the API named in `?api=` and
/// runs one SDK call at a time, pausing at each prompt (a challenge, a
/// sample) until the test has put the answer in the microphone file.
const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>integrator</title></head>
<body><p>integrator page</p>
<script>
const api = new URLSearchParams(location.search).get("api");
const sdk = document.createElement("script");
sdk.src = api + "/sdk/timbre.js";
document.head.append(sdk);
window.state = {};
window.startFlow = function (kind, options) {
  const s = (window.state = { waiting: null, result: null, error: null, progress: [] });
  const pause = (info) =>
    new Promise((resolve) => {
      s.waiting = info;
      s.go = () => { s.waiting = null; resolve(); };
    });
  const opts = Object.assign({ baseUrl: api }, options, {
    onChallenge: (digits) => pause({ challenge: digits }),
    onSample: (n) => pause({ sample: n }),
    onProgress: (p) => s.progress.push(p),
  });
  Timbre[kind](opts).then(
    (r) => { s.result = r; },
    (e) => { s.error = { code: e.code, message: e.message, retryAfterMs: e.retryAfterMs ?? null }; }
  );
};
</script></body></html>"#;

/// Serves [`PAGE`] on a local port; returns its origin.
async fn page_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    PAGE.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(PAGE.as_bytes()).await;
            });
        }
    });
    origin
}

/// `wav` after 1.5 s of silence: the capture device starts playing when
/// the page opens the microphone, a moment before the first samples reach
/// the recorder (longer on a loaded machine).
fn after_silence(wav: &[u8]) -> Vec<u8> {
    let mut reader = hound::WavReader::new(wav).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.bits_per_sample),
        (1, 16),
        "mono 16-bit"
    );
    let lead = spec.sample_rate as usize * 3 / 2;
    let samples: Vec<i16> = std::iter::repeat_n(0, lead)
        .chain(reader.samples::<i16>().map(Result::unwrap))
        .collect();
    timbre::audio::encode_wav_pcm16(samples, spec.sample_rate)
}

/// Runs `Timbre[kind](options)` in the page; at each prompt writes what
/// `say` answers into the microphone file and lets the page go on. The
/// SDK's result, or its error.
async fn drive(
    browser: &Browser,
    microphone: &Path,
    kind: &str,
    options: Value,
    mut say: impl FnMut(&Value) -> Vec<u8>,
) -> Result<Value, Value> {
    browser
        .run(
            "startFlow(arguments[0], arguments[1]);",
            json!([kind, options]),
        )
        .await;
    loop {
        let s = browser
            .wait_for(
                "(state.waiting || state.result || state.error) && \
                 {waiting: state.waiting, result: state.result, error: state.error}",
                Duration::from_secs(180),
            )
            .await;
        if !s["result"].is_null() {
            return Ok(s["result"].clone());
        }
        if !s["error"].is_null() {
            return Err(s["error"].clone());
        }
        std::fs::write(microphone, after_silence(&say(&s["waiting"]))).unwrap();
        browser.run("state.go();", json!([])).await;
    }
}

async fn client_token(d: &Deployment, user: &str, scope: &str, ttl: u64) -> String {
    let (status, body) = d
        .api
        .post(
            &d.acme,
            "/v1/client-tokens",
            json!({"user_id": user, "scope": scope, "ttl_seconds": ttl}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["user_id"].as_str(), body["scope"].as_str()),
        (Some(user), Some(scope))
    );
    body["client_token"].as_str().unwrap().to_string()
}

/// Verifies `user` in the page, answering each challenge with what `say`
/// makes of its code; retries a phrase the recogniser misheard (about one
/// right code in twenty), at most three times.
async fn verify_in_page(
    d: &Deployment,
    browser: &Browser,
    microphone: &Path,
    user: &str,
    say: impl Fn(&str) -> Vec<u8>,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..3 {
        let token = client_token(d, user, "verify", 300).await;
        last = drive(
            browser,
            microphone,
            "verify",
            json!({"token": token, "seconds": 7}),
            |prompt| say(prompt["challenge"].as_str().expect("a challenge")),
        )
        .await
        .unwrap_or_else(|e| panic!("verify failed in the page: {e}"));
        if last["reason"] != "phrase_mismatch" {
            return last;
        }
    }
    panic!("three right answers misheard: {last}");
}

/// What client tokens may not do, over plain HTTP.
async fn client_token_limits(d: &Deployment, user: &str, origin: &str) {
    let api = &d.api;
    let verify = client_token(d, user, "verify", 60).await;
    let enroll = client_token(d, user, "enroll", 60).await;
    let (status, body) = api.get(&verify, &format!("/v1/users/{user}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("client_token_not_allowed")),
        "{body}"
    );
    let (status, body) = api
        .post(
            &verify,
            "/v1/client-tokens",
            json!({"user_id": user, "scope": "verify"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a client token mints none: {body}"
    );
    let (status, body) = api
        .post(&verify, "/start-auth", json!({"user_id": "someone-else"}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("user_not_allowed")),
        "{body}"
    );
    let (status, body) = api.post(&enroll, "/start-auth", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope")),
        "an enroll token starts no challenge: {body}"
    );
    let (status, body) = api
        .post(
            &d.acme,
            "/v1/client-tokens",
            json!({"user_id": user, "scope": "verify", "ttl_seconds": 601}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_ttl")),
        "{body}"
    );
    let (status, body) = api
        .post(
            &d.acme,
            "/v1/client-tokens",
            json!({"user_id": user, "scope": "profiles:read"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope")),
        "{body}"
    );
    // A page's idempotency keys are its own: it cannot take an id the
    // integrator will use (for another user, or another kind of job).
    let page_user = format!("{user}-page");
    let (status, body) = api
        .post(
            &d.acme,
            "/v1/consent",
            json!({"user_id": page_user, "granted": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = client_token(d, &page_user, "enroll", 60).await;
    let shared = format!("id-of-{user}");
    let audio = reqwest::multipart::Part::bytes(spoken_digits(SPEAKER, 1, ENROLL_CODES[0]))
        .file_name("a.wav")
        .mime_str("audio/wav")
        .unwrap();
    let (status, body) = api
        .send(
            api.http
                .post(format!("{}/enroll", api.base))
                .header("x-api-key", &page)
                .header("idempotency-key", &shared)
                .multipart(reqwest::multipart::Form::new().part("audio", audio)),
        )
        .await;
    // Decided (the first audio job of a deployment may outlast the wait:
    // then its decision is polled).
    if status == StatusCode::ACCEPTED {
        let poll = format!("/v1/decisions/{}", body["request_id"].as_str().unwrap());
        let mut decided = false;
        for _ in 0..600 {
            if api.get(&page, &poll).await.0 == StatusCode::OK {
                decided = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(decided, "no decision for the page's sample: {body}");
    } else {
        assert_eq!(
            status,
            StatusCode::OK,
            "the page's sample is decided: {body}"
        );
    }
    let (status, body) = api
        .send(
            api.http
                .post(format!("{}/v1/consent", api.base))
                .header("x-api-key", &d.acme)
                .header("idempotency-key", &shared)
                .json(&json!({"user_id": user, "granted": true})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the integrator's id is free: {body}"
    );

    // Preflights: answered without credentials, for listed origins only.
    let preflight = |from: &str| {
        api.http
            .request(reqwest::Method::OPTIONS, format!("{}/start-auth", api.base))
            .header("origin", from)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight(origin).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], origin);
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(h.get("access-control-allow-credentials").is_none());
    let refused = preflight("http://elsewhere.example").await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

/// What a client token's holder reads of its user's decisions: its own
/// kind of job only, without scores or thresholds; and an enrolled user
/// takes no more samples from a page.
async fn client_reads(d: &Deployment, user: &str, verification: &str) {
    let path = format!("/v1/decisions/{verification}");
    let verify = client_token(d, user, "verify", 60).await;
    let (status, seen) = d.api.get(&verify, &path).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["decision"], "accept", "{seen}");
    for hidden in ["score", "thresholds", "confidence"] {
        assert!(seen.get(hidden).is_none(), "{hidden}: {seen}");
    }
    assert!(seen["signals"].get("phrase_score").is_none(), "{seen}");
    let (status, full) = d.api.get(&d.acme, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(full["thresholds"].is_object(), "a key reads it all: {full}");
    let enroll = client_token(d, user, "enroll", 60).await;
    let (status, _) = d.api.get(&enroll, &path).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an enroll token reads no verification"
    );
    let (status, body) = d
        .api
        .upload(
            &enroll,
            "/enroll",
            &[],
            spoken_digits(SPEAKER, 1, ENROLL_CODES[0]),
            "audio/wav",
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("already_enrolled")),
        "{body}"
    );
}

/// Where screenshots of the console are kept after the run.
fn artefacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The whole browser flow against deployment `d`, whose CORS list holds
/// `allowed` and not `disallowed` (both serve [`PAGE`]).
async fn flow(d: &Deployment, chromedriver: &str, allowed: &str, disallowed: &str, name: &str) {
    let api = &d.api;
    let user = unique("web");
    for (path, body) in [
        ("/create-profile", json!({"user_id": user})),
        ("/v1/consent", json!({"user_id": user, "granted": true})),
    ] {
        let (status, reply) = api.post(&d.acme, path, body).await;
        assert!(status.is_success(), "{path}: {reply}");
    }
    client_token_limits(d, &user, allowed).await;

    let microphone = scratch_dir("microphone").join("microphone.wav");
    std::fs::write(&microphone, after_silence(&spoken_digits(SPEAKER, 1, "0"))).unwrap();
    let browser = Browser::launch(chromedriver, Some(&microphone)).await;
    let page = format!("{allowed}/?api={}", api.base);
    browser.goto(&page).await;
    browser
        .wait_for("window.Timbre", Duration::from_secs(20))
        .await;

    // Enrollment through the SDK: one recording per sample until enrolled.
    let token = client_token(d, &user, "enroll", 600).await;
    let enrolled = drive(
        &browser,
        &microphone,
        "enroll",
        json!({"token": token, "seconds": 10, "maxSamples": 3, "pollTimeoutMs": 150_000}),
        |prompt| {
            let n = prompt["sample"].as_u64().expect("a sample number") as usize;
            spoken_digits(SPEAKER, 1, ENROLL_CODES[n - 1])
        },
    )
    .await
    .unwrap_or_else(|e| panic!("enroll failed in the page: {e}"));
    assert_eq!(enrolled["status"], "ENROLLED", "{enrolled}");

    // The enrolled speaker gets a voice token the backend accepts once.
    let accepted = verify_in_page(d, &browser, &microphone, &user, |code| {
        spoken_digits(SPEAKER, 0, code)
    })
    .await;
    assert_eq!(accepted["decision"], "accept", "{accepted}");
    assert_eq!(accepted["signals"]["voice"], "high", "{accepted}");
    // The challenge is random: the weakest of its six spoken digits sets the
    // phrase tier, and some codes hold a digit Whisper hears with less
    // confidence through the browser's capture; a passed phrase is high or
    // medium.
    assert!(
        ["high", "medium"].contains(&accepted["signals"]["phrase"].as_str().unwrap_or_default()),
        "{accepted}"
    );
    assert!(
        accepted["signals"].get("phrase_score").is_none(),
        "a page sees tiers, not scores: {accepted}"
    );
    client_reads(d, &user, accepted["requestId"].as_str().unwrap()).await;
    let voice_token = accepted["voiceToken"].as_str().expect("a voice token");
    let (_, checked) = api
        .post(&d.acme, "/verify-token", json!({"token": voice_token}))
        .await;
    assert_eq!(
        (checked["valid"].as_bool(), checked["user_id"].as_str()),
        (Some(true), Some(user.as_str())),
        "{checked}"
    );

    // Another voice gets no token.
    let rejected = verify_in_page(d, &browser, &microphone, &user, |_| wav(IMPOSTOR)).await;
    assert_eq!(
        (rejected["decision"].as_str(), rejected["reason"].as_str()),
        (Some("reject"), Some("voice_mismatch")),
        "{rejected}"
    );
    assert!(rejected["voiceToken"].is_null(), "{rejected}");

    // An expired client token is named as such.
    let stale = client_token(d, &user, "verify", 1).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let expired = drive(
        &browser,
        &microphone,
        "verify",
        json!({"token": stale}),
        |_| unreachable!("no challenge on an expired token"),
    )
    .await;
    assert_eq!(expired.unwrap_err()["code"], "token_expired");

    // A page of an origin not on the list cannot reach the API.
    browser
        .goto(&format!("{disallowed}/?api={}", api.base))
        .await;
    browser
        .wait_for("window.Timbre", Duration::from_secs(20))
        .await;
    let token = client_token(d, &user, "verify", 60).await;
    let refused = drive(
        &browser,
        &microphone,
        "verify",
        json!({"token": token}),
        |_| unreachable!("no challenge across a refused origin"),
    )
    .await;
    assert_eq!(refused.unwrap_err()["code"], "network_error");

    // The console shows the user's decisions, newest first.
    browser.goto(&format!("{}/console", api.base)).await;
    let key_field = browser.find("#api-key").await;
    browser.type_into(&key_field, &d.acme).await;
    browser
        .click(&browser.find("#sign-in-form button").await)
        .await;
    browser
        .wait_for(
            "!document.getElementById('workspace').hidden",
            Duration::from_secs(20),
        )
        .await;
    let user_field = browser.find("#user-id").await;
    browser.type_into(&user_field, &user).await;
    browser
        .click(&browser.find("#user-form button[type=submit]").await)
        .await;
    let shown = browser
        .wait_for(
            "document.querySelectorAll('#decision-rows tr[data-decision]').length >= 4 && \
             Array.from(document.querySelectorAll('#decision-rows tr[data-decision]'), \
               (tr) => tr.dataset.decision)",
            Duration::from_secs(20),
        )
        .await;
    let shown: Vec<&str> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        shown.contains(&"accept") && shown.contains(&"reject"),
        "{shown:?}"
    );
    // Newest first: the impostor's reject comes before the accept.
    let reject_at = shown.iter().position(|d| *d == "reject").unwrap();
    let accept_at = shown.iter().position(|d| *d == "accept").unwrap();
    assert!(reject_at < accept_at, "{shown:?}");
    let facts = browser
        .run(
            "return document.getElementById('user-facts').textContent;",
            json!([]),
        )
        .await;
    assert!(facts.as_str().unwrap().contains("ENROLLED"), "{facts}");
    console_try_it(&browser, &microphone).await;
    let png = browser.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::write(artefacts().join(format!("console-{name}.png")), png).unwrap();
    browser.quit().await;

    // A user who refuses the microphone gets a clear error, not a stall.
    let denied = Browser::launch(chromedriver, None).await;
    denied.goto(&page).await;
    denied
        .wait_for("window.Timbre", Duration::from_secs(20))
        .await;
    let token = client_token(d, &user, "verify", 60).await;
    let refused = drive(
        &denied,
        &microphone,
        "verify",
        json!({"token": token}),
        |_| spoken_digits(SPEAKER, 0, "1"),
    )
    .await;
    assert_eq!(refused.unwrap_err()["code"], "microphone_denied");
    denied.quit().await;
}

/// The console's "try it" panel verifies the signed-in user's voice through
/// the SDK: the operator presses Start recording once the digits show.
async fn console_try_it(browser: &Browser, microphone: &Path) {
    let mut misheard = Vec::new();
    for _ in 0..3 {
        browser.click(&browser.find("#try-verify").await).await;
        let code = browser
            .wait_for(
                "!document.getElementById('try-record').hidden && \
                 document.getElementById('challenge').textContent",
                Duration::from_secs(20),
            )
            .await;
        let code = code.as_str().unwrap().to_string();
        std::fs::write(microphone, after_silence(&spoken_digits(SPEAKER, 0, &code))).unwrap();
        browser.click(&browser.find("#try-record").await).await;
        let outcome = browser
            .wait_for(
                "(document.getElementById('try-result').dataset.decision || \
                  document.getElementById('try-result').dataset.error) && \
                 [document.getElementById('try-result').dataset.decision, \
                  document.getElementById('try-result').dataset.reason, \
                  document.getElementById('try-result').textContent]",
                Duration::from_secs(120),
            )
            .await;
        if outcome[1] == "phrase_mismatch" {
            misheard.push((code, outcome));
            continue;
        }
        assert_eq!(outcome[0], "accept", "{outcome}");
        // The decisions table follows with the new accept on top.
        browser
            .wait_for(
                "document.querySelector('#decision-rows tr[data-decision]') && \
                 document.querySelectorAll('#decision-rows tr[data-decision]').length >= 6 && \
                 document.querySelector('#decision-rows tr[data-decision]').dataset.decision == 'accept'",
                Duration::from_secs(20),
            )
            .await;
        return;
    }
    panic!("three right answers misheard in the console: {misheard:?}");
}

fn settings(allowed: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TIMBRE__POLICY__ENROLLMENT_TARGET_MILLIS", "4000".into()),
        // Misheard phrases count as failures; this test is not about the
        // cooldown.
        ("TIMBRE__POLICY__FREE_FAILURES", "20".into()),
        ("TIMBRE__API__CORS_ORIGINS", format!("[\"{allowed}\"]")),
    ]
}

fn chromedriver() -> Option<String> {
    required(
        "TIMBRE_CHROMEDRIVER",
        "chromedriver (headless Chromium)",
        "export TIMBRE_CHROMEDRIVER=$(tests/tools/chromium.sh)",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sdk_and_console_on_the_embedded_backend() {
    let Some(driver) = chromedriver() else {
        return;
    };
    let (allowed, disallowed) = (page_server().await, page_server().await);
    let store = format!(
        "file://{}",
        scratch_dir("browser").join("timbre.redb").display()
    );
    let d = deploy("embedded://", &store, settings(&allowed)).await;
    flow(&d, &driver, &allowed, &disallowed, "embedded").await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sdk_and_console_on_kafka_and_cassandra() {
    let (Some(kafka), Some(cql), Some(driver)) = (kafka_url(), cql_nodes(), chromedriver()) else {
        return;
    };
    let (allowed, disallowed) = (page_server().await, page_server().await);
    let d = deploy(
        &kafka,
        &format!("cql://{cql}/{}", unique("browser")),
        settings(&allowed),
    )
    .await;
    flow(&d, &driver, &allowed, &disallowed, "kafka-cassandra").await;
    d.stop().await;
}
