//! Primitives for verifying webhook signatures: HMAC-SHA256, SHA-256, hex and
//! constant-time comparison.
//!
//! Most gateways sign webhooks with `HMAC-SHA256(secret, signed_payload)` and
//! send the digest hex-encoded. Always compare digests with
//! [`constant_time_eq`] (or [`verify_hmac_sha256_hex`]), never `==`: a
//! short-circuiting comparison leaks how many leading bytes matched.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// HMAC-SHA256 of `msg` under `secret`.
pub fn hmac_sha256(secret: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length (long keys are hashed), so this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// SHA-256 digest of `msg`.
pub fn sha256(msg: &[u8]) -> [u8; 32] {
    Sha256::digest(msg).into()
}

/// Lower-case hex encoding of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Decodes hex (either case); `None` when `s` is not valid hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

/// Compares two byte strings in time that depends only on their lengths, not
/// on where they differ. Different lengths compare unequal.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// True when `hex_signature` is the hex HMAC-SHA256 of `msg` under `secret`.
/// Invalid hex never matches. The comparison is constant-time.
pub fn verify_hmac_sha256_hex(secret: &[u8], msg: &[u8], hex_signature: &str) -> bool {
    let expected = hmac_sha256(secret, msg);
    match from_hex(hex_signature.trim()) {
        Some(given) => constant_time_eq(&expected, &given),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            to_hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            to_hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        assert_eq!(to_hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(from_hex("00ABff"), Some(vec![0x00, 0xab, 0xff]));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("abc"), None, "odd length");
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn verify_hex_signature() {
        let sig = to_hex(&hmac_sha256(b"whsec", b"payload"));
        assert!(verify_hmac_sha256_hex(b"whsec", b"payload", &sig));
        assert!(verify_hmac_sha256_hex(
            b"whsec",
            b"payload",
            &sig.to_uppercase()
        ));
        assert!(!verify_hmac_sha256_hex(b"whsec", b"payload!", &sig));
        assert!(!verify_hmac_sha256_hex(b"other", b"payload", &sig));
        assert!(!verify_hmac_sha256_hex(b"whsec", b"payload", "not-hex"));
    }
}
