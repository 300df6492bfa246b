//! Stripe's `Idempotency-Key` semantics for one API key (account).
//!
//! A key is first *claimed* (in flight) before the request body is read, so a
//! concurrent request with the same key is answered 409 whatever its
//! parameters. When the endpoint finishes, its response is either *saved*
//! (replayed byte for byte to later requests with the same endpoint and
//! parameters, for 24 hours) or the claim is *released* (nothing saved: the
//! request failed before the endpoint ran, or with a 5xx).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;

/// How long a saved response is replayed; Stripe prunes keys after at least
/// 24 hours.
pub(crate) const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Stripe's limit on the length of an idempotency key.
pub(crate) const MAX_KEY_LEN: usize = 255;

/// A response saved under an idempotency key.
#[derive(Debug, Clone)]
pub(crate) struct Saved {
    /// `"POST /v1/payment_intents"`: a key reused on another endpoint is an
    /// idempotency error.
    pub endpoint: String,
    /// The request's parameters in canonical order.
    pub fingerprint: Vec<(String, String)>,
    pub status: StatusCode,
    pub body: Bytes,
    /// `Request-Id` of the request that produced the response, replayed as
    /// `Original-Request`.
    pub request_id: String,
    pub saved_at: Instant,
}

impl Saved {
    /// Whether a retry is "the same request": same endpoint, same parameters.
    pub(crate) fn matches(&self, endpoint: &str, fingerprint: &[(String, String)]) -> bool {
        self.endpoint == endpoint && self.fingerprint == fingerprint
    }
}

#[derive(Debug)]
enum Entry {
    InFlight,
    Saved(Saved),
}

/// What a new request with a key finds.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The key was free and is now claimed by this request.
    Fresh,
    /// Another request with this key is executing.
    InUse,
    /// A response was saved under this key.
    Saved(Saved),
}

/// The idempotency keys of one account.
#[derive(Debug, Default)]
pub(crate) struct IdempotencyTable {
    entries: HashMap<String, Entry>,
    /// Saved keys, oldest first, so expiry pops from the front instead of
    /// scanning every key on every request.
    saved_order: VecDeque<(Instant, String)>,
}

impl IdempotencyTable {
    /// Looks `key` up at time `now`, claiming it when free. Saved responses
    /// older than [`RETENTION`] are forgotten first, so the key is free again.
    pub(crate) fn claim(&mut self, key: &str, now: Instant) -> Claim {
        while let Some((saved_at, _)) = self.saved_order.front() {
            if now.saturating_duration_since(*saved_at) < RETENTION {
                break;
            }
            let Some((saved_at, old)) = self.saved_order.pop_front() else {
                break;
            };
            // Only the save this queue entry stands for expires.
            if matches!(self.entries.get(&old), Some(Entry::Saved(s)) if s.saved_at == saved_at) {
                self.entries.remove(&old);
            }
        }
        match self.entries.get(key) {
            Some(Entry::InFlight) => Claim::InUse,
            Some(Entry::Saved(saved)) => Claim::Saved(saved.clone()),
            None => {
                self.entries.insert(key.to_owned(), Entry::InFlight);
                Claim::Fresh
            }
        }
    }

    /// Saves the response of the request that claimed `key`.
    pub(crate) fn save(&mut self, key: &str, saved: Saved) {
        self.saved_order.push_back((saved.saved_at, key.to_owned()));
        self.entries.insert(key.to_owned(), Entry::Saved(saved));
    }

    /// Releases a claim without saving anything. A saved response is never
    /// removed by this.
    pub(crate) fn release(&mut self, key: &str) {
        if matches!(self.entries.get(key), Some(Entry::InFlight)) {
            self.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(at: Instant) -> Saved {
        Saved {
            endpoint: "POST /v1/refunds".into(),
            fingerprint: vec![("amount".into(), "5".into())],
            status: StatusCode::OK,
            body: Bytes::from_static(b"{}"),
            request_id: "req_1".into(),
            saved_at: at,
        }
    }

    #[test]
    fn a_claimed_key_is_in_use_until_saved_or_released() {
        let now = Instant::now();
        let mut table = IdempotencyTable::default();
        assert!(matches!(table.claim("k", now), Claim::Fresh));
        assert!(matches!(table.claim("k", now), Claim::InUse));
        table.release("k");
        assert!(matches!(table.claim("k", now), Claim::Fresh));
        table.save("k", saved(now));
        match table.claim("k", now) {
            Claim::Saved(found) => assert_eq!(found.request_id, "req_1"),
            other => panic!("expected the saved response, got {other:?}"),
        }
        table.release("k");
        assert!(matches!(table.claim("k", now), Claim::Saved(_)));
    }

    #[test]
    fn saved_responses_expire_after_retention() {
        let now = Instant::now();
        let mut table = IdempotencyTable::default();
        table.save("k", saved(now));
        let later = now + RETENTION + Duration::from_secs(1);
        assert!(matches!(table.claim("k", later), Claim::Fresh));
    }

    #[test]
    fn same_request_means_same_endpoint_and_parameters() {
        let entry = saved(Instant::now());
        let params = vec![("amount".to_owned(), "5".to_owned())];
        assert!(entry.matches("POST /v1/refunds", &params));
        assert!(!entry.matches("POST /v1/payment_intents", &params));
        assert!(!entry.matches("POST /v1/refunds", &[]));
    }
}
