//! The vendor dialects over real HTTP, run inside the API end-to-end tests
//! (`api_e2e`) on the embedded backend and on Kafka + Cassandra: the wire
//! shapes field by field, the errors, and their effects in the pipeline.

use reqwest::StatusCode;
use serde_json::{Value, json};
use timbre::domain::BIOMETRIC_PURPOSE;
use timbre_tests::api::{Deployment, client_credentials};
use timbre_tests::pipeline::wav;
use timbre_tests::unique;

const ENROLL: &str = "librispeech-r/test-other/1688/1688-142285-0000.wav";

/// An OAuth2 access token of a client holding `scopes`, asked for `scope`.
async fn token(d: &Deployment, scopes: &[&str], scope: &str) -> String {
    let (status, created) = d
        .api
        .post(
            &d.hooli_admin,
            "/v1/keys",
            json!({"scopes": scopes, "name": "ivr"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (id, secret) = client_credentials(created["api_key"].as_str().unwrap());
    let (status, body) = d
        .api
        .send(d.api.oauth_token(
            &[("grant_type", "client_credentials"), ("scope", scope)],
            Some((&id, &secret)),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// 001: a contact-centre IVR reads and sets consent with OAuth2 tokens of
/// the dialect's scopes; consent gates enrollment and a refusal erases.
pub async fn contact_consent(d: &Deployment) {
    let contact = unique("contact");
    let path = format!("/voicebiometrics/contacts/{contact}/consent");
    let url = format!("{}{path}", d.api.base);
    let put = |token: &str, body: Value| {
        d.api
            .send(d.api.http.put(&url).bearer_auth(token).json(&body))
    };
    let get = |token: &str| d.api.send(d.api.http.get(&url).bearer_auth(token));

    let reader = token(
        d,
        &["consent:read", "consent:write"],
        "voicebiometrics-consent:read",
    )
    .await;
    let writer = token(
        d,
        &["consent:read", "consent:write"],
        "voicebiometrics-consent:read voicebiometrics-consent:write",
    )
    .await;

    // An unknown contact has not been asked.
    assert_eq!(
        get(&reader).await,
        (StatusCode::OK, json!({"status": "NO_CONSENT"}))
    );
    // The read scope does not write.
    let (status, body) = put(&reader, json!({"status": "CONSENTED"})).await;
    assert_eq!(
        (status, body["error"].as_str(), body["scope"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("insufficient_scope"),
            Some("consent:write")
        ),
        "{body}"
    );
    let (status, _) = d.api.send(d.api.http.get(&url)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bad bodies are refused, naming the field.
    for (bad, field) in [
        (json!({}), "status"),
        (json!({"status": "MAYBE"}), "status"),
        (json!({"status": 1}), "status"),
        (json!({"status": "CONSENTED", "retain": true}), "retain"),
        (json!(["CONSENTED"]), "status"),
    ] {
        let (status, body) = put(&writer, bad.clone()).await;
        assert_eq!(
            (status, body["error"].as_str(), body["field"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                Some("invalid_request"),
                Some(field)
            ),
            "{bad}: {body}"
        );
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    // Bytes that are not JSON at all, as a form-encoding client sends them.
    let (status, body) = d
        .api
        .send(
            d.api
                .http
                .put(&url)
                .bearer_auth(&writer)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("status=CONSENTED"),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str(), body["field"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
            Some("status")
        ),
        "{body}"
    );
    assert_eq!(
        get(&reader).await.1,
        json!({"status": "NO_CONSENT"}),
        "a refused body changes nothing"
    );

    // Without consent the contact cannot enroll; with it, it can.
    let fields = [("user_id", contact.as_str())];
    let enroll = || {
        d.api
            .upload(&d.hooli_admin, "/enroll", &fields, wav(ENROLL), "audio/wav")
    };
    let (status, body) = enroll().await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("consent_required")),
        "{body}"
    );
    assert_eq!(
        put(&writer, json!({"status": "CONSENTED"})).await,
        (StatusCode::OK, json!({"status": "CONSENTED"}))
    );
    assert_eq!(
        get(&reader).await,
        (StatusCode::OK, json!({"status": "CONSENTED"}))
    );
    let (status, body) = enroll().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let model = body["model"].as_str().expect("model id").to_string();
    let voiceprints = || async {
        d.store
            .voiceprint("hooli", &contact, &model)
            .await
            .unwrap()
            .is_some()
    };
    assert!(voiceprints().await, "enrolled after consent");

    // A refusal withdraws consent and erases the voiceprint.
    assert_eq!(
        put(&writer, json!({"status": "REFUSED"})).await,
        (StatusCode::OK, json!({"status": "REFUSED"}))
    );
    assert_eq!(get(&reader).await.1, json!({"status": "REFUSED"}));
    assert!(!voiceprints().await, "erased by the refusal");
    let (status, body) = enroll().await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("consent_withdrawn"))
    );

    // DELETED erases the contact, consent included.
    assert_eq!(
        put(&writer, json!({"status": "DELETED"})).await,
        (StatusCode::OK, json!({"status": "DELETED"}))
    );
    assert_eq!(get(&reader).await.1, json!({"status": "NO_CONSENT"}));
    assert!(
        d.store
            .consent("hooli", &contact, BIOMETRIC_PURPOSE)
            .await
            .unwrap()
            .is_none()
    );
    let (status, body) = enroll().await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("consent_required"))
    );
    // Forgetting an unknown contact is not an error.
    let (status, body) = d
        .api
        .send(
            d.api
                .http
                .put(format!(
                    "{}/voicebiometrics/contacts/{}/consent",
                    d.api.base,
                    unique("nobody")
                ))
                .bearer_auth(&writer)
                .json(&json!({"status": "NO_CONSENT"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "NO_CONSENT"}))
    );
}
