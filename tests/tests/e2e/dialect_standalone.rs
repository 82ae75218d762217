//! The standalone dialect (000) over real HTTP with real recordings, run
//! inside the API end-to-end tests on both backends: biokeys, call session
//! tokens, on-demand verification, user info, opt-in and opt-out, the
//! greylist, and erasure of the biokeys with the user.

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use timbre_tests::api::Deployment;
use timbre_tests::pipeline::wav;
use timbre_tests::unique;

const ENROLL: &str = "librispeech-r/test-other/1688/1688-142285-0000.wav";
const GENUINE: &str = "librispeech-r/test-other/1688/1688-142285-0005.wav";
const IMPOSTOR: &str = "librispeech-r/test-other/1998/1998-15444-0000.wav";

/// A multipart POST with text fields and a WAV.
async fn upload(
    d: &Deployment,
    key: &str,
    path: &str,
    fields: &[(&str, String)],
    audio: &str,
) -> (StatusCode, Value) {
    let mut form = Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.clone());
    }
    let part = Part::bytes(wav(audio))
        .file_name("a.wav")
        .mime_str("audio/wav")
        .unwrap();
    form = form.part("audio", part);
    d.api
        .send(
            d.api
                .http
                .post(format!("{}{path}", d.api.base))
                .bearer_auth(key)
                .multipart(form),
        )
        .await
}

/// Asserts the `UserInfoResponse` shape exactly; returns it.
fn user_info(body: &Value, user: &str, status: &str, greylisted: bool) -> Value {
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    for field in [
        "user_id",
        "status",
        "last_update",
        "opt_out_ts",
        "opt_in_ts",
        "is_greylisted",
    ] {
        assert!(keys.iter().any(|k| *k == field), "{field} missing: {body}");
    }
    assert_eq!(body["user_id"], user, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["is_greylisted"], greylisted, "{body}");
    for ts in ["last_update", "opt_out_ts", "opt_in_ts"] {
        assert!(body[ts].is_i64(), "{ts} is epoch millis: {body}");
    }
    body.clone()
}

/// Asserts an `OnDemandVerificationResponse`'s fields and types.
fn on_demand(status: StatusCode, body: &Value) -> &Value {
    assert_eq!(status, StatusCode::OK, "{body}");
    for field in [
        "bio_result",
        "bio_score",
        "bio_user_id",
        "bio_plain_user_id",
        "error_type",
        "user_changed",
        "speech_millis",
    ] {
        assert!(body.get(field).is_some(), "{field} missing: {body}");
    }
    assert!(body["user_changed"].is_boolean(), "{body}");
    assert!(body["speech_millis"].is_i64(), "{body}");
    // The tenant's policy does not expose scores.
    assert!(body["bio_score"].is_null(), "{body}");
    body
}

/// The whole dialect, as a contact centre drives it.
pub async fn standalone(d: &Deployment) {
    let key = d.wayne.as_str();
    let user = unique("petros");
    // A phone number no other run has used.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let ani = format!("+1{:010}", nanos % 10_000_000_000);
    let users = format!("/vb/v1/users/{user}");

    // Unknown before anything happened.
    let (status, body) = d
        .api
        .send(
            d.api
                .http
                .get(format!("{}{users}", d.api.base))
                .bearer_auth(key),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("profile_not_found")),
        "{body}"
    );
    // Opt-in first: the tenant requires consent.
    let (status, body) = d.api.post(key, &format!("{users}/opt-in"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let info = user_info(&body, &user, "NOT_ENROLLED", false);
    assert!(
        info["opt_in_ts"].as_i64().unwrap() > 0 && info["opt_out_ts"] == 0,
        "{info}"
    );

    // Biokeys are checked before any audio is scored; the sensitive value
    // never comes back, not even in an error.
    let biokeys = json!([
        {"key": "UserID", "value": user, "display_name": "User", "priority": 1, "is_user_id": true},
        {"key": "ANI", "value": ani, "display_name": "Phone Number", "priority": 5, "sensitive": true, "is_user_id": false},
    ])
    .to_string();
    for bad in [
        json!([{"key": "UserID", "value": "petros 1", "is_user_id": true}]),
        json!([{"key": "UserID", "value": user, "is_user_id": false}]),
        json!([{"key": "UserID", "value": user, "is_user_id": true}, {"key": "ANI", "value": ani, "is_user_id": true}]),
        json!([{"key": "User.ID", "value": user, "is_user_id": true}]),
        json!([]),
    ] {
        let (status, body) = upload(
            d,
            key,
            "/vb/v1/users/enroll",
            &[("biokeys", bad.to_string())],
            ENROLL,
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_biokey")),
            "{bad}: {body}"
        );
        assert!(!body.to_string().contains(&ani), "{body}");
    }
    let (status, body) = upload(d, key, "/vb/v1/users/enroll", &[], ENROLL).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing_field")),
        "{body}"
    );

    let (status, enrolled) = upload(
        d,
        key,
        "/vb/v1/users/enroll",
        &[("biokeys", biokeys.clone())],
        ENROLL,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{enrolled}");
    user_info(&enrolled, &user, "ENROLLED", false);
    let bio_user_id = enrolled["bio_user_id"].as_str().unwrap().to_string();
    assert!(
        bio_user_id.len() == 64 && !bio_user_id.contains(&user),
        "{enrolled}"
    );
    assert!(
        enrolled["speech_millis"].as_i64().unwrap() > 0,
        "{enrolled}"
    );
    let (status, listed) = d.api.get(key, &format!("{users}/biokeys")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["biokeys"],
        json!([
            {"id": 1, "key": "UserID", "value": user, "display_name": "User", "priority": 1, "sensitive": false, "is_user_id": true},
            {"id": 2, "key": "ANI", "value": null, "display_name": "Phone Number", "priority": 5, "sensitive": true, "is_user_id": false},
        ])
    );
    // Another user cannot take the phone number.
    let thief = unique("thief");
    let stolen = json!([{"key": "UserID", "value": thief, "is_user_id": true}, {"key": "ANI", "value": ani, "sensitive": true}]);
    let (status, body) = upload(
        d,
        key,
        "/vb/v1/users/enroll",
        &[("biokeys", stolen.to_string())],
        IMPOSTOR,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("biokey_taken")),
        "{body}"
    );
    assert!(!body.to_string().contains(&ani), "{body}");

    // Call session tokens: every field but customProperties is required,
    // and the profile must be the key's group.
    let request = json!({"agentId": "a-7", "agentSkill": "billing", "ccaasProvider": "acme-cc",
                         "masterId": unique("call"), "tenantId": "t-1", "vbProfile": "wayne"});
    let mut missing = request.clone();
    missing.as_object_mut().unwrap().remove("agentSkill");
    let (status, body) = d.api.post(key, "/vb/v1/tokens", missing).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("agentSkill"),
        "{body}"
    );
    let mut foreign = request.clone();
    foreign["vbProfile"] = json!("hooli");
    let (status, body) = d.api.post(key, "/vb/v1/tokens", foreign).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("profile_not_in_group")),
        "{body}"
    );
    let new_call = || async {
        let (status, body) = d.api.post(key, "/vb/v1/tokens", request.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let token = body["token"].as_str().unwrap().to_string();
        assert!(
            token.starts_with("vbc_") && body["expires_in"].as_i64() == Some(3600),
            "{body}"
        );
        token
    };
    let call = new_call().await;
    let by_phone = json!([{"key": "ANI", "value": ani}]).to_string();
    let verify = |token: String, biokeys: String, audio: &'static str| async move {
        upload(
            d,
            key,
            "/vb/v1/verify",
            &[("call_token", token), ("biokeys", biokeys)],
            audio,
        )
        .await
    };

    // The genuine caller, found by phone number.
    let (status, body) = verify(call.clone(), by_phone.clone(), GENUINE).await;
    let first = on_demand(status, &body);
    assert!(
        matches!(first["bio_result"].as_str(), Some("TRUE_HIGH" | "TRUE_LOW")),
        "{first}"
    );
    assert_eq!(first["bio_plain_user_id"], user);
    assert_eq!(first["bio_user_id"], bio_user_id, "stable per tenant");
    assert_eq!(
        (
            first["user_changed"].as_bool(),
            first["error_type"].is_null()
        ),
        (Some(false), true),
        "{first}"
    );
    assert!(first["speech_millis"].as_i64().unwrap() > 1_000, "{first}");
    // Someone else takes the phone in the same call: the speaker changed.
    let (status, body) = verify(call.clone(), by_phone.clone(), IMPOSTOR).await;
    let second = on_demand(status, &body);
    assert!(
        matches!(
            second["bio_result"].as_str(),
            Some("FALSE_HIGH" | "FALSE_LOW")
        ),
        "{second}"
    );
    assert_eq!(second["user_changed"], true, "{second}");
    // An unknown number finds no one; a bad or foreign token is refused.
    let (status, body) = verify(
        call.clone(),
        json!([{"key": "ANI", "value": "+10000000000"}]).to_string(),
        GENUINE,
    )
    .await;
    let nobody = on_demand(status, &body);
    assert_eq!(
        (nobody["bio_result"].as_str(), nobody["error_type"].as_str()),
        (Some("ERROR"), Some("user_not_found")),
        "{nobody}"
    );
    let (status, body) = verify("vbc_0000".into(), by_phone.clone(), GENUINE).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("call_token_invalid")),
        "{body}"
    );
    let (status, body) = upload(
        d,
        &d.globex,
        "/vb/v1/verify",
        &[("call_token", call.clone()), ("biokeys", by_phone.clone())],
        GENUINE,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("call_token_invalid")),
        "another tenant's key: {body}"
    );

    // Greylisted: the user's own voice is now a watchlist hit.
    let (status, body) = d
        .api
        .send(
            d.api
                .http
                .put(format!("{}{users}/greylist", d.api.base))
                .bearer_auth(key),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    user_info(&body, &user, "ENROLLED", true);
    let (status, body) = verify(new_call().await, by_phone.clone(), GENUINE).await;
    let hit = on_demand(status, &body);
    assert_eq!(
        hit["user_changed"], false,
        "a fresh call has no earlier speaker: {hit}"
    );
    assert_eq!(
        (
            hit["greylist_hit"].as_bool(),
            hit["bio_result"].as_str().map(|r| r.starts_with("FALSE"))
        ),
        (Some(true), Some(true)),
        "{hit}"
    );
    let (status, body) = d.api.delete(key, &format!("{users}/greylist")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    user_info(&body, &user, "ENROLLED", false);

    // Opting out erases the voice; the biokeys stay until the user is deleted.
    let (status, body) = d
        .api
        .post(key, &format!("{users}/opt-out"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out = user_info(&body, &user, "OPTED_OUT", false);
    assert!(
        out["opt_out_ts"].as_i64().unwrap() > 0 && out["opt_in_ts"] == 0,
        "{out}"
    );
    let (status, body) = verify(new_call().await, by_phone.clone(), GENUINE).await;
    assert_eq!(on_demand(status, &body)["bio_result"], "ERROR", "{body}");
    let (status, body) = d.api.delete(key, &users).await;
    assert_eq!(
        (status, body["deleted"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    let (status, _) = d.api.get(key, &format!("{users}/biokeys")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the biokeys went with the user"
    );
    assert!(d.store.biokeys("wayne", &user).await.unwrap().is_empty());
    let (status, body) = verify(new_call().await, by_phone, GENUINE).await;
    assert_eq!(
        on_demand(status, &body)["error_type"],
        "user_not_found",
        "{body}"
    );
    // The number is free again.
    let (status, body) = upload(
        d,
        key,
        "/vb/v1/users/enroll",
        &[("biokeys", stolen.to_string())],
        IMPOSTOR,
    )
    .await;
    assert_ne!(body["error"], "biokey_taken", "{status}: {body}");
}
