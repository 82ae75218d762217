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

const GENUINE: &str = "librispeech-r/test-other/1688/1688-142285-0005.wav";

/// A `YYYY-MM-DD_hh:mm:ss` date.
fn vendor_date(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'_',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// Asserts the dialect's error shape, status and text; returns the text.
fn vendor_error(status: StatusCode, body: &Value, want: StatusCode, action: &str) -> String {
    assert_eq!(status, want, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], json!(want.as_u16()), "{body}");
    assert!(vendor_date(&error["datetime"]), "{body}");
    assert!(
        error["link"]
            .as_str()
            .unwrap()
            .ends_with(&format!("~1key~1{action}")),
        "{body}"
    );
    assert_eq!(
        body["request"]["url"],
        json!(format!("/voice_biometrics/v1/user_group/key/{action}")),
        "{body}"
    );
    assert!(vendor_date(&body["request"]["datetime"]), "{body}");
    error["text"].as_str().unwrap().to_string()
}

/// 003: an account administrator manages a user group's keys with Basic
/// auth; a disabled key cannot enroll or verify, and `retain_data` decides
/// whether a verification's audio and decision are kept (30 days at most).
pub async fn user_group_keys(d: &Deployment) {
    let base = format!("{}/voice_biometrics/v1/user_group/key", d.api.base);
    const ADMIN: &str = "1-2-0/ops@example.com";
    let call = |action: &str, user: &str, password: &str, query: &[(&str, &str)], form: bool| {
        let url = format!("{base}/{action}");
        let request = if form {
            d.api.http.post(url).form(query)
        } else {
            d.api.http.get(url).query(query)
        };
        d.api.send(request.basic_auth(user, Some(password)))
    };
    // The account's own key administration key (acme's main key has the
    // other flows' rate limit to keep).
    let (status, account) = d
        .api
        .post(
            &d.acme,
            "/v1/keys",
            json!({"scopes": ["keys:admin"], "name": "account"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let account = account["api_key"].as_str().unwrap().to_string();
    let admin = |action: &str, query: &[(&str, &str)], form: bool| {
        call(action, ADMIN, &account, query, form)
    };
    let group = [("user_group_name", "acme")];

    // Who may call: Basic with cloudID/username and a keys:admin API key.
    let (status, body) = d
        .api
        .send(d.api.http.get(format!("{base}/list")).query(&group))
        .await;
    vendor_error(status, &body, StatusCode::UNAUTHORIZED, "list");
    let (status, body) = call("list", "ops@example.com", &account, &group, false).await;
    vendor_error(status, &body, StatusCode::UNAUTHORIZED, "list");
    let (status, body) = call("list", ADMIN, "tmb_0123456789abcdef_00", &group, false).await;
    vendor_error(status, &body, StatusCode::UNAUTHORIZED, "list");
    let (status, verifier) = d
        .api
        .post(&account, "/v1/keys", json!({"scopes": ["verify"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{verifier}");
    let verifier = verifier["api_key"].as_str().unwrap().to_string();
    let (status, body) = call("list", ADMIN, &verifier, &group, false).await;
    let text = vendor_error(status, &body, StatusCode::FORBIDDEN, "list");
    assert!(text.contains("keys:admin"), "{text}");

    // Parameters: required, and only the caller's own group exists.
    let (status, body) = admin("list", &[], false).await;
    let text = vendor_error(status, &body, StatusCode::BAD_REQUEST, "list");
    assert!(text.contains("user_group_name"), "{text}");
    let (status, body) = admin("create", &[("user_group_name", "globex")], true).await;
    let text = vendor_error(status, &body, StatusCode::NOT_FOUND, "create");
    assert_eq!(text, "Not found: user group globex was not found");

    // Create, over GET and over a POST form: enabled, not retaining, whole
    // once; the listing names each by its handle, the start of the key.
    let mut created = Vec::new();
    for form in [false, true] {
        let (status, key) = admin("create", &group, form).await;
        assert_eq!(status, StatusCode::OK, "{key}");
        let fields: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            ["created", "enabled", "retain_data", "user_group_key"],
            "{key}"
        );
        assert!(vendor_date(&key["created"]), "{key}");
        assert_eq!(
            (&key["enabled"], &key["retain_data"]),
            (&json!(true), &json!(false))
        );
        created.push(key["user_group_key"].as_str().unwrap().to_string());
    }
    assert_ne!(created[0], created[1], "keys are unique");
    let handle = |key: &str| key[..20].to_string();
    let listed =
        |body: &Value| -> Vec<Value> { body["user_group_keys"].as_array().unwrap().clone() };
    let (status, body) = admin("list", &group, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for key in &created {
        let entry = listed(&body)
            .into_iter()
            .find(|k| k["user_group_key"] == json!(handle(key)))
            .unwrap_or_else(|| panic!("{key} listed: {body}"));
        assert_eq!(
            (&entry["enabled"], &entry["retain_data"]),
            (&json!(true), &json!(false))
        );
        assert!(vendor_date(&entry["created"]), "{entry}");
    }
    let text = body.to_string();
    assert!(!text.contains(&created[0][21..]), "no secret is listed");
    assert!(
        !text.contains(&handle(&account)),
        "the admin key is not a user-group key"
    );
    let (key, spare) = (created[0].clone(), created[1].clone());

    // The new key registers and verifies a user; nothing is retained.
    let user = unique("group-user");
    let fields = [("user_id", user.as_str())];
    let (status, body) = d
        .api
        .post(
            &key,
            "/v1/consent",
            json!({"user_id": user, "granted": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = d
        .api
        .upload(&key, "/enroll", &fields, wav(ENROLL), "audio/wav")
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ENROLLED")),
        "{body}"
    );
    let verify = |key: String| async move {
        d.api
            .upload(&key, "/v1/voice/verify", &fields, wav(GENUINE), "audio/wav")
            .await
    };
    let (status, body) = verify(key.clone()).await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (StatusCode::OK, Some("accept")),
        "{body}"
    );
    let diagnostics = || async { d.store.diagnostics("acme", &user).await.unwrap() };
    assert!(
        diagnostics().await.is_empty(),
        "retain_data off keeps no audio"
    );

    // Modify: both flags required, "true"/"false" only, own keys only.
    for (query, missing) in [
        (
            vec![("user_group_key", key.as_str()), ("enabled", "true")],
            "retain_data",
        ),
        (
            vec![("user_group_key", key.as_str()), ("retain_data", "true")],
            "enabled",
        ),
        (
            vec![
                ("user_group_key", key.as_str()),
                ("enabled", "yes"),
                ("retain_data", "true"),
            ],
            "enabled",
        ),
        (
            vec![("enabled", "true"), ("retain_data", "true")],
            "user_group_key",
        ),
        (
            vec![
                ("user_group_key", "ak-OlRlRe8uNPUw0usbnIP2DBiafb0G"),
                ("enabled", "true"),
                ("retain_data", "true"),
            ],
            "user_group_key",
        ),
    ] {
        let (status, body) = admin("modify", &query, false).await;
        let text = vendor_error(status, &body, StatusCode::BAD_REQUEST, "modify");
        assert!(text.contains(missing), "{query:?}: {text}");
    }
    for other in [account.as_str(), d.globex.as_str(), "tmb_0123456789abcdef"] {
        let query = [
            ("user_group_key", other),
            ("enabled", "false"),
            ("retain_data", "false"),
        ];
        let (status, body) = admin("modify", &query, true).await;
        let text = vendor_error(status, &body, StatusCode::NOT_FOUND, "modify");
        assert!(text.starts_with("Not found: user group key tmb_"), "{text}");
        assert!(
            !text.contains(&other[21.min(other.len())..]) || other.len() <= 21,
            "no secret echoed: {text}"
        );
    }

    // A disabled key can neither verify nor register.
    let (status, body) = admin(
        "modify",
        &[
            ("user_group_key", &handle(&key)),
            ("enabled", "false"),
            ("retain_data", "false"),
        ],
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_group_key"], json!(handle(&key)));
    assert_eq!(
        (&body["enabled"], &body["retain_data"]),
        (&json!(false), &json!(false))
    );
    let (status, body) = verify(key.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = d
        .api
        .upload(&key, "/enroll", &fields, wav(GENUINE), "audio/wav")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Enabled and retaining: the verification's audio and decision are kept
    // for 30 days.
    let (status, body) = admin(
        "modify",
        &[
            ("user_group_key", &key),
            ("enabled", "true"),
            ("retain_data", "true"),
        ],
        true,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["enabled"], &body["retain_data"]),
        (&json!(true), &json!(true))
    );
    let (status, body) = admin("list", &group, false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        listed(&body)
            .iter()
            .any(|k| k["user_group_key"] == json!(handle(&key)) && k["retain_data"] == json!(true)),
        "{body}"
    );
    let (status, verified) = verify(key.clone()).await;
    assert_eq!(
        (status, verified["decision"].as_str()),
        (StatusCode::OK, Some("accept")),
        "{verified}"
    );
    let kept = diagnostics().await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].job, "verification");
    assert_eq!(kept[0].wav, wav(GENUINE));
    assert_eq!(kept[0].expires_at - kept[0].at, 30 * 86_400_000);
    let decision: timbre_schemas::Decision = timbre_schemas::Registry::new()
        .decode(&kept[0].decision)
        .unwrap();
    assert_eq!(decision.request_id, kept[0].request_id);
    assert_eq!(decision.user_id, user);
    assert_eq!(decision.decision, timbre_schemas::DecisionKind::Accept);
    // Another key of the group, not retaining, adds nothing.
    let (status, body) = verify(spare.clone()).await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (StatusCode::OK, Some("accept")),
        "{body}"
    );
    assert_eq!(diagnostics().await.len(), 1);

    // Delete: the key is refused at once and no longer listed.
    let (status, body) = admin("delete", &[("user_group_key", &spare)], true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert!(vendor_date(&body["deleted"]), "{body}");
    let (status, _) = verify(spare.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = admin("delete", &[("user_group_key", &spare)], false).await;
    vendor_error(status, &body, StatusCode::NOT_FOUND, "delete");
    let (status, body) = admin("list", &group, false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !listed(&body)
            .iter()
            .any(|k| k["user_group_key"] == json!(handle(&spare))),
        "{body}"
    );

    // Diagnostics go with the user.
    let (status, body) = d.api.delete(&d.acme, &format!("/v1/users/{user}")).await;
    assert!(status.is_success(), "{status}: {body}");
    assert!(diagnostics().await.is_empty(), "erased with the user");
}
