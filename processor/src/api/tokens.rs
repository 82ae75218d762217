//! Voice tokens: short-lived HS256 JWTs minted after an accepted challenge.
//! Single use is enforced by spending the token id in the store.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Claims of a voice token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceClaims {
    /// User the voice was verified for.
    pub sub: String,
    /// Tenant of the user.
    pub tenant: String,
    /// Token id, spent on first verification.
    pub jti: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Decision that earned the token.
    pub request_id: String,
}

/// Signs and checks voice tokens with one key.
#[derive(Clone)]
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

impl TokenSigner {
    /// A signer with `key`; an empty key gets a random one (tokens then
    /// verify only in this process).
    pub fn new(key: &[u8], ttl_secs: u64) -> Self {
        let key = if key.is_empty() {
            let mut k = vec![0u8; 32];
            rand::rng().fill_bytes(&mut k);
            k
        } else {
            key.to_vec()
        };
        Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            ttl_secs: ttl_secs as i64,
        }
    }

    /// Mints a token for `user_id` at `now_secs`.
    pub fn mint(
        &self,
        tenant: &str,
        user_id: &str,
        request_id: &str,
        now_secs: i64,
    ) -> (String, VoiceClaims) {
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let claims = VoiceClaims {
            sub: user_id.to_string(),
            tenant: tenant.to_string(),
            jti: hex::encode(jti),
            iat: now_secs,
            exp: now_secs + self.ttl_secs,
            request_id: request_id.to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("hs256 signing cannot fail");
        (token, claims)
    }

    /// The claims of a well-signed, unexpired token.
    pub fn check(&self, token: &str) -> Option<VoiceClaims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<VoiceClaims>(token, &self.decoding, &validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_only_under_their_key_and_before_expiry() {
        let signer = TokenSigner::new(b"k", 60);
        let now = crate::domain::now_ms() / 1000;
        let (token, claims) = signer.mint("acme", "u1", "r1", now);
        assert_eq!(signer.check(&token), Some(claims));
        assert_eq!(TokenSigner::new(b"other", 60).check(&token), None);
        let (old, _) = signer.mint("acme", "u1", "r1", now - 120);
        assert_eq!(signer.check(&old), None, "expired");
        let mut tampered = token.clone();
        tampered.pop();
        assert_eq!(signer.check(&tampered), None);
        assert_eq!(signer.check("not-a-jwt"), None);
    }
}
