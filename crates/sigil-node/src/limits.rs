//! Admission control: how many sessions of each kind run at once on this
//! node, how many may wait, and how many one peer may hold open.
//!
//! Every session this node takes part in (one it coordinates and one it
//! joins alike) is admitted per kind ([`SessionKind`]): at most `running`
//! at once, at most `queued` waiting for a slot (until the session's
//! deadline; a session a peer proposed waits at most [`PEER_QUEUE_WAIT`],
//! so two nodes each waiting for the other's slot do not stall). A session past both is refused at once with
//! [`SessionError::Busy`] (REST 503 `busy`, gRPC `ResourceExhausted`)
//! instead of timing out later, and so is a proposal from a peer that
//! already holds `sessions_per_peer` sessions open here. Limits are set in
//! `[limits]` and reported in `/metrics` (`sigil_session_limit`,
//! `sigil_sessions_running`, `sigil_sessions_queued`,
//! `sigil_sessions_busy_total`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::SessionError;

/// The kinds of session admitted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// FROST or CGGMP21 key generation.
    Dkg,
    /// Signing (FROST, full CGGMP21, or from a pooled presignature).
    Sign,
    /// CGGMP21 presigning for the pool.
    Presign,
    /// CGGMP21 aux info generation.
    Aux,
    /// One attempt of a threshold Paillier key generation.
    PaillierAttempt,
    /// Threshold Paillier decryption.
    Decrypt,
}

impl SessionKind {
    /// Every kind.
    pub const ALL: [SessionKind; 6] = [
        SessionKind::Dkg,
        SessionKind::Sign,
        SessionKind::Presign,
        SessionKind::Aux,
        SessionKind::PaillierAttempt,
        SessionKind::Decrypt,
    ];

    /// The name in config, metrics and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Dkg => "dkg",
            SessionKind::Sign => "sign",
            SessionKind::Presign => "presign",
            SessionKind::Aux => "aux",
            SessionKind::PaillierAttempt => "paillier_attempt",
            SessionKind::Decrypt => "decrypt",
        }
    }
}

/// The limit of one kind.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KindLimit {
    /// Sessions running at once.
    pub running: usize,
    /// Sessions waiting for a slot; one more is refused as busy.
    pub queued: usize,
}

/// `[limits]` of a node's config. Counts are sessions; bytes are bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Key generations (default 8 running, 32 queued).
    pub dkg: KindLimit,
    /// Signatures (default 64 running, 1024 queued).
    pub sign: KindLimit,
    /// Presigning sessions, about 1 s of CPU each (default 2, 4).
    pub presign: KindLimit,
    /// Aux info sessions, seconds of CPU each (default 2, 4).
    pub aux: KindLimit,
    /// Paillier key generation attempts (default 2, 4).
    pub paillier_attempt: KindLimit,
    /// Paillier decryptions (default 16, 256).
    pub decrypt: KindLimit,
    /// Sessions one peer may hold open here at once, as their
    /// coordinator (default 128).
    pub sessions_per_peer: usize,
    /// Key generations one client may have running at once through this
    /// node (default 4).
    pub keygens_per_client: usize,
    /// Peer server: concurrent HTTP/2 streams per connection (default 512).
    pub peer_max_concurrent_streams: u32,
    /// Peer server: requests served at once per connection (default 512).
    pub peer_concurrency_per_connection: usize,
    /// Largest peer message accepted, in bytes (default 2 MiB: the largest
    /// protocol message is a Paillier sieve share at 4096 bits, about
    /// 850 KB; CGGMP21 aux info messages are about 210 KB).
    pub peer_max_message_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = |running, queued| KindLimit { running, queued };
        LimitsConfig {
            dkg: l(8, 32),
            sign: l(64, 1024),
            presign: l(2, 4),
            aux: l(2, 4),
            paillier_attempt: l(2, 4),
            decrypt: l(16, 256),
            sessions_per_peer: 128,
            keygens_per_client: 4,
            peer_max_concurrent_streams: 512,
            peer_concurrency_per_connection: 512,
            peer_max_message_bytes: 2 * 1024 * 1024,
        }
    }
}

impl LimitsConfig {
    /// The limit of `kind`.
    pub fn of(&self, kind: SessionKind) -> KindLimit {
        match kind {
            SessionKind::Dkg => self.dkg,
            SessionKind::Sign => self.sign,
            SessionKind::Presign => self.presign,
            SessionKind::Aux => self.aux,
            SessionKind::PaillierAttempt => self.paillier_attempt,
            SessionKind::Decrypt => self.decrypt,
        }
    }
}

struct Gate {
    kind: SessionKind,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// How long a session a peer proposed waits for a slot at most.
pub const PEER_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// A place in a gate's queue, given back when dropped (also when the
/// waiting session is cancelled).
struct Waiting<'a>(&'a Gate);

impl<'a> Waiting<'a> {
    fn join(gate: &'a Gate) -> Option<Self> {
        if gate.waiting.fetch_add(1, Ordering::AcqRel) >= gate.max_waiting {
            gate.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        metrics::gauge!("sigil_sessions_queued", "kind" => gate.kind.as_str()).increment(1.0);
        Some(Waiting(gate))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("sigil_sessions_queued", "kind" => self.0.kind.as_str()).decrement(1.0);
    }
}

/// Open sessions per proposing peer.
type PeerCounts = Counts<u16>;

/// Something held per owner (a peer, a client), counted.
pub type Counts<K> = Arc<Mutex<HashMap<K, usize>>>;

/// One place in an owner's count, given back when dropped.
pub struct Place<K: std::hash::Hash + Eq> {
    key: K,
    counts: Counts<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Place<K> {
    /// Takes a place of `key` in `counts` if it holds fewer than `max`;
    /// otherwise returns how many it holds.
    ///
    /// # Errors
    /// The count `key` already holds, when it is `max` or more.
    pub fn claim(counts: &Counts<K>, key: &K, max: usize) -> Result<Self, usize> {
        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(key.clone()).or_insert(0);
        if *n >= max {
            return Err(*n);
        }
        *n += 1;
        Ok(Place {
            key: key.clone(),
            counts: counts.clone(),
        })
    }
}

impl<K: std::hash::Hash + Eq> Drop for Place<K> {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.key);
            }
        }
    }
}

/// The admission state of one node.
pub struct Admission {
    gates: HashMap<SessionKind, Gate>,
    per_peer: PeerCounts,
    max_per_peer: usize,
}

/// A session's admission: its slot and its place in its peer's count,
/// both given back when dropped.
pub struct Ticket {
    _slot: OwnedSemaphorePermit,
    _peer: Option<Place<u16>>,
    kind: SessionKind,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        metrics::gauge!("sigil_sessions_running", "kind" => self.kind.as_str()).decrement(1.0);
    }
}

impl Admission {
    /// The admission state for `cfg`; publishes the limits as gauges.
    pub fn new(cfg: &LimitsConfig) -> Self {
        let gates = SessionKind::ALL
            .iter()
            .map(|&kind| {
                let l = cfg.of(kind);
                metrics::gauge!("sigil_session_limit", "kind" => kind.as_str(), "bound" => "running")
                    .set(l.running as f64);
                metrics::gauge!("sigil_session_limit", "kind" => kind.as_str(), "bound" => "queued")
                    .set(l.queued as f64);
                let gate = Gate {
                    kind,
                    slots: Arc::new(Semaphore::new(l.running)),
                    waiting: AtomicUsize::new(0),
                    max_waiting: l.queued,
                };
                (kind, gate)
            })
            .collect();
        Admission {
            gates,
            per_peer: Arc::default(),
            max_per_peer: cfg.sessions_per_peer,
        }
    }

    /// Admits a session of `kind` proposed by `peer` (`None`: this node's
    /// own), waiting for a slot until `deadline` if the queue has room.
    ///
    /// # Errors
    /// [`SessionError::Busy`] naming this node (`me`) when the peer holds
    /// too many sessions, the queue is full, or no slot frees up in time.
    pub async fn admit(
        &self,
        me: u16,
        kind: SessionKind,
        peer: Option<u16>,
        deadline: Instant,
    ) -> Result<Ticket, SessionError> {
        let busy = |why: &str| {
            metrics::counter!("sigil_sessions_busy_total", "kind" => kind.as_str()).increment(1);
            SessionError::Busy {
                node: me,
                reason: format!("{} sessions: {why}", kind.as_str()),
            }
        };
        let gate = self.gates.get(&kind).ok_or_else(|| busy("no limit configured"))?;
        // From here on, dropping the place gives it back.
        let place = match peer {
            Some(p) => Some(
                Place::claim(&self.per_peer, &p, self.max_per_peer)
                    .map_err(|n| busy(&format!("node {p} holds {n} sessions open here")))?,
            ),
            None => None,
        };
        let slot = match gate.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let Some(_waiting) = Waiting::join(gate) else {
                    return Err(busy("the queue is full"));
                };
                // A peer's session waits briefly: its other parties hold
                // their slots meanwhile, and two nodes each waiting for the
                // other's slot must not stall until the deadline.
                let until = match peer {
                    Some(_) => deadline.min(Instant::now() + PEER_QUEUE_WAIT),
                    None => deadline,
                };
                match tokio::time::timeout_at(until, gate.slots.clone().acquire_owned()).await {
                    Ok(Ok(slot)) => slot,
                    _ => return Err(busy("no slot in time")),
                }
            }
        };
        metrics::gauge!("sigil_sessions_running", "kind" => gate.kind.as_str()).increment(1.0);
        Ok(Ticket {
            _slot: slot,
            _peer: place,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> LimitsConfig {
        LimitsConfig {
            presign: KindLimit { running: 1, queued: 1 },
            sessions_per_peer: 3,
            ..LimitsConfig::default()
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_busy_at_once_and_slots_come_back() {
        let a = Admission::new(&cfg());
        let soon = Instant::now() + Duration::from_secs(5);
        let first = a.admit(0, SessionKind::Presign, Some(1), soon).await;
        assert!(first.is_ok());
        // The second waits in the queue; the third finds it full.
        let (second, third) = tokio::join!(a.admit(0, SessionKind::Presign, Some(2), soon), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = Instant::now();
            let r = a.admit(0, SessionKind::Presign, Some(2), soon).await;
            assert!(started.elapsed() < Duration::from_millis(100), "refused at once");
            drop(first);
            r
        });
        assert!(second.is_ok());
        assert!(matches!(third, Err(SessionError::Busy { node: 0, .. })));
        // Other kinds are not affected.
        assert!(a.admit(0, SessionKind::Sign, Some(1), soon).await.is_ok());
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_queue_place_back() {
        let a = Admission::new(&cfg());
        let soon = Instant::now() + Duration::from_secs(5);
        let held = a.admit(0, SessionKind::Presign, None, soon).await;
        assert!(held.is_ok());
        for _ in 0..3 {
            // Waits in the queue, then is dropped (cancelled).
            let r = tokio::time::timeout(Duration::from_millis(20), a.admit(0, SessionKind::Presign, None, soon)).await;
            assert!(r.is_err(), "still waiting when cancelled");
        }
        let gate = a
            .gates
            .get(&SessionKind::Presign)
            .map(|g| g.waiting.load(Ordering::Acquire));
        assert_eq!(gate, Some(0), "no queue place leaked");
    }

    #[tokio::test]
    async fn a_peer_session_waits_briefly_for_a_slot() {
        let a = Admission::new(&cfg());
        let later = Instant::now() + Duration::from_secs(30);
        let held = a.admit(0, SessionKind::Presign, None, later).await;
        assert!(held.is_ok());
        let started = Instant::now();
        let r = a.admit(0, SessionKind::Presign, Some(1), later).await;
        assert!(matches!(r, Err(SessionError::Busy { .. })));
        assert!(started.elapsed() < PEER_QUEUE_WAIT + Duration::from_millis(300));
    }

    #[tokio::test]
    async fn one_peer_holds_at_most_its_share() {
        let a = Admission::new(&cfg());
        let soon = Instant::now() + Duration::from_secs(5);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(a.admit(0, SessionKind::Sign, Some(1), soon).await);
        }
        assert!(held.iter().all(Result::is_ok));
        assert!(matches!(
            a.admit(0, SessionKind::Sign, Some(1), soon).await,
            Err(SessionError::Busy { .. })
        ));
        assert!(
            a.admit(0, SessionKind::Sign, Some(2), soon).await.is_ok(),
            "another peer"
        );
        assert!(
            a.admit(0, SessionKind::Sign, None, soon).await.is_ok(),
            "this node's own"
        );
        held.pop();
        assert!(
            a.admit(0, SessionKind::Sign, Some(1), soon).await.is_ok(),
            "a place came back"
        );
    }
}
