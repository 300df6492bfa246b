//! Holding a call's outbound requests until the host says they may leave.
//!
//! A checkout starts its component call while the pending order is still
//! being committed, so that opening the credentials, instantiating the
//! component and building the request overlap the commit's fsync. But no
//! byte may reach the gateway before that order is durable,
//! or a crash could leave a charge the ledger knows nothing of. So the call
//! carries a [`SendGate`]: every outbound request waits for it just before
//! its connection is taken, after the policy checks. If the order could not
//! be stored, the gate is refused and the request is denied without any I/O.

use tokio::sync::watch;

/// The host's side: says whether the held requests may leave. Dropping it
/// without a word refuses them.
#[derive(Debug)]
pub struct GateOpener(watch::Sender<Option<bool>>);

/// The call's side: awaited before each outbound request.
#[derive(Debug, Clone)]
pub struct SendGate(watch::Receiver<Option<bool>>);

/// A closed gate and the handle that opens (or refuses) it.
pub fn send_gate() -> (GateOpener, SendGate) {
    let (opener, gate) = watch::channel(None);
    (GateOpener(opener), SendGate(gate))
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
    /// Waits for the host's word: `true` when requests may leave.
    pub(crate) async fn wait(&mut self) -> bool {
        loop {
            if let Some(open) = *self.0.borrow_and_update() {
                return open;
            }
            if self.0.changed().await.is_err() {
                // The opener is gone: whatever it said last stands, and
                // silence is a refusal.
                return self.0.borrow().unwrap_or(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gate_waits_for_its_opener_and_silence_refuses() {
        let (opener, mut gate) = send_gate();
        let held = tokio::spawn(async move { gate.wait().await });
        // On this single-threaded runtime the waiter runs to its await point.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!held.is_finished(), "a closed gate lets nothing through");
        opener.open();
        assert!(held.await.expect("task"));

        let (opener, mut gate) = send_gate();
        opener.refuse();
        assert!(!gate.wait().await);

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
}
