//! The HTTP API end to end over real HTTP, on the embedded default and on
//! real Kafka + Cassandra: real recordings, real model, real decisions.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use timbre_tests::api::{Api, Deployment, client_credentials, deploy, replica};
use timbre_tests::pipeline::{replayed, wav};
use timbre_tests::{cql_nodes, kafka_url, scratch_dir, unique};

use crate::{dialect_standalone, dialects};

const ALICE_ENROLL: &str = "librispeech-r/test-other/1688/1688-142285-0000.wav";
const ALICE_VERIFY: &str = "librispeech-r/test-other/1688/1688-142285-0005.wav";
const IMPOSTOR: &str = "librispeech-r/test-other/1998/1998-15444-0000.wav";
const RATE_LIMIT: usize = 40;

fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("TIMBRE__POLICY__ENROLLMENT_TARGET_MILLIS", "4000".into()),
        ("TIMBRE__POLICY__FREE_FAILURES", "2".into()),
        ("TIMBRE__POLICY__BASE_COOLDOWN_MILLIS", "2000".into()),
        ("TIMBRE__API__RATE_LIMIT_PER_MINUTE", RATE_LIMIT.to_string()),
        (
            "TIMBRE__API__MAX_UPLOAD_BYTES",
            (4 * 1024 * 1024).to_string(),
        ),
        (
            "TIMBRE__API__MAX_IN_FLIGHT_BYTES",
            (6 * 1024 * 1024).to_string(),
        ),
    ]
}

/// Requests past the per-key limit get 429 with a retry hint, and the key
/// recovers in the next window; other keys are unaffected. With several
/// replicas (`apis`, taking turns) the limit is the key's, not a
/// replica's: the request past it is refused whichever replica gets it.
async fn rate_limit(apis: &[&Api], key: &str, other: &str) {
    let api = apis[0];
    // The limiter counts in wall-clock minutes: a burst that straddles a
    // minute's end is two half bursts. Start early in a minute (a burst
    // takes a few seconds on Kafka + Cassandra).
    let into_minute = timbre::domain::now_ms().rem_euclid(60_000);
    if into_minute > 30_000 {
        tokio::time::sleep(Duration::from_millis((60_000 - into_minute) as u64 + 100)).await;
    }
    for i in 0..RATE_LIMIT {
        let (status, body) = apis[i % apis.len()].get(key, "/v1/usage").await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
    }
    let mut refusals = Vec::new();
    for replica in apis {
        let (status, body) = replica.get(key, "/v1/usage").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        refusals.push(body);
    }
    let body = refusals.pop().expect("the limit is enforced");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["scope"], "minute");
    let wait = body["retryAfterMs"].as_u64().unwrap();
    assert!(wait <= 60_000, "{body}");
    assert_eq!(api.get(other, "/v1/usage").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(wait + 200)).await;
    let (status, usage) = api.get(key, "/v1/usage").await;
    assert_eq!(status, StatusCode::OK, "recovered in the next window");
    assert!(
        usage["totals"]["throttled"].as_i64().unwrap() >= 1,
        "{usage}"
    );
}

/// Announces a body over the limit and reads the answer without sending it:
/// the server must refuse from the headers alone (a client streaming the
/// body would race the early close).
async fn announce_oversized_upload(api: &Api, key: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /enroll HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {key}\r\nconnection: close\r\n\
         content-type: multipart/form-data; boundary=b\r\ncontent-length: {}\r\n\r\n",
        5 * 1024 * 1024
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
    )
}

/// The whole flow of an integrator.
async fn flow(d: &Deployment) {
    let (api, acme, globex) = (&d.api, d.acme.as_str(), d.globex.as_str());
    let user = unique("alice");

    let (status, body) = api
        .post("tmb_nope", "/create-profile", json!({"user_id": user}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );

    let (status, body) = api
        .post(acme, "/create-profile", json!({"user_id": user}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["created"].as_bool(), body["status"].as_str()),
        (Some(true), Some("NOT_ENROLLED"))
    );
    let (_, again) = api
        .post(acme, "/create-profile", json!({"user_id": user}))
        .await;
    assert_eq!(again["created"], false, "idempotent: {again}");

    // An Idempotency-Key replays its own job, and is refused for another.
    let keyed = |user_id: &str| {
        api.http
            .post(format!("{}/create-profile", api.base))
            .header("x-api-key", acme)
            .header("idempotency-key", format!("key-of-{user}"))
            .json(&json!({"user_id": user_id}))
    };
    let (status, first) = api.send(keyed(&user)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, replay) = api.send(keyed(&user)).await;
    assert_eq!(
        (status, &replay["request_id"]),
        (StatusCode::OK, &first["request_id"])
    );
    let (status, body) = api.send(keyed(&unique("mallory"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("request_id_conflict")),
        "{body}"
    );

    let fields = [("user_id", user.as_str())];
    let (status, body) = api
        .upload(acme, "/enroll", &fields, wav(ALICE_ENROLL), "audio/wav")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("consent_required")),
        "{body}"
    );
    let (status, body) = api
        .post(
            acme,
            "/v1/consent",
            json!({"user_id": user, "granted": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // One key, one job: the same user with another body is refused too
    // (here a withdrawal sent under the key of a grant), and the grant stands.
    let consent_keyed = |granted: bool| {
        api.http
            .post(format!("{}/v1/consent", api.base))
            .header("x-api-key", acme)
            .header("idempotency-key", format!("consent-of-{user}"))
            .json(&json!({"user_id": user, "granted": granted}))
    };
    let (status, body) = api.send(consent_keyed(true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.send(consent_keyed(false)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("request_id_conflict")),
        "{body}"
    );

    let text = b"this is not audio".to_vec();
    let (status, body) = api
        .upload(acme, "/enroll", &fields, text.clone(), "text/plain")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );
    let (status, body) = api
        .upload(acme, "/enroll", &fields, text, "application/octet-stream")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("not_wav"))
    );
    let (status, body) = announce_oversized_upload(api, acme).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );

    let (status, body) = api
        .upload(acme, "/enroll", &fields, wav(ALICE_ENROLL), "audio/wav")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ENROLLED", "{body}");
    assert!(body["speech_millis"].as_i64().unwrap() > 4_000);

    let (status, genuine) = api
        .upload(
            acme,
            "/v1/voice/verify",
            &fields,
            wav(ALICE_VERIFY),
            "audio/wav",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{genuine}");
    assert_eq!(genuine["decision"], "accept", "{genuine}");
    assert_eq!(genuine["signals"]["voice"], "high");
    // Replay detection is off in API tests (their fixtures repeat).
    assert_eq!(genuine["signals"]["liveness"], "not_checked");
    assert!(genuine["confidence"].is_number(), "{genuine}");
    assert!(
        genuine.get("score").is_none(),
        "no raw score unless the tenant exposes it: {genuine}"
    );
    assert_eq!(genuine["retries"], 2);
    assert!(genuine["model"].as_str().unwrap().starts_with("campplus"));
    let (status, impostor) = api
        .upload(
            acme,
            "/v1/voice/verify",
            &fields,
            wav(IMPOSTOR),
            "audio/wav",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{impostor}");
    assert_eq!(impostor["decision"], "reject", "{impostor}");
    assert_eq!(impostor["retries"], 1, "{impostor}");

    // Tenants are isolated: globex cannot see or use acme's user or decisions.
    let (status, body) = api
        .upload(
            globex,
            "/v1/voice/verify",
            &fields,
            wav(ALICE_VERIFY),
            "audio/wav",
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("profile_not_found")),
        "{body}"
    );
    assert_eq!(
        api.get(globex, &format!("/v1/user-learning/{user}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let accepted_id = genuine["request_id"].as_str().unwrap();
    assert_eq!(
        api.get(globex, &format!("/v1/decisions/{accepted_id}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, stored) = api.get(acme, &format!("/v1/decisions/{accepted_id}")).await;
    assert_eq!(
        (status, stored["decision"].as_str()),
        (StatusCode::OK, Some("accept")),
        "{stored}"
    );

    // A challenge answered without its code: a retry for the phrase, no
    // token, and the session is spent (the right code and the token are
    // in `phrase_check`).
    let (status, challenge) = api
        .post(acme, "/start-auth", json!({"user_id": user}))
        .await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    assert_eq!(
        challenge["challenge"].as_str().unwrap().split(' ').count(),
        6
    );
    let session = challenge["session_id"].as_str().unwrap();
    let session_fields = [("user_id", user.as_str()), ("session_id", session)];
    let (status, unsaid) = api
        .upload(
            acme,
            "/verify-voice",
            &session_fields,
            wav(ALICE_VERIFY),
            "audio/wav",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{unsaid}");
    assert_eq!(
        (unsaid["decision"].as_str(), unsaid["code"].as_str()),
        (Some("retry"), Some("phrase_mismatch")),
        "{unsaid}"
    );
    assert!(unsaid.get("voiceToken").is_none(), "{unsaid}");
    let (status, body) = api
        .upload(
            acme,
            "/verify-voice",
            &session_fields,
            wav(ALICE_VERIFY),
            "audio/wav",
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("session_invalid")),
        "sessions are single use"
    );
    // That failure was the second in a row (after the impostor above): let
    // its cooldown pass.
    let wait = unsaid["retryAfterMs"].as_u64().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait + 100)).await;

    // A challenge answered by another voice fails without a token.
    let (_, challenge) = api
        .post(acme, "/start-auth", json!({"user_id": user}))
        .await;
    let session_fields = [
        ("user_id", user.as_str()),
        ("session_id", challenge["session_id"].as_str().unwrap()),
    ];
    let (_, lost) = api
        .upload(
            acme,
            "/verify-voice",
            &session_fields,
            wav(IMPOSTOR),
            "audio/wav",
        )
        .await;
    assert_eq!(
        (lost["success"].as_bool(), lost["code"].as_str()),
        (Some(false), Some("voice_mismatch")),
        "{lost}"
    );
    assert!(lost.get("voiceToken").is_none());

    // Repeated failures lead to a cooldown, which ends.
    let mut cooldown = None;
    for _ in 0..4 {
        let (status, body) = api
            .upload(
                acme,
                "/v1/voice/verify",
                &fields,
                wav(IMPOSTOR),
                "audio/wav",
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["decision"] == "cooldown" {
            cooldown = Some(body);
            break;
        }
        assert_eq!(body["decision"], "reject", "{body}");
    }
    let cooldown = cooldown.expect("a cooldown after repeated failures");
    assert_eq!(cooldown["reason"], "cooldown");
    let wait = cooldown["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!(wait > 0 && wait <= 2_000 * 4, "{cooldown}");
    let (_, still) = api
        .upload(
            acme,
            "/v1/voice/verify",
            &fields,
            wav(ALICE_VERIFY),
            "audio/wav",
        )
        .await;
    assert_eq!(
        still["decision"], "cooldown",
        "even the genuine voice waits: {still}"
    );
    tokio::time::sleep(Duration::from_millis(
        still["retryAfterMs"].as_u64().unwrap() + 100,
    ))
    .await;
    let (_, recovered) = api
        .upload(
            acme,
            "/v1/voice/verify",
            &fields,
            wav(ALICE_VERIFY),
            "audio/wav",
        )
        .await;
    assert_eq!(recovered["decision"], "accept", "{recovered}");

    let (status, learning) = api.get(acme, &format!("/v1/user-learning/{user}")).await;
    assert_eq!(status, StatusCode::OK, "{learning}");
    assert_eq!(
        (learning["status"].as_str(), learning["samples"].as_i64()),
        (Some("ENROLLED"), Some(1))
    );
    assert!(
        learning["sessions"].as_i64().unwrap() >= 2,
        "accepts refine: {learning}"
    );
    assert!(
        learning["learning_progress"].as_f64().unwrap() > 0.5,
        "{learning}"
    );

    let (_, usage) = api.get(acme, "/v1/usage").await;
    let totals = &usage["totals"];
    assert!(
        totals["decisions"]["accept"].as_i64().unwrap() >= 2,
        "{usage}"
    );
    assert!(
        totals["decisions"]["reject"].as_i64().unwrap() >= 1,
        "{usage}"
    );
    assert!(
        totals["reasons"]["voice_mismatch"].as_i64().unwrap() >= 1,
        "{usage}"
    );
    assert!(
        totals["reasons"]["cooldown"].as_i64().unwrap() >= 2,
        "{usage}"
    );
    assert_eq!(usage["by_day"].as_array().unwrap().len(), 1);
    let (_, globex_usage) = api.get(globex, "/v1/usage").await;
    assert!(
        globex_usage["totals"]["decisions"].get("accept").is_none(),
        "usage is per key: {globex_usage}"
    );
}

/// Readiness and metrics answer on the operations listener, unauthenticated,
/// and not at all on the public API port.
async fn ops_listener_only(api: &Api, ops: &Api) {
    for path in ["/readyz", "/metrics"] {
        let (status, body) = api.get("", path).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path} on the api port"
        );
    }
    let (status, body) = ops.get("", "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, Some("ready")));
    let (status, metrics) = ops.get("", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("timbre_api_requests_total"),
        "the api's metrics are served by the operations listener"
    );
}

/// Request bodies in flight are bounded by bytes (6 MiB here): while one
/// client holds 3.5 MiB announced (and trickles it), another 3.5 MiB request
/// is answered `503 server_busy` with `Retry-After` from its headers alone,
/// and once the first is gone the same request gets through to the handler.
async fn body_bytes_in_flight_are_bounded(api: &Api, key: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.base.trim_start_matches("http://").to_string();
    let announce = |len: usize| {
        format!(
            "POST /enroll HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {key}\r\ncontent-type: multipart/form-data; boundary=x\r\ncontent-length: {len}\r\n\r\n"
        )
    };
    let status_of = |addr: String, head: String, body: Vec<u8>| async move {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        // The server may answer from the headers and close: a refused
        // write is part of that answer.
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.write_all(&body)).await;
        let mut reply = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut reply))
            .await
            .expect("an answer from the headers alone")
            .unwrap();
        String::from_utf8_lossy(&reply[..n]).to_string()
    };
    let size = 7 << 19;
    let mut holder = tokio::net::TcpStream::connect(&addr).await.unwrap();
    holder
        .write_all(format!("{}--x\r\n", announce(size)).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = status_of(addr.clone(), announce(size), Vec::new()).await;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(busy.to_lowercase().contains("retry-after: 1"), "{busy}");
    assert!(busy.contains("server_busy"), "{busy}");
    drop(holder);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let through = status_of(addr.clone(), announce(size), vec![b'-'; size]).await;
    assert!(
        !through.starts_with("HTTP/1.1 503"),
        "the bytes are released with the first request: {through}"
    );
}

/// Operations routes, the OpenAPI document against the router, and JSON errors.
async fn operations(d: &Deployment) {
    let api = &d.api;
    ops_listener_only(api, &d.ops).await;
    body_bytes_in_flight_are_bounded(api, &d.globex).await;
    let (_, doc) = api.get("", "/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 44, "every route is documented");
    for (path, ops) in paths {
        let concrete = path
            .replace("{user_id}", "u")
            .replace("{request_id}", "r")
            .replace("{key_id}", "k");
        for method in ["GET", "POST", "PUT", "DELETE"] {
            let req = api
                .http
                .request(method.parse().unwrap(), format!("{}{concrete}", api.base));
            let (status, body) = api.send(req).await;
            let documented = ops.get(method.to_lowercase()).is_some();
            assert_ne!(body["error"], "not_found", "{method} {path} is routed");
            if documented {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is not routed"
                );
                assert_eq!(body["error"], "method_not_allowed");
            }
        }
    }
    let (status, body) = api.get("", "/no/such/route").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

/// Keys carry scopes and a lifecycle: a consent-reading key reads consent
/// and is refused writes and key administration with the scope named; a
/// listing shows no secret; a disabled or revoked key is refused at once
/// on every replica (`others`); another tenant's key cannot touch it.
async fn key_lifecycle(d: &Deployment, others: &[&Api]) {
    let admin = d.hooli_admin.as_str();
    let user = unique("ivr-user");
    for bad in [json!({"scopes": []}), json!({"scopes": ["root"]})] {
        let (status, body) = d.api.post(admin, "/v1/keys", bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_scope")),
            "{body}"
        );
    }
    let (status, created) = d
        .api
        .post(
            admin,
            "/v1/keys",
            json!({"scopes": ["consent:read"], "name": "ivr"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["scopes"], json!(["consent:read"]));
    let ivr = created["api_key"].as_str().unwrap().to_string();
    let key_id = created["key_id"].as_str().unwrap().to_string();

    let (status, consent) = d.api.get(&ivr, &format!("/v1/consent/{user}")).await;
    assert_eq!(
        (status, consent["status"].as_str()),
        (StatusCode::OK, Some("NOT_ASKED")),
        "{consent}"
    );
    for (status, body, scope) in [
        {
            let (s, b) = d
                .api
                .post(
                    &ivr,
                    "/v1/consent",
                    json!({"user_id": user, "granted": true}),
                )
                .await;
            (s, b, "consent:write")
        },
        {
            let (s, b) = d.api.get(&ivr, "/v1/keys").await;
            (s, b, "keys:admin")
        },
    ] {
        assert_eq!(
            (status, body["error"].as_str(), body["scope"].as_str()),
            (
                StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
                Some(scope)
            ),
            "{body}"
        );
    }

    let (status, listing) = d.api.get(admin, "/v1/keys").await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let listed = listing["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id.as_str())
        .unwrap_or_else(|| panic!("{key_id} listed: {listing}"));
    assert_eq!(listed["enabled"], true);
    let secret = ivr.rsplit('_').next().unwrap();
    assert!(
        !listing.to_string().contains(secret) && listed.get("secret_hash").is_none(),
        "a listing shows no secret: {listing}"
    );

    // Another tenant cannot see or change the key.
    let (status, _) = d
        .api
        .post(&d.globex, &format!("/v1/keys/{key_id}/disable"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let consent_path = format!("/v1/consent/{user}");
    let answers = |key: String| {
        let path = consent_path.clone();
        async move {
            let mut statuses = vec![d.api.get(&key, &path).await.0];
            for api in others {
                statuses.push(api.get(&key, &path).await.0);
            }
            statuses
        }
    };
    let (status, _) = d
        .api
        .post(admin, &format!("/v1/keys/{key_id}/disable"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        answers(ivr.clone())
            .await
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "a disabled key is refused by every replica"
    );
    d.api
        .post(admin, &format!("/v1/keys/{key_id}/enable"), json!({}))
        .await;
    assert!(
        answers(ivr.clone())
            .await
            .iter()
            .all(|s| *s == StatusCode::OK)
    );
    let (status, _) = d.api.delete(admin, &format!("/v1/keys/{key_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        answers(ivr.clone())
            .await
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "a revoked key is refused by every replica"
    );
    let (status, body) = d.api.delete(admin, &format!("/v1/keys/{key_id}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("key_not_found"))
    );
}

/// User state and administration over HTTP: the admin routes need
/// `profiles:admin`; greylisting a user makes their voice rejected under
/// another identity; opt-out withdraws consent; deletion leaves no trace
/// the API can read.
async fn user_administration(d: &Deployment) {
    let all = [
        "consent:read",
        "consent:write",
        "enroll",
        "verify",
        "profiles:read",
        "profiles:admin",
    ];
    let mut keys = Vec::new();
    for scopes in [&all[..], &all[..5]] {
        let (status, created) = d
            .api
            .post(&d.hooli_admin, "/v1/keys", json!({"scopes": scopes}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        keys.push(created["api_key"].as_str().unwrap().to_string());
    }
    let (admin, reader) = (keys[0].as_str(), keys[1].as_str());
    let (listed, claimed, leaving) = (unique("listed"), unique("claimed"), unique("leaving"));
    for (user, clip) in [
        (&listed, ALICE_ENROLL),
        (&claimed, IMPOSTOR),
        (&leaving, IMPOSTOR),
    ] {
        d.api
            .post(
                admin,
                "/v1/consent",
                json!({"user_id": user, "granted": true}),
            )
            .await;
        let fields = [("user_id", user.as_str())];
        let (_, enrolled) = d
            .api
            .upload(admin, "/enroll", &fields, wav(clip), "audio/wav")
            .await;
        assert_eq!(enrolled["status"], "ENROLLED", "{enrolled}");
    }
    let (status, state) = d.api.get(reader, &format!("/v1/users/{listed}")).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(
        (state["status"].as_str(), state["is_greylisted"].as_bool()),
        (Some("ENROLLED"), Some(false)),
        "{state}"
    );
    assert!(state["opted_in_at"].is_string(), "{state}");

    let greylist = format!("/v1/users/{listed}/greylist");
    let put = |key: &str| {
        d.api
            .http
            .put(format!("{}{greylist}", d.api.base))
            .header("x-api-key", key.to_string())
    };
    let (status, body) = d.api.send(put(reader)).await;
    assert_eq!(
        (status, body["scope"].as_str()),
        (StatusCode::FORBIDDEN, Some("profiles:admin")),
        "{body}"
    );
    let (status, body) = d.api.send(put(admin)).await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{body}"
    );
    let (_, state) = d.api.get(reader, &format!("/v1/users/{listed}")).await;
    assert_eq!(state["is_greylisted"], true, "{state}");
    // The listed voice claims another user's identity.
    let fields = [("user_id", claimed.as_str())];
    let (_, verdict) = d
        .api
        .upload(
            admin,
            "/v1/voice/verify",
            &fields,
            wav(ALICE_VERIFY),
            "audio/wav",
        )
        .await;
    assert_eq!(verdict["decision"], "reject", "{verdict}");
    assert!(verdict.to_string().contains("watchlist_match"), "{verdict}");

    let (status, body) = d
        .api
        .post(admin, &format!("/v1/users/{leaving}/opt-out"), json!({}))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("OPTED_OUT")),
        "{body}"
    );
    let (_, consent) = d.api.get(reader, &format!("/v1/consent/{leaving}")).await;
    assert_eq!(consent["status"], "WITHDRAWN", "{consent}");

    let model = verdict["model"].as_str().expect("model id").to_string();
    assert!(
        d.store
            .voiceprint("hooli", &listed, &model)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        !d.store
            .enrollment_audio("hooli", &listed)
            .await
            .unwrap()
            .is_empty()
    );
    let (status, body) = d.api.delete(admin, &format!("/v1/users/{listed}")).await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{body}"
    );
    // Erasure leaves no biometric rows behind.
    assert_eq!(
        d.store.voiceprint("hooli", &listed, &model).await.unwrap(),
        None
    );
    assert!(
        d.store
            .enrollment_audio("hooli", &listed)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        d.store
            .fingerprints("hooli", &listed, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !d.store
            .watchlist("hooli")
            .await
            .unwrap()
            .iter()
            .any(|e| e.user_id == listed),
        "the listing went with the user"
    );
    let (status, body) = d.api.get(reader, &format!("/v1/users/{listed}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("profile_not_found")),
        "a deleted user leaves no profile, consent or listing: {body}"
    );
}

/// Two adapter replicas each get their own decisions, and a token minted on
/// one is spent for both (revocation lives in the store).
async fn replicas(d: &Deployment, second: &Api) {
    let user = unique("bob");
    let fields = [("user_id", user.as_str())];
    let key = d.initech.as_str();
    let (status, body) = second
        .post(key, "/create-profile", json!({"user_id": user}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    second
        .post(
            key,
            "/v1/consent",
            json!({"user_id": user, "granted": true}),
        )
        .await;
    let (_, enrolled) = d
        .api
        .upload(key, "/enroll", &fields, wav(ALICE_ENROLL), "audio/wav")
        .await;
    assert_eq!(enrolled["status"], "ENROLLED", "{enrolled}");
    let (a, b) = tokio::join!(
        d.api.upload(
            key,
            "/v1/voice/verify",
            &fields,
            wav(ALICE_VERIFY),
            "audio/wav"
        ),
        second.upload(key, "/v1/voice/verify", &fields, wav(IMPOSTOR), "audio/wav"),
    );
    assert_eq!(
        (a.0, a.1["decision"].as_str()),
        (StatusCode::OK, Some("accept")),
        "{}",
        a.1
    );
    assert_eq!(
        (b.0, b.1["decision"].as_str()),
        (StatusCode::OK, Some("reject")),
        "{}",
        b.1
    );
    let (_, challenge) = second
        .post(key, "/start-auth", json!({"user_id": user}))
        .await;
    let session_fields = [
        ("user_id", user.as_str()),
        ("session_id", challenge["session_id"].as_str().unwrap()),
    ];
    // The answer is decided (the phrase was not said: tokens across
    // replicas are in `phrase_check`), and the session is spent everywhere.
    let (_, answered) = d
        .api
        .upload(
            key,
            "/verify-voice",
            &session_fields,
            wav(ALICE_VERIFY),
            "audio/wav",
        )
        .await;
    assert_eq!(
        answered["code"], "phrase_mismatch",
        "a session started on one replica is answered on another: {answered}"
    );
    let (status, again) = second
        .upload(
            key,
            "/verify-voice",
            &session_fields,
            wav(ALICE_VERIFY),
            "audio/wav",
        )
        .await;
    assert_eq!(
        (status, again["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("session_invalid")),
        "spent on the other replica: {again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_end_to_end_on_the_embedded_backend() {
    let store = format!(
        "file://{}",
        scratch_dir("api").join("timbre.redb").display()
    );
    let d = deploy("embedded://", &store, settings()).await;
    let replicas = [&d.api];
    tokio::join!(
        flow(&d),
        rate_limit(&replicas, &d.acme_burst, &d.globex),
        operations(&d),
        key_lifecycle(&d, &[]),
        user_administration(&d),
        dialects::contact_consent(&d),
        dialects::user_group_keys(&d),
        dialect_standalone::standalone(&d)
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_end_to_end_on_kafka_and_cassandra() {
    let (Some(kafka), Some(cql)) = (kafka_url(), cql_nodes()) else {
        return;
    };
    let d = deploy(
        &kafka,
        &format!("cql://{cql}/{}", unique("api")),
        settings(),
    )
    .await;
    let (second, second_ops) = replica(&d.config, d.shutdown.clone()).await;
    let other_replicas = [&second];
    let both_replicas = [&d.api, &second];
    tokio::join!(
        flow(&d),
        rate_limit(&both_replicas, &d.acme_burst, &d.globex),
        replicas(&d, &second),
        ops_listener_only(&second, &second_ops),
        key_lifecycle(&d, &other_replicas),
        user_administration(&d),
        dialects::contact_consent(&d),
        dialects::user_group_keys(&d),
        dialect_standalone::standalone(&d)
    );
    d.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), d.task)
        .await
        .unwrap()
        .unwrap();
}

/// Requests from one address past its limit are refused before any key is
/// looked up, so guessing keys is throttled too; behind a trusted proxy the
/// configured header names the client (the entry the proxy appended: the
/// ones the client sent before it do not let it escape its limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_are_limited_before_key_lookup() {
    let store = format!(
        "file://{}",
        scratch_dir("address").join("timbre.redb").display()
    );
    let mut settings = settings();
    settings.push(("TIMBRE__API__ADDRESS_RATE_LIMIT_PER_MINUTE", "5".into()));
    settings.push((
        "TIMBRE__API__CLIENT_ADDRESS_HEADER",
        "\"x-forwarded-for\"".into(),
    ));
    let d = deploy("embedded://", &store, settings).await;
    let guess = format!("tmb_{}_{}", "0".repeat(16), "0".repeat(48));
    let forged = std::sync::atomic::AtomicUsize::new(0);
    let from = |client: &str| {
        let n = forged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        d.api
            .http
            .get(format!("{}/v1/usage", d.api.base))
            .header("x-api-key", guess.clone())
            .header(
                "x-forwarded-for",
                format!("10.9.{}.{}, {client}", n / 250, n % 250),
            )
    };
    let into_minute = timbre::domain::now_ms().rem_euclid(60_000);
    if into_minute > 50_000 {
        tokio::time::sleep(Duration::from_millis((60_000 - into_minute) as u64 + 100)).await;
    }
    for _ in 0..5 {
        assert_eq!(
            d.api.send(from("203.0.113.7")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (status, body) = d.api.send(from("203.0.113.7")).await;
    assert_eq!(
        (status, body["scope"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("address")),
        "{body}"
    );
    assert_eq!(
        d.api.send(from("198.51.100.2")).await.0,
        StatusCode::UNAUTHORIZED,
        "another client is not affected"
    );
    d.stop().await;
}

/// OAuth2 client credentials (RFC 6749 §4.4) with a key as the client:
/// wrong secret, unknown grant and a scope beyond the key are refused with
/// the RFC's codes; an access token carries only the granted scopes; a
/// refresh token is good once and expires; a disabled key's tokens stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_client_credentials_and_refresh_rotation() {
    let store = format!(
        "file://{}",
        scratch_dir("oauth").join("timbre.redb").display()
    );
    let mut settings = settings();
    settings.push(("TIMBRE__API__REFRESH_TOKEN_TTL_SECS", "4".into()));
    let d = deploy("embedded://", &store, settings).await;
    let (_, created) = d
        .api
        .post(
            &d.hooli_admin,
            "/v1/keys",
            json!({"scopes": ["consent:read", "consent:write"], "name": "ivr"}),
        )
        .await;
    let key = created["api_key"].as_str().unwrap().to_string();
    let (client_id, secret) = client_credentials(&key);
    let token = |form: Vec<(&str, String)>, basic: Option<(&str, &str)>| {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        d.api.send(d.api.oauth_token(&form, basic))
    };
    let grant = |scope: Option<&str>| {
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client_id.clone()),
            ("client_secret", secret.clone()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope.to_string()));
        }
        form
    };

    let (status, body) = token(
        vec![("grant_type", "client_credentials".into())],
        Some((client_id.as_str(), "0".repeat(48).as_str())),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, body) = token(grant(Some("keys:admin")), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let mut password = grant(None);
    password[0].1 = "password".into();
    let (status, body) = token(password, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );

    let (status, issued) = token(grant(Some("consent:read")), None).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(
        (issued["token_type"].as_str(), issued["scope"].as_str()),
        (Some("Bearer"), Some("consent:read"))
    );
    let access = issued["access_token"].as_str().unwrap().to_string();
    assert_eq!(d.api.get(&access, "/v1/consent/u1").await.0, StatusCode::OK);
    let (status, body) = d
        .api
        .send(
            d.api
                .http
                .post(format!("{}/v1/consent", d.api.base))
                .bearer_auth(&access)
                .json(&json!({"user_id": "u1", "granted": true})),
        )
        .await;
    assert_eq!(
        (status, body["scope"].as_str()),
        (StatusCode::FORBIDDEN, Some("consent:write")),
        "the token has only the granted scope: {body}"
    );

    // Rotation: a refresh token is good once.
    let refresh = |refresh_token: String| {
        token(
            vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", refresh_token),
            ],
            Some((client_id.as_str(), secret.as_str())),
        )
    };
    let first = issued["refresh_token"].as_str().unwrap().to_string();
    let (status, rotated) = refresh(first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let (status, body) = refresh(first).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let access = rotated["access_token"].as_str().unwrap().to_string();
    assert_eq!(d.api.get(&access, "/v1/consent/u1").await.0, StatusCode::OK);

    // The key's state governs its tokens.
    let disable = format!("/v1/keys/{client_id}/disable");
    d.api.post(&d.hooli_admin, &disable, json!({})).await;
    assert_eq!(
        d.api.get(&access, "/v1/consent/u1").await.0,
        StatusCode::UNAUTHORIZED
    );
    let latest = rotated["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = refresh(latest.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    d.api
        .post(
            &d.hooli_admin,
            &format!("/v1/keys/{client_id}/enable"),
            json!({}),
        )
        .await;

    // Expiry (refresh tokens live 4 s here).
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let (status, body) = refresh(latest).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        d.api.get("not-a-token", "/v1/consent/u1").await.0,
        StatusCode::UNAUTHORIZED
    );
    d.stop().await;
}

/// Over HTTP, with replay detection on (the product's default): a fresh
/// recording of the user is accepted, the same recording played back
/// through a µ-law telephone channel is rejected as a replay, with a
/// failure counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_refused_over_http() {
    let store = format!(
        "file://{}",
        scratch_dir("api-replay").join("timbre.redb").display()
    );
    let mut on = settings();
    on.push(("TIMBRE__POLICY__REPLAY_MEMORY_DAYS", "90".into()));
    let d = deploy("embedded://", &store, on).await;
    let (api, key) = (&d.api, d.acme.as_str());
    let user = unique("carol");
    let fields = [("user_id", user.as_str())];
    api.post(key, "/create-profile", json!({"user_id": user}))
        .await;
    api.post(
        key,
        "/v1/consent",
        json!({"user_id": user, "granted": true}),
    )
    .await;
    let (_, enrolled) = api
        .upload(key, "/enroll", &fields, wav(ALICE_ENROLL), "audio/wav")
        .await;
    assert_eq!(enrolled["status"], "ENROLLED", "{enrolled}");
    let verify = |audio: Vec<u8>| api.upload(key, "/v1/voice/verify", &fields, audio, "audio/wav");

    let (status, live) = verify(wav(ALICE_VERIFY)).await;
    assert_eq!(status, StatusCode::OK, "{live}");
    assert_eq!(
        (
            live["decision"].as_str(),
            live["signals"]["liveness"].as_str()
        ),
        (Some("accept"), Some("high")),
        "{live}"
    );
    let (status, replay) = verify(replayed(&wav(ALICE_VERIFY), "mulaw_8k")).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(
        (
            replay["decision"].as_str(),
            replay["reason"].as_str(),
            replay["signals"]["liveness"].as_str()
        ),
        (Some("reject"), Some("replay_detected"), Some("low")),
        "{replay}"
    );
    assert_eq!(
        replay["retries"], 1,
        "a replay counts as a failure: {replay}"
    );
    d.stop().await;
}
