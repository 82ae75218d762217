//! API keys: `tmb_<key_id>_<secret>`. The key id is the lookup handle; the
//! secret is stored only as HMAC-SHA256 under the deployment's pepper and
//! compared in constant time.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use std::collections::BTreeSet;

use crate::domain::{ApiKey, Scope};

const PREFIX: &str = "tmb_";

/// Hashes and checks key secrets under one pepper.
#[derive(Clone)]
pub struct KeyHasher {
    pepper: Vec<u8>,
}

/// A freshly minted key: the plaintext is shown once and never stored.
pub struct MintedKey {
    /// What the caller sends (`tmb_<id>_<secret>`).
    pub plaintext: String,
    /// What the store keeps.
    pub record: ApiKey,
}

impl KeyHasher {
    /// A hasher under `pepper` (may be empty, which only loses the pepper's
    /// protection against offline checks of a stolen table).
    pub fn new(pepper: &[u8]) -> Self {
        Self {
            pepper: pepper.to_vec(),
        }
    }

    fn mac(&self, secret: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.pepper).expect("hmac takes any key");
        mac.update(secret.as_bytes());
        mac
    }

    /// Whether a pepper is configured.
    pub fn is_peppered(&self) -> bool {
        !self.pepper.is_empty()
    }

    /// Hex HMAC-SHA256 of length-prefixed `parts` under the pepper, within
    /// the domain `purpose`: stable for a deployment (lookups can match
    /// it), and not checkable offline without the pepper (a phone number
    /// cannot be guessed back from it).
    pub fn keyed_digest(&self, purpose: &str, parts: &[&str]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.pepper).expect("hmac takes any key");
        for part in std::iter::once(&purpose).chain(parts) {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// Mints a key for `tenant` with `scopes` (`None`: every scope).
    pub fn mint(
        &self,
        tenant: &str,
        name: &str,
        now: i64,
        expires_at: i64,
        scopes: Option<BTreeSet<Scope>>,
    ) -> MintedKey {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 24];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        let (key_id, secret) = (hex::encode(id), hex::encode(secret));
        let secret_hash = hex::encode(self.mac(&secret).finalize().into_bytes());
        MintedKey {
            plaintext: format!("{PREFIX}{key_id}_{secret}"),
            record: ApiKey {
                key_id,
                tenant: tenant.to_string(),
                name: name.to_string(),
                secret_hash,
                created_at: now,
                expires_at,
                scopes,
                enabled: true,
                retain_data: false,
            },
        }
    }

    /// Whether `secret` matches the stored hash (constant time).
    pub fn verify(&self, secret: &str, stored: &ApiKey) -> bool {
        let Ok(expected) = hex::decode(&stored.secret_hash) else {
            return false;
        };
        self.mac(secret).verify_slice(&expected).is_ok()
    }
}

/// Splits `tmb_<key_id>_<secret>`; `None` for anything else.
pub fn parse(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, 16) && hex_of(secret, 48)).then_some((id, secret))
}

/// The public handle of a key, `tmb_<key_id>`: what a listing may show
/// (the whole key starts with it; the secret is never shown again).
pub fn public_handle(key_id: &str) -> String {
    format!("{PREFIX}{key_id}")
}

/// The key id a caller named: a whole key, its public handle, or the id.
pub fn named_key_id(named: &str) -> Option<&str> {
    if let Some((id, _)) = parse(named) {
        return Some(id);
    }
    let id = named.strip_prefix(PREFIX).unwrap_or(named);
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_verify_only_with_their_secret_and_pepper() {
        let hasher = KeyHasher::new(b"pepper");
        let minted = hasher.mint("acme", "ci", 1, 0, None);
        assert!(!minted.record.secret_hash.contains(&minted.plaintext[21..]));
        let (id, secret) = parse(&minted.plaintext).expect("well formed");
        assert_eq!(id, minted.record.key_id);
        assert!(hasher.verify(secret, &minted.record));
        let mut wrong = secret.to_string();
        wrong.replace_range(0..1, if secret.starts_with('0') { "1" } else { "0" });
        assert!(!hasher.verify(&wrong, &minted.record));
        assert!(!KeyHasher::new(b"other").verify(secret, &minted.record));
        for bad in ["", "tmb_", "tmb_zz_yy", "Bearer x", &minted.plaintext[1..]] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_key_is_named_by_itself_its_handle_or_its_id() {
        let minted = KeyHasher::new(b"pepper").mint("acme", "ci", 1, 0, None);
        let id = minted.record.key_id.as_str();
        let handle = public_handle(id);
        assert!(minted.plaintext.starts_with(&handle));
        for named in [minted.plaintext.as_str(), handle.as_str(), id] {
            assert_eq!(named_key_id(named), Some(id), "{named}");
        }
        for bad in [
            "",
            "tmb_",
            "tmb_0123",
            "ak-OlRlRe8uNPUw0usbnIP2DBiafb0G",
            &id[1..],
        ] {
            assert_eq!(named_key_id(bad), None, "{bad}");
        }
    }
}
