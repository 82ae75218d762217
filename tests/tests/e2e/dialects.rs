//! The vendor dialects over real HTTP, run inside the API end-to-end tests
//! (`api_e2e`) on the embedded backend and on Kafka + Cassandra: the wire
//! shapes field by field, the errors, and their effects in the pipeline.

use reqwest::StatusCode;
use serde_json::{Value, json};
use timbre::domain::BIOMETRIC_PURPOSE;
use timbre_tests::api::{Deployment, client_credentials};
use timbre_tests::pipeline::{spoken_digits, wav};
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

    // Erasing the contact (and with it a lockout or a watchlist entry)
    // takes profiles:admin; consent scopes alone change nothing.
    for status in ["DELETED", "NO_CONSENT"] {
        let (code, body) = put(&writer, json!({ "status": status })).await;
        assert_eq!(
            (code, body["error"].as_str(), body["scope"].as_str()),
            (
                StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
                Some("profiles:admin")
            ),
            "{status}: {body}"
        );
    }
    assert_eq!(get(&reader).await.1, json!({"status": "REFUSED"}));
    let eraser = token(
        d,
        &["consent:read", "consent:write", "profiles:admin"],
        "voicebiometrics-consent:write profiles:admin",
    )
    .await;
    // DELETED erases the contact, consent included.
    assert_eq!(
        put(&eraser, json!({"status": "DELETED"})).await,
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
                .bearer_auth(&eraser)
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
            json!({"scopes": ["keys:admin", "verify"], "name": "account"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let account = account["api_key"].as_str().unwrap().to_string();
    // A native key grants only what it holds itself.
    let (status, body) = d
        .api
        .post(
            &account,
            "/v1/keys",
            json!({"scopes": ["verify", "enroll"]}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str(), body["scope"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("insufficient_scope"),
            Some("enroll")
        ),
        "{body}"
    );
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
    // The user withdraws consent to keep audio: the records go, and the
    // retaining key's next verification keeps none; granted again, it does.
    let retention = |retain_audio: bool| {
        let body = json!({"user_id": user, "granted": true, "retain_audio": retain_audio});
        let key = key.clone();
        async move { d.api.post(&key, "/v1/consent", body).await }
    };
    let (status, body) = retention(false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(diagnostics().await.is_empty(), "erased with the retention");
    let (status, body) = verify(key.clone()).await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (StatusCode::OK, Some("accept")),
        "{body}"
    );
    assert!(
        diagnostics().await.is_empty(),
        "no audio kept without consent to keep it"
    );
    let (status, body) = retention(true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = verify(key.clone()).await;
    assert_eq!(status, StatusCode::OK);
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

/// One call of the digit dialogue: status, body and the `biometrid.sid`
/// cookie the answer sets (`Some("")` when it clears it).
struct DialogueReply {
    status: StatusCode,
    body: Value,
    cookie: Option<String>,
}

/// Posts to the dialogue `kind` (`enroll`, `verify`) of `user`.
async fn dialogue_call(
    d: &Deployment,
    (key, secret): (&str, &str),
    user: &str,
    kind: &str,
    cookie: Option<&str>,
    language: Option<&str>,
    audio: Option<(Vec<u8>, &str)>,
) -> DialogueReply {
    let url = format!("{}/api/1.0/users/{user}/dialogue/{kind}/voice", d.api.base);
    let mut request = d
        .api
        .http
        .post(url)
        .header("x-biometrid-key", key)
        .header("x-biometrid-secret", secret);
    if language.is_some() || audio.is_some() {
        let mut form = reqwest::multipart::Form::new();
        if let Some(language) = language {
            form = form.text("language", language.to_string());
        }
        if let Some((bytes, mime)) = audio {
            let part = reqwest::multipart::Part::bytes(bytes)
                .file_name("answer.wav")
                .mime_str(mime)
                .unwrap();
            form = form.part("audio", part);
        }
        request = request.multipart(form);
    }
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("other=1; biometrid.sid={cookie}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("biometrid.sid="))
        .map(|v| {
            assert!(v.contains("HttpOnly"), "{v}");
            v.split(';').next().unwrap().to_string()
        });
    let body = response.json().await.unwrap();
    DialogueReply {
        status,
        body,
        cookie,
    }
}

/// The cookie of a reply with a new prompt: a new one each turn.
fn turned(reply: &DialogueReply, previous: &str) -> String {
    let next = reply
        .cookie
        .clone()
        .expect("a new prompt sets a new cookie");
    assert!(
        !next.is_empty() && next != previous,
        "{next} after {previous}"
    );
    next
}

/// Every digit of `code` moved by five: another code, never misheard as it.
fn another_code(code: &str) -> String {
    code.bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 5) % 10))
        .collect()
}

/// The prompt of a reply, checked against its words in `language`.
fn prompt_of(reply: &DialogueReply, words: &[&str; 10]) -> String {
    let data = &reply.body["data"];
    let code = data["promptCode"].as_str().unwrap_or_default().to_string();
    assert_eq!(code.len(), 6, "{}", reply.body);
    let spoken: Vec<&str> = code.bytes().map(|b| words[usize::from(b - b'0')]).collect();
    assert_eq!(
        data["promptCodeText"],
        json!(spoken.join(" ")),
        "{}",
        reply.body
    );
    code
}

const EN_DIGITS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// 002: a user enrolls and verifies through prompted digit dialogues, on
/// real recordings of `speaker`'s digits (FSDD; take 1 enrolls, take 0
/// answers); a wrong code is a `Misspeak`, and three of them fail the
/// dialogue.
pub async fn digit_dialogue(d: &Deployment, speaker: &str) {
    let (id, secret) = client_credentials(&d.acme);
    let credentials = (id.as_str(), secret.as_str());
    let user = unique("dialogue");
    let call = |kind: &'static str,
                cookie: Option<String>,
                language: Option<&'static str>,
                audio: Option<(Vec<u8>, &'static str)>| {
        let user = user.clone();
        async move {
            dialogue_call(
                d,
                credentials,
                &user,
                kind,
                cookie.as_deref(),
                language,
                audio,
            )
            .await
        }
    };
    let said = |take: u32, code: &str| Some((spoken_digits(speaker, take, code), "audio/wav"));

    // Credentials are the key's id and secret.
    let wrong = dialogue_call(d, (&id, "00"), &user, "enroll", None, None, None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    assert_eq!(
        (&wrong.body["status"], &wrong.body["data"]["reason"]),
        (&json!(false), &json!("unauthorized"))
    );

    // Enrollment: consent first, then a dialogue started without a body.
    let (status, body) = d
        .api
        .post(
            &d.acme,
            "/v1/consent",
            json!({"user_id": user, "granted": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let started = call("enroll", None, None, None).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert_eq!(started.body["status"], json!(true));
    assert_eq!(
        started.body["data"]["message"],
        json!("DIALOGUE_STARTED_WITH_SUCCESS")
    );
    let mut cookie = started.cookie.clone().expect("the dialogue's cookie");
    assert_eq!(started.body["data"]["dialogueId"], json!(cookie));
    let mut code = prompt_of(&started, &EN_DIGITS);

    // Answers need the cookie and a WAV.
    let lost = call("enroll", None, None, said(1, &code)).await;
    assert_eq!(
        (lost.status, &lost.body["data"]["reason"]),
        (StatusCode::BAD_REQUEST, &json!("dialogue_required")),
        "{}",
        lost.body
    );
    let mp3 = call(
        "enroll",
        Some(cookie.clone()),
        None,
        Some((spoken_digits(speaker, 1, &code), "audio/mpeg")),
    )
    .await;
    assert_eq!(
        (mp3.status, &mp3.body["data"]["reason"]),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &json!("unsupported_media_type")
        ),
        "{}",
        mp3.body
    );

    // Another code is a misspeak; the prompt's own code enrolls.
    let misspoken = call(
        "enroll",
        Some(cookie.clone()),
        None,
        said(1, &another_code(&code)),
    )
    .await;
    assert_eq!(misspoken.status, StatusCode::OK, "{}", misspoken.body);
    assert_eq!(
        (
            &misspoken.body["data"]["message"],
            &misspoken.body["data"]["decision"]
        ),
        (&json!("AUDIO_SUBMITTED_WITH_SUCCESS"), &json!("Misspeak")),
        "{}",
        misspoken.body
    );
    code = prompt_of(&misspoken, &EN_DIGITS);
    cookie = turned(&misspoken, &cookie);
    let mut decisions = Vec::new();
    let finished = loop {
        assert!(decisions.len() < 6, "not enrolled after {decisions:?}");
        let reply = call("enroll", Some(cookie.clone()), None, said(1, &code)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        if reply.body["data"]["dialogueStatus"] == json!("Succeeded") {
            break reply;
        }
        decisions.push(reply.body["data"]["decision"].clone());
        code = prompt_of(&reply, &EN_DIGITS);
        cookie = turned(&reply, &cookie);
    };
    assert_eq!(
        finished.body,
        json!({"status": true, "data": {"dialogueStatus": "Succeeded",
            "message": "AUDIO_ENROLLED_WITH_SUCCESS", "enrolled": true}})
    );
    assert_eq!(
        finished.cookie.as_deref(),
        Some(""),
        "the cookie is cleared"
    );
    assert_eq!(
        d.store
            .profile("acme", &user)
            .await
            .unwrap()
            .unwrap()
            .status,
        timbre::domain::ProfileStatus::Enrolled
    );
    let over = call("enroll", Some(cookie.clone()), None, said(1, &code)).await;
    assert_eq!(
        (over.status, &over.body["data"]["reason"]),
        (StatusCode::BAD_REQUEST, &json!("dialogue_invalid"))
    );

    // Verification: the prompt said by the enrolled voice is verified (a
    // right code is misheard about one time in twenty: answer again then).
    let started = call("verify", None, None, None).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let mut cookie = started.cookie.clone().unwrap();
    let mut code = prompt_of(&started, &EN_DIGITS);
    let mut misheard = 0;
    let verified = loop {
        let reply = call("verify", Some(cookie.clone()), None, said(0, &code)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        if reply.body["data"]["dialogueStatus"] == json!("Succeeded") {
            break reply;
        }
        assert_eq!(
            reply.body["data"]["decision"],
            json!("Misspeak"),
            "{}",
            reply.body
        );
        misheard += 1;
        assert!(misheard < 2, "a right code misheard twice: {}", reply.body);
        code = prompt_of(&reply, &EN_DIGITS);
        cookie = turned(&reply, &cookie);
    };
    assert_eq!(
        verified.body,
        json!({"status": true, "data": {"dialogueStatus": "Succeeded",
            "message": "AUDIO_VERIFIED_WITH_SUCCESS", "verified": true}})
    );

    // Three wrong codes fail the dialogue.
    let started = call("verify", None, None, None).await;
    let mut cookie = started.cookie.clone().unwrap();
    let mut code = prompt_of(&started, &EN_DIGITS);
    for _ in 0..2 {
        let reply = call(
            "verify",
            Some(cookie.clone()),
            None,
            said(0, &another_code(&code)),
        )
        .await;
        assert_eq!(
            (&reply.body["status"], &reply.body["data"]["decision"]),
            (&json!(true), &json!("Misspeak")),
            "{}",
            reply.body
        );
        code = prompt_of(&reply, &EN_DIGITS);
        cookie = turned(&reply, &cookie);
    }
    let failed = call(
        "verify",
        Some(cookie.clone()),
        None,
        said(0, &another_code(&code)),
    )
    .await;
    assert_eq!(failed.status, StatusCode::OK);
    assert_eq!(
        failed.body,
        json!({"status": false, "data": {"dialogueStatus": "Failed",
            "message": "AUDIO_RECOGNITION_FAILED", "reason": "MaxTotalSqmFailuresExceeded",
            "decision": "Misspeak", "verified": false}})
    );

    // Portuguese prompts are read out in Portuguese and said not to be checked.
    let pt = call("verify", None, Some("pt"), None).await;
    assert_eq!(pt.status, StatusCode::OK, "{}", pt.body);
    prompt_of(
        &pt,
        &[
            "zero", "um", "dois", "três", "quatro", "cinco", "seis", "sete", "oito", "nove",
        ],
    );
    assert_eq!(
        pt.body["data"]["phraseChecked"],
        json!(false),
        "{}",
        pt.body
    );
    let german = call("verify", None, Some("de"), None).await;
    assert_eq!(
        (german.status, &german.body["data"]["reason"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_field"))
    );

    // A dialogue's prompt is no challenge of the native API.
    let prompt = call("verify", None, None, None).await.cookie.unwrap();
    let (status, body) = d
        .api
        .upload(
            &d.acme,
            "/verify-voice",
            &[("user_id", user.as_str()), ("session_id", prompt.as_str())],
            spoken_digits(speaker, 0, "123456"),
            "audio/wav",
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("session_invalid")),
        "{body}"
    );

    // A dialogue answers only its own operation.
    let enrolling = call("enroll", None, None, None).await;
    let crossed = call("verify", enrolling.cookie.clone(), None, said(0, "123456")).await;
    assert_eq!(
        (crossed.status, &crossed.body["data"]["reason"]),
        (StatusCode::BAD_REQUEST, &json!("dialogue_mismatch"))
    );
}
