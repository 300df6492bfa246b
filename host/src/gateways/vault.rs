//! The secret vault: gateway credentials and webhook secrets are sealed with
//! XChaCha20-Poly1305 under the operator's master key before they touch the
//! database, and opened only for the duration of a component call.
//!
//! Every ciphertext records the id of the key that sealed it (rotation: add a
//! new active key, keep the old ones for opening) and is bound by associated
//! data to the tenant, provider and purpose it belongs to, so a ciphertext
//! copied onto another tenant's row does not open.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Length of a master key in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Why sealing or opening failed. Never carries secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("no master key with id `{0}` is configured")]
    UnknownKey(String),
    #[error("ciphertext is malformed or was not sealed for this tenant/provider")]
    Corrupt,
    #[error("master key `{0}` must be {KEY_LEN} bytes, base64-encoded")]
    BadKey(String),
}

/// A sealed secret: which key sealed it, and nonce ‖ ciphertext ‖ tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the master key used.
    pub key_id: String,
    /// `nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({}, {} bytes)", self.key_id, self.bytes.len())
    }
}

/// Master keys by id, and the id new secrets are sealed with.
#[derive(Clone)]
pub struct Vault {
    active: String,
    keys: BTreeMap<String, [u8; KEY_LEN]>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("active", &self.active)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Vault {
    /// A vault sealing with `active` (which must be among `keys`).
    pub fn new(active: &str, keys: BTreeMap<String, [u8; KEY_LEN]>) -> Result<Vault, VaultError> {
        if !keys.contains_key(active) {
            return Err(VaultError::UnknownKey(active.to_string()));
        }
        Ok(Vault {
            active: active.to_string(),
            keys,
        })
    }

    /// Decode a base64 master key.
    pub fn decode_key(id: &str, b64: &str) -> Result<[u8; KEY_LEN], VaultError> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| VaultError::BadKey(id.to_string()))?;
        raw.try_into()
            .map_err(|_| VaultError::BadKey(id.to_string()))
    }

    /// A fresh random key, base64-encoded (for `payhost` to generate a
    /// development key file).
    pub fn generate_key() -> String {
        use base64::Engine;
        let key: [u8; KEY_LEN] = rand::random();
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    fn cipher(&self, key_id: &str) -> Result<XChaCha20Poly1305, VaultError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| VaultError::UnknownKey(key_id.to_string()))?;
        Ok(XChaCha20Poly1305::new(key.into()))
    }

    /// Seal `plaintext` for the given binding (e.g. `tenant/provider/credentials`).
    pub fn seal(&self, binding: &str, plaintext: &[u8]) -> Sealed {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let cipher = self
            .cipher(&self.active)
            .expect("the active key exists (checked in Vault::new)");
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: binding.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ct);
        Sealed {
            key_id: self.active.clone(),
            bytes,
        }
    }

    /// A keyed fingerprint of `plaintext`, to tell two secrets apart
    /// without storing either: HMAC-SHA256 under a key derived from master
    /// key `key_id` (never the sealing key itself), bound to `binding`.
    /// `<key id>:<32 hex digits>`. The same secret under another master key
    /// gives another fingerprint.
    pub fn fingerprint(
        &self,
        key_id: &str,
        binding: &str,
        plaintext: &[u8],
    ) -> Result<String, VaultError> {
        use hmac::{Hmac, Mac};
        type HmacSha256 = Hmac<sha2::Sha256>;
        let master = self
            .keys
            .get(key_id)
            .ok_or_else(|| VaultError::UnknownKey(key_id.to_string()))?;
        let mut derive =
            <HmacSha256 as Mac>::new_from_slice(master).expect("HMAC takes a key of any length");
        derive.update(b"payhost fingerprint key v1");
        let subkey = derive.finalize().into_bytes();
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&subkey).expect("HMAC takes a key of any length");
        mac.update(binding.as_bytes());
        mac.update(&[0]);
        mac.update(plaintext);
        let tag = mac.finalize().into_bytes();
        Ok(format!("{key_id}:{}", hex::encode(&tag[..16])))
    }

    /// Open a sealed secret; fails if it was sealed for another binding,
    /// tampered with, or under a key this vault does not hold.
    pub fn open(&self, binding: &str, sealed: &Sealed) -> Result<Vec<u8>, VaultError> {
        if sealed.bytes.len() < NONCE_LEN + 16 {
            return Err(VaultError::Corrupt);
        }
        let (nonce, ct) = sealed.bytes.split_at(NONCE_LEN);
        self.cipher(&sealed.key_id)?
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: binding.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Corrupt)
    }

    /// Id of the key new secrets are sealed with.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }
}

/// Show only enough of a secret to recognise it: the last four characters,
/// and only for secrets of 16 or more characters (`…4242`); shorter ones
/// show nothing.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 16 {
        return "****".to_string();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(active: &str) -> Vault {
        let mut keys = BTreeMap::new();
        keys.insert("k1".to_string(), [1u8; KEY_LEN]);
        keys.insert("k2".to_string(), [2u8; KEY_LEN]);
        Vault::new(active, keys).unwrap()
    }

    #[test]
    fn round_trip_and_ciphertext_hides_plaintext() {
        let v = vault("k1");
        let sealed = v.seal("ten_a/stripe/credentials", b"sk_test_secret");
        assert_eq!(sealed.key_id, "k1");
        assert!(
            !sealed
                .bytes
                .windows(b"sk_test".len())
                .any(|w| w == b"sk_test")
        );
        assert_eq!(
            v.open("ten_a/stripe/credentials", &sealed).unwrap(),
            b"sk_test_secret"
        );
    }

    #[test]
    fn binding_tampering_and_unknown_keys_fail() {
        let v = vault("k1");
        let sealed = v.seal("ten_a/stripe/credentials", b"x");
        assert_eq!(
            v.open("ten_b/stripe/credentials", &sealed),
            Err(VaultError::Corrupt)
        );
        let mut tampered = sealed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert_eq!(
            v.open("ten_a/stripe/credentials", &tampered),
            Err(VaultError::Corrupt)
        );
        let foreign = Sealed {
            key_id: "k9".into(),
            bytes: sealed.bytes.clone(),
        };
        assert_eq!(
            v.open("ten_a/stripe/credentials", &foreign),
            Err(VaultError::UnknownKey("k9".into()))
        );
    }

    #[test]
    fn rotation_opens_old_ciphertexts() {
        let old = vault("k1").seal("b", b"old secret");
        let rotated = vault("k2");
        assert_eq!(rotated.open("b", &old).unwrap(), b"old secret");
        assert_eq!(rotated.seal("b", b"new").key_id, "k2");
    }

    #[test]
    fn masking_keeps_only_the_edges() {
        assert_eq!(mask("sk_test_51Habcdef4242"), "…4242");
        assert_eq!(mask("sk_test_123456789"), "…6789");
        assert_eq!(mask("fifteen_chars_x"), "****");
    }

    #[test]
    fn fingerprints_tell_secrets_apart_without_showing_them() {
        let key = |_| Vault::decode_key("k", &Vault::generate_key()).expect("key");
        let vault = Vault::new(
            "k1",
            [("k1".to_string(), key(1)), ("k2".to_string(), key(2))].into(),
        )
        .expect("vault");
        let a = vault
            .fingerprint("k1", "t/stripe/credentials", b"sk_test_a")
            .expect("a");
        assert_eq!(
            a,
            vault
                .fingerprint("k1", "t/stripe/credentials", b"sk_test_a")
                .expect("again")
        );
        assert!(a.starts_with("k1:") && a.len() == 3 + 32, "{a}");
        assert!(!a.contains("sk_test_a"));
        for other in [
            vault.fingerprint("k1", "t/stripe/credentials", b"sk_test_b"),
            vault.fingerprint("k1", "u/stripe/credentials", b"sk_test_a"),
            vault.fingerprint("k2", "t/stripe/credentials", b"sk_test_a"),
        ] {
            assert_ne!(a[3..], other.expect("other")[3..]);
        }
        assert_eq!(
            vault.fingerprint("k9", "t/stripe/credentials", b"sk_test_a"),
            Err(VaultError::UnknownKey("k9".into()))
        );
    }
}
