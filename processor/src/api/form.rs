//! Multipart uploads: text fields plus one WAV `audio` part.

use std::collections::HashMap;

use axum::extract::Multipart;
use axum::extract::multipart::MultipartError;
use axum::http::StatusCode;

use super::ApiError;
use crate::audio::is_wav_container;

/// MIME types a WAV upload may declare (`application/octet-stream` is what
/// many clients send for files; the bytes are checked either way).
const WAV_TYPES: &[&str] = &[
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
    "audio/vnd.wave",
    "application/octet-stream",
];

/// A parsed upload form.
pub struct AudioForm {
    fields: HashMap<String, String>,
    /// The WAV bytes of the `audio` part.
    pub audio: Vec<u8>,
}

impl AudioForm {
    /// A required text field.
    pub fn required(&self, name: &'static str) -> Result<&str, ApiError> {
        self.optional(name).ok_or_else(|| missing_field(name))
    }

    /// An optional text field (empty counts as absent).
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the upload is larger than the configured limit",
        );
    }
    ApiError::bad_request("invalid_multipart", e.body_text())
}

/// Reads every part; the `audio` part must be WAV by declared type and bytes.
pub async fn read(
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<AudioForm, ApiError> {
    let (fields, audio) = read_parts(multipart, WAV_TYPES).await?;
    let audio = audio.ok_or_else(|| {
        ApiError::bad_request(
            "missing_field",
            "form field `audio` (a WAV file) is required",
        )
    })?;
    Ok(AudioForm { fields, audio })
}

/// Text fields by name, and the `audio` part when there is one: WAV by its
/// bytes, and by its declared type when it declares one (`wav_types`).
pub async fn read_parts(
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
    wav_types: &[&str],
) -> Result<(HashMap<String, String>, Option<Vec<u8>>), ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected multipart/form-data: {}", e.body_text()),
        )
    })?;
    let mut fields = HashMap::new();
    let mut audio = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "audio" {
            let declared = field.content_type().map(|t| t.to_ascii_lowercase());
            if let Some(t) = &declared {
                let essence = t.split(';').next().unwrap_or_default().trim();
                if !wav_types.contains(&essence) {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        format!("audio must be WAV (audio/wav), got {essence}"),
                    ));
                }
            }
            let bytes = field.bytes().await.map_err(multipart_error)?;
            if !is_wav_container(&bytes) {
                return Err(ApiError::bad_request(
                    "not_wav",
                    "audio is not a RIFF/WAVE file",
                ));
            }
            audio = Some(bytes.to_vec());
        } else {
            let text = field.text().await.map_err(multipart_error)?;
            fields.insert(name, text);
        }
    }
    Ok((fields, audio))
}

/// `400 missing_field` naming the absent form field.
pub fn missing_field(name: &str) -> ApiError {
    ApiError::bad_request("missing_field", format!("form field `{name}` is required"))
}
