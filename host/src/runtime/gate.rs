//! Holding a call's outbound requests until the host says they may leave.
//!
//! A checkout starts its component call while the pending order is still
//! being committed, so that instantiating the component and running it up to
//! its first request overlap the commit's fsync. But no byte may reach the
//! gateway before that order is durable, or a crash could leave a charge the
//! ledger knows nothing of. So the call carries a [`SendGate`] (attached
//! before instantiation): every outbound request waits for it just before
//! its connection is taken, after the policy checks. If the order could not
//! be stored, the gate is refused and the request is denied without any I/O.
//! If the call's deadline strikes while a request is held, the checkout
//! seals the gate, which tells it that nothing was sent and keeps it so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::watch;

/// The host's side: says whether the held requests may leave. Dropping it
/// without a word refuses them.
#[derive(Debug)]
pub struct GateOpener(watch::Sender<Option<bool>>);

/// The call's side: awaited before each outbound request. Clones share
/// whether any request has passed.
#[derive(Debug, Clone)]
pub struct SendGate {
    word: watch::Receiver<Option<bool>>,
    /// [`UNUSED`], [`PASSED`] or [`SEALED`].
    state: Arc<AtomicU8>,
}

/// No request has passed yet.
const UNUSED: u8 = 0;
/// A request passed: something may have reached the network.
const PASSED: u8 = 1;
/// Closed for good before anything passed: nothing was or will be sent.
const SEALED: u8 = 2;

/// A closed gate and the handle that opens (or refuses) it.
pub fn send_gate() -> (GateOpener, SendGate) {
    let (opener, word) = watch::channel(None);
    (
        GateOpener(opener),
        SendGate {
            word,
            state: Arc::new(AtomicU8::new(UNUSED)),
        },
    )
}

impl GateOpener {
    /// Let the held requests (and every later one of the call) leave.
    pub fn open(self) {
        self.0.send_replace(Some(true));
    }

    /// Deny the held requests (and every later one of the call).
    pub fn refuse(self) {
        self.0.send_replace(Some(false));
    }
}

impl SendGate {
    /// Waits for the host's word: `true` when the request may leave (it is
    /// then counted as passed). A sealed gate lets nothing through.
    pub(crate) async fn wait(&mut self) -> bool {
        let open = loop {
            if let Some(open) = *self.word.borrow_and_update() {
                break open;
            }
            if self.word.changed().await.is_err() {
                // The opener is gone: whatever it said last stands, and
                // silence is a refusal.
                break self.word.borrow().unwrap_or(false);
            }
        };
        open && self
            .state
            .compare_exchange(UNUSED, PASSED, Ordering::SeqCst, Ordering::SeqCst)
            .map_or_else(|now| now == PASSED, |_| true)
    }

    /// Closes the gate for good unless a request already passed. `true`
    /// means nothing of this call was sent, and nothing will be (e.g. after
    /// a deadline struck while a request was held); `false`, that a request
    /// passed and may have reached the network.
    pub fn seal_if_unused(&self) -> bool {
        match self
            .state
            .compare_exchange(UNUSED, SEALED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(now) => now == SEALED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gate_waits_for_its_opener_and_silence_refuses() {
        let (opener, mut gate) = send_gate();
        let probe = gate.clone();
        let held = tokio::spawn(async move { gate.wait().await });
        // On this single-threaded runtime the waiter runs to its await point.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!held.is_finished(), "a closed gate lets nothing through");
        opener.open();
        assert!(held.await.expect("task"));
        assert!(!probe.seal_if_unused(), "clones share what passed");

        let (opener, mut gate) = send_gate();
        opener.refuse();
        assert!(!gate.wait().await);
        assert!(gate.seal_if_unused(), "nothing passed a refused gate");

        let (opener, mut gate) = send_gate();
        drop(opener);
        assert!(!gate.wait().await, "an opener dropped unheard refuses");

        let (opener, gate) = send_gate();
        opener.open();
        let mut later = gate.clone();
        assert!(
            later.wait().await,
            "the word stands after the opener is gone"
        );
    }

    #[tokio::test]
    async fn a_sealed_gate_stays_shut_when_the_opener_says_yes_later() {
        let (opener, mut gate) = send_gate();
        assert!(gate.seal_if_unused(), "nothing passed yet");
        assert!(gate.seal_if_unused(), "sealing twice agrees");
        opener.open();
        assert!(!gate.wait().await, "an open word does not unseal");
        assert!(gate.seal_if_unused(), "still nothing passed");
    }
}
