//! Protocol sessions over the peer transport.
//!
//! A session is one run of one protocol by a fixed, ordered list of nodes.
//! [`Sessions`] holds the sessions this node has agreed to; an incoming
//! envelope is accepted only if
//! 1. its session is registered here,
//! 2. its `from` index names the node that the caller's certificate names,
//! 3. the protocol expects a message of its kind (broadcast or p2p to us)
//!    from that party in that round,
//! 4. it is the first for `(round, from)`, and
//! 5. its payload decodes to a message of that round.
//!
//! In a session with an external party ([`crate::relay`]), rule 2 reads:
//! the external party's index comes only from the session's relay, and
//! its message must carry the party's valid signature (and, point to
//! point, decrypt with this node's session key).
//!
//! Anything else is refused with a gRPC status, logged (without payload)
//! and counted in `sigil_peer_messages_rejected_total{reason}`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use round_based::{Incoming, MessageDestination, MessageType, MpcParty, Outgoing, ProtocolMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sigil_crypto::{PartyIndex, SessionId};
use tokio::time::Instant;

use crate::error::SessionError;
use crate::internal;
use crate::relay::ExternalSession;
use crate::transport::{DeliverError, Transport};
use sigil_crypto::relay::EXTERNAL_PARTY;
use sigil_proto::peer::Envelope;

/// Which message a party expects: `(round, from, me, n) -> kind`.
pub type ExpectFn = fn(u16, PartyIndex, PartyIndex, u16) -> Option<MessageType>;

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// No such session here (yet): the sender may retry.
    UnknownSession,
    /// The `from` index does not belong to the calling node.
    WrongSender,
    /// The protocol expects no such message from that party in that round.
    UnexpectedRound,
    /// A message for this `(round, from)` was already accepted.
    Duplicate,
    /// The payload does not decode to a message of that round.
    Garbage(String),
    /// A relayed message whose signature does not verify or whose
    /// payload does not decrypt.
    Unauthentic(String),
}

impl Reject {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::UnknownSession => "unknown_session",
            Reject::WrongSender => "wrong_sender",
            Reject::UnexpectedRound => "unexpected_round",
            Reject::Duplicate => "duplicate",
            Reject::Garbage(_) => "garbage",
            Reject::Unauthentic(_) => "unauthentic",
        }
    }
}

type DeliverFn = Box<dyn Fn(PartyIndex, u16, MessageType, &[u8]) -> Result<(), Reject> + Send + Sync>;

/// One registered session.
pub struct SessionEntry {
    parties: Arc<[u16]>,
    me: PartyIndex,
    expects: ExpectFn,
    seen: Mutex<HashSet<(u16, PartyIndex)>>,
    deliver: DeliverFn,
    external: Option<Arc<ExternalSession>>,
}

impl SessionEntry {
    fn n(&self) -> u16 {
        u16::try_from(self.parties.len()).unwrap_or(u16::MAX)
    }

    /// Checks and hands one envelope to the protocol.
    fn accept(&self, caller: u16, env: &Envelope) -> Result<(), Reject> {
        let from = u16::try_from(env.from).map_err(|_| Reject::WrongSender)?;
        let sender = self.parties.get(usize::from(from)).copied();
        let relayed = match (&self.external, sender) {
            (Some(x), Some(EXTERNAL_PARTY)) if x.index == from && x.relay == caller && !env.to_external => Some(x),
            (_, Some(node)) if node == caller && node != EXTERNAL_PARTY && !env.to_external => None,
            _ => return Err(Reject::WrongSender),
        };
        let round = u16::try_from(env.round).map_err(|_| Reject::UnexpectedRound)?;
        let kind = match env.to {
            None => MessageType::Broadcast,
            Some(to) if to == u32::from(self.me) => MessageType::P2P,
            Some(_) => return Err(Reject::UnexpectedRound),
        };
        if (self.expects)(round, from, self.me, self.n()) != Some(kind) {
            return Err(Reject::UnexpectedRound);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&(round, from)) {
            return Err(Reject::Duplicate);
        }
        match relayed {
            Some(x) => (self.deliver)(from, round, kind, &x.open(env)?)?,
            None => (self.deliver)(from, round, kind, &env.payload)?,
        }
        seen.insert((round, from));
        Ok(())
    }

    /// Node ids we still wait for in the earliest incomplete round, and
    /// that round.
    fn missing(&self) -> (u16, Vec<u16>) {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for round in 0..16u16 {
            let mut missing = Vec::new();
            let mut any = false;
            for from in 0..self.n() {
                if (self.expects)(round, from, self.me, self.n()).is_some() {
                    any = true;
                    if !seen.contains(&(round, from)) {
                        missing.extend(self.parties.get(usize::from(from)).copied());
                    }
                }
            }
            if !missing.is_empty() {
                return (round, missing);
            }
            if !any && round > 0 {
                break;
            }
        }
        (0, Vec::new())
    }
}

/// The sessions this node has agreed to, and the ids it has used.
#[derive(Default)]
pub struct Sessions {
    active: Mutex<HashMap<SessionId, Arc<SessionEntry>>>,
    registered: tokio::sync::Notify,
    used: Mutex<(HashSet<SessionId>, VecDeque<SessionId>)>,
}

/// How many ended session ids are remembered to refuse replays.
const REMEMBERED_SESSIONS: usize = 100_000;

/// Unregisters a session when dropped.
pub struct SessionGuard<'a> {
    sessions: &'a Sessions,
    id: SessionId,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.sessions
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Sessions {
    fn register(&self, id: SessionId, entry: Arc<SessionEntry>) -> Result<SessionGuard<'_>, SessionError> {
        {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            if !used.0.insert(id) {
                return Err(SessionError::Invalid("session id was already used".into()));
            }
            used.1.push_back(id);
            if used.1.len() > REMEMBERED_SESSIONS {
                if let Some(old) = used.1.pop_front() {
                    used.0.remove(&old);
                }
            }
        }
        self.active.lock().unwrap_or_else(|p| p.into_inner()).insert(id, entry);
        self.registered.notify_waiters();
        Ok(SessionGuard { sessions: self, id })
    }

    /// Routes one envelope from node `caller`.
    ///
    /// # Errors
    /// The [`Reject`] reason.
    pub fn route(&self, caller: u16, env: &Envelope) -> Result<(), Reject> {
        let id: SessionId = env
            .session_id
            .as_slice()
            .try_into()
            .map_err(|_| Reject::UnknownSession)?;
        let entry = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or(Reject::UnknownSession)?;
        entry.accept(caller, env)
    }

    /// Like [`Sessions::route`], but an envelope for a session that is not
    /// registered yet waits up to `wait` for it (a peer may start sending
    /// before our own part of the session has started). Nothing is
    /// buffered: the waiting request is the buffer, bounded by the HTTP/2
    /// stream limit.
    ///
    /// # Errors
    /// The [`Reject`] reason.
    pub async fn route_wait(&self, caller: u16, env: &Envelope, wait: Duration) -> Result<(), Reject> {
        let until = Instant::now() + wait;
        loop {
            let notified = self.registered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.route(caller, env) {
                Err(Reject::UnknownSession) if Instant::now() < until => {
                    tracing::debug!(
                        round = env.round,
                        from = caller,
                        "holding a message until its session starts"
                    );
                    if tokio::time::timeout_at(until, notified).await.is_err() {
                        return self.route(caller, env);
                    }
                }
                other => return other,
            }
        }
    }

    /// The earliest incomplete round of session `id` here and the node
    /// ids it waits for in it; `None` when the session is not running.
    pub fn progress(&self, id: &SessionId) -> Option<(u16, Vec<u16>)> {
        let entry = self.active.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()?;
        Some(entry.missing())
    }

    /// Number of sessions running now.
    pub fn active_count(&self) -> usize {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The `round_based` delivery of a session: a stream of decoded incoming
/// messages and a sink of outgoing ones.
pub type SessionDelivery<M> = (
    futures::stream::Map<
        futures::channel::mpsc::UnboundedReceiver<Incoming<M>>,
        fn(Incoming<M>) -> Result<Incoming<M>, Infallible>,
    >,
    futures::channel::mpsc::UnboundedSender<Outgoing<M>>,
);

/// Static description of one session.
pub struct SessionSpec {
    /// The session id (routes envelopes).
    pub id: SessionId,
    /// The execution id the protocol runs under
    /// ([`crate::authority::execution_id`]: the session id bound to the
    /// kind, key, parties, coordinator and the client's body).
    pub eid: SessionId,
    /// Node ids in session order.
    pub parties: Arc<[u16]>,
    /// Our party index.
    pub me: PartyIndex,
    /// Node id of the coordinator (checked against its certificate).
    pub coordinator: u16,
    /// The protocol's message schedule.
    pub expects: ExpectFn,
    /// The session's kind, for admission ([`crate::limits`]).
    pub kind: crate::limits::SessionKind,
    /// When the session must end.
    pub deadline: Instant,
    /// The session's external party, if it has one.
    pub external: Option<Arc<ExternalSession>>,
}

impl SessionSpec {
    /// Whether the session has an external party.
    pub fn has_external(&self) -> bool {
        sigil_crypto::relay::has_external(&self.parties)
    }
}

/// Runs `body`, our part of the session `spec`, over the peer transport:
/// registers the session, sends what the protocol sends, feeds it what
/// peers deliver, and fails at the deadline naming the silent parties.
///
/// # Errors
/// [`SessionError::Protocol`] with culprits as node ids,
/// [`SessionError::Timeout`] naming the nodes we wait for, or
/// [`SessionError::Invalid`] for a reused session id.
pub async fn run<M, T, F, Fut>(
    sessions: &Sessions,
    peers: &Arc<dyn Transport>,
    spec: SessionSpec,
    body: F,
) -> Result<T, SessionError>
where
    M: ProtocolMessage + Serialize + DeserializeOwned + Send + 'static,
    F: FnOnce(MpcParty<M, SessionDelivery<M>>) -> Fut,
    Fut: Future<Output = Result<T, sigil_crypto::Error>>,
{
    run_with(sessions, peers, spec, body, false).await
}

/// [`run`] for protocols that compute for up to seconds between two
/// messages (CGGMP21, threshold Paillier): the session runs off the
/// async workers ([`off_the_workers`]), so heavy sessions cannot stall
/// message delivery, the REST API and light sessions for everyone.
///
/// # Errors
/// As [`run`].
pub async fn run_heavy<M, T, F, Fut>(
    sessions: &Sessions,
    peers: &Arc<dyn Transport>,
    spec: SessionSpec,
    body: F,
) -> Result<T, SessionError>
where
    M: ProtocolMessage + Serialize + DeserializeOwned + Send + 'static,
    F: FnOnce(MpcParty<M, SessionDelivery<M>>) -> Fut,
    Fut: Future<Output = Result<T, sigil_crypto::Error>>,
{
    run_with(sessions, peers, spec, body, true).await
}

/// Runs `fut` to completion on this thread after handing the worker's
/// other tasks to the rest of the runtime (`tokio::task::block_in_place`,
/// which starts a replacement worker): the thread counts as one of the
/// runtime's blocking threads until `fut` is done. Unlike
/// `spawn_blocking`, `fut` need not be `'static` (protocol futures borrow
/// the key material). The calling task makes no progress meanwhile, so
/// the caller runs it in a task of its own. On a current-thread runtime
/// (some tests) `fut` is simply awaited.
pub async fn off_the_workers<F: Future>(fut: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let handle = Handle::current();
    if handle.runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(move || handle.block_on(fut))
    } else {
        fut.await
    }
}

async fn run_with<M, T, F, Fut>(
    sessions: &Sessions,
    peers: &Arc<dyn Transport>,
    spec: SessionSpec,
    body: F,
    heavy: bool,
) -> Result<T, SessionError>
where
    M: ProtocolMessage + Serialize + DeserializeOwned + Send + 'static,
    F: FnOnce(MpcParty<M, SessionDelivery<M>>) -> Fut,
    Fut: Future<Output = Result<T, sigil_crypto::Error>>,
{
    let (in_tx, in_rx) = futures::channel::mpsc::unbounded::<Incoming<M>>();
    let (out_tx, out_rx) = futures::channel::mpsc::unbounded::<Outgoing<M>>();
    let next_id = AtomicU64::new(0);
    let deliver: DeliverFn = Box::new(move |from, round, msg_type, payload| {
        let msg: M = postcard::from_bytes(payload).map_err(|e| Reject::Garbage(e.to_string()))?;
        if msg.round() != round {
            return Err(Reject::Garbage(format!(
                "payload is for round {}, envelope says {round}",
                msg.round()
            )));
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        in_tx
            .unbounded_send(Incoming {
                id,
                sender: from,
                msg_type,
                msg,
            })
            .map_err(|_| Reject::UnknownSession)
    });
    let entry = Arc::new(SessionEntry {
        parties: spec.parties.clone(),
        me: spec.me,
        expects: spec.expects,
        seen: Mutex::new(HashSet::new()),
        deliver,
        external: spec.external.clone(),
    });
    let _guard = sessions.register(spec.id, entry.clone())?;
    let out = Outbound {
        peers: peers.clone(),
        id: spec.id,
        parties: spec.parties.clone(),
        me: spec.me,
        deadline: spec.deadline,
        external: spec.external.clone(),
    };
    if let Some(x) = &spec.external {
        let hello = x.hello(spec.id, spec.me).map_err(internal)?;
        out.send(EXTERNAL_PARTY, hello);
    }
    tokio::spawn(send_all(out, out_rx));

    let incoming = in_rx.map(Ok as fn(Incoming<M>) -> Result<Incoming<M>, Infallible>);
    let party = MpcParty::connected((incoming, out_tx));
    // The deadline goes inside: nothing else polls a heavy session's thread.
    let session = tokio::time::timeout_at(spec.deadline, body(party));
    let result = if heavy {
        off_the_workers(session).await
    } else {
        session.await
    };
    match result {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => {
            let culprits = e
                .culprits()
                .iter()
                .filter_map(|&i| spec.parties.get(usize::from(i)).copied())
                .collect();
            Err(SessionError::Protocol {
                culprits,
                reason: e.to_string(),
            })
        }
        Err(_) => {
            let (round, missing) = entry.missing();
            Err(SessionError::Timeout { round, missing })
        }
    }
}

/// Where a session's outgoing messages go.
struct Outbound {
    peers: Arc<dyn Transport>,
    id: SessionId,
    parties: Arc<[u16]>,
    me: PartyIndex,
    deadline: Instant,
    external: Option<Arc<ExternalSession>>,
}

impl Outbound {
    /// Sends `env` to node `node` (retried until the deadline, in a task
    /// of its own); for the external party, sealed and signed, to its
    /// relay, or into its mailbox when this node is the relay.
    fn send(&self, node: u16, env: Envelope) {
        let (node, env) = match (node, &self.external) {
            (EXTERNAL_PARTY, None) => return,
            (EXTERNAL_PARTY, Some(x)) => {
                let env = match env.to_external {
                    true => env,
                    false => match x.seal(env) {
                        Ok(env) => env,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot seal a message for the external party");
                            return;
                        }
                    },
                };
                if let Some(mailbox) = &x.mailbox {
                    if let Err(r) = mailbox.accept_from_node(x.relay, &env) {
                        tracing::warn!(reason = r.reason(), "own message for the external party refused");
                    }
                    return;
                }
                (x.relay, env)
            }
            (node, _) => (node, env),
        };
        let (peers, deadline) = (self.peers.clone(), self.deadline);
        tokio::spawn(async move { deliver_with_retry(&*peers, node, env, deadline).await });
    }
}

/// Sends every outgoing message of a session until the protocol drops its
/// sink; each envelope is retried (the recipient may not have registered
/// the session yet) until the deadline.
async fn send_all<M>(out: Outbound, mut out_rx: futures::channel::mpsc::UnboundedReceiver<Outgoing<M>>)
where
    M: ProtocolMessage + Serialize + Send + 'static,
{
    while let Some(msg) = out_rx.next().await {
        let payload = match postcard::to_allocvec(&msg.msg) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an outgoing protocol message");
                continue;
            }
        };
        let round = u32::from(msg.msg.round());
        let recipients: Vec<u16> = match msg.recipient {
            MessageDestination::AllParties => (0..u16::try_from(out.parties.len()).unwrap_or(0))
                .filter(|&j| j != out.me)
                .collect(),
            MessageDestination::OneParty(j) => vec![j],
        };
        for j in recipients {
            let Some(&node) = out.parties.get(usize::from(j)) else {
                continue;
            };
            let env = Envelope {
                session_id: out.id.to_vec(),
                round,
                from: u32::from(out.me),
                to: msg.recipient.is_p2p().then_some(u32::from(j)),
                payload: payload.clone(),
                ..Envelope::default()
            };
            out.send(node, env);
        }
    }
}

pub(crate) async fn deliver_with_retry(peers: &dyn Transport, node: u16, env: Envelope, deadline: Instant) {
    let mut backoff = Duration::from_millis(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match peers.deliver(node, env.clone(), left).await {
            Ok(()) => return,
            Err(DeliverError::Retry(why)) => {
                if Instant::now() + backoff >= deadline {
                    tracing::debug!(node, %why, "giving up delivering a message at the session deadline");
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
            Err(DeliverError::Refused(why)) => {
                tracing::warn!(node, %why, "peer refused a protocol message");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_crypto::frost::sign;

    /// A sign session of nodes [5, 7, 9] in which we are party 0 (node 5),
    /// whose protocol accepts anything that decodes as a `u8`-round message.
    fn entry(delivered: Arc<Mutex<Vec<(u16, u16)>>>) -> SessionEntry {
        SessionEntry {
            parties: vec![5u16, 7, 9].into(),
            me: 0,
            expects: sign::expects,
            seen: Mutex::new(HashSet::new()),
            deliver: Box::new(move |from, round, _kind, payload| {
                if payload == b"garbage" {
                    return Err(Reject::Garbage("does not decode".into()));
                }
                delivered.lock().unwrap_or_else(|p| p.into_inner()).push((from, round));
                Ok(())
            }),
            external: None,
        }
    }

    fn env(round: u32, from: u32, to: Option<u32>, payload: &[u8]) -> Envelope {
        Envelope {
            session_id: vec![0; 32],
            round,
            from,
            to,
            payload: payload.to_vec(),
            ..Envelope::default()
        }
    }

    #[test]
    fn acceptance_rules() {
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let e = entry(delivered.clone());
        // Node 7 is party 1: it may broadcast in round 0, send p2p in round 1.
        assert_eq!(
            e.accept(9, &env(0, 1, None, b"ok")),
            Err(Reject::WrongSender),
            "cert names node 9, claims party 1"
        );
        assert_eq!(
            e.accept(7, &env(0, 7, None, b"ok")),
            Err(Reject::WrongSender),
            "index out of range"
        );
        assert_eq!(
            e.accept(7, &env(0, 1, Some(0), b"ok")),
            Err(Reject::UnexpectedRound),
            "p2p in a broadcast round"
        );
        assert_eq!(
            e.accept(7, &env(1, 1, None, b"ok")),
            Err(Reject::UnexpectedRound),
            "broadcast in a p2p round"
        );
        assert_eq!(
            e.accept(7, &env(1, 1, Some(2), b"ok")),
            Err(Reject::UnexpectedRound),
            "p2p for another party"
        );
        assert_eq!(
            e.accept(7, &env(5, 1, None, b"ok")),
            Err(Reject::UnexpectedRound),
            "no such round"
        );
        assert_eq!(
            e.accept(7, &env(0, 1, None, b"garbage")),
            Err(Reject::Garbage("does not decode".into()))
        );
        assert_eq!(
            e.accept(7, &env(0, 1, None, b"ok")),
            Ok(()),
            "garbage did not use up the slot"
        );
        assert_eq!(e.accept(7, &env(0, 1, None, b"ok")), Err(Reject::Duplicate));
        assert_eq!(e.accept(7, &env(1, 1, Some(0), b"ok")), Ok(()));
        assert_eq!(
            e.accept(5, &env(0, 0, None, b"ok")),
            Err(Reject::UnexpectedRound),
            "our own index"
        );
        assert_eq!(
            delivered.lock().unwrap_or_else(|p| p.into_inner()).as_slice(),
            &[(1, 0), (1, 1)]
        );
        // Node 9 (party 2) has sent nothing: it is what we wait for.
        assert_eq!(e.missing(), (0, vec![9]));
    }

    /// What a test session delivered: `(from, round, payload)`.
    type Delivered = Arc<Mutex<Vec<(u16, u16, Vec<u8>)>>>;

    /// A DKG of nodes [5, 7] and an external party (index 2) relayed by
    /// node 7, as node 5 (party 0) sees it.
    fn external_entry(delivered: Delivered) -> (SessionEntry, ed25519_dalek::SigningKey, [u8; 32]) {
        use rand::rngs::OsRng;
        let party = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let party_secret = sigil_crypto::relay::SessionSecret::generate(&mut OsRng);
        let keys = crate::relay::PartyKeys {
            verifying_key: hex::encode(party.verifying_key().to_bytes()),
            hpke_public_key: hex::encode(party_secret.public_key()),
        };
        let identity = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let x =
            ExternalSession::new(2, 7, "alice".into(), &keys, identity, None).unwrap_or_else(|e| unreachable!("{e}"));
        let hello = x.hello([0; 32], 0).unwrap_or_else(|e| unreachable!("{e}"));
        let my_key: [u8; 32] = hello
            .payload
            .clone()
            .try_into()
            .unwrap_or_else(|_| unreachable!("hello key"));
        let entry = SessionEntry {
            parties: vec![5u16, 7, EXTERNAL_PARTY].into(),
            me: 0,
            expects: sigil_crypto::frost::dkg::expects,
            seen: Mutex::new(HashSet::new()),
            deliver: Box::new(move |from, round, _kind, payload| {
                delivered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((from, round, payload.to_vec()));
                Ok(())
            }),
            external: Some(Arc::new(x)),
        };
        (entry, party, my_key)
    }

    fn from_party(
        key: &ed25519_dalek::SigningKey,
        round: u16,
        to: Option<u16>,
        seal_to: Option<&[u8; 32]>,
        payload: &[u8],
    ) -> Envelope {
        let m = sigil_crypto::relay::RelayMessage::new(
            key,
            [0; 32],
            round,
            2,
            to,
            payload,
            seal_to,
            &mut rand::rngs::OsRng,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        crate::relay::envelope(m, false)
    }

    #[test]
    fn external_party_messages_come_only_from_its_relay_signed_and_sealed() {
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let (e, party, my_key) = external_entry(delivered.clone());
        let forger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let other_key = sigil_crypto::relay::SessionSecret::generate(&mut rand::rngs::OsRng).public_key();
        let broadcast = from_party(&party, 0, None, None, b"commitment");
        assert_eq!(e.accept(5, &broadcast), Err(Reject::WrongSender), "not from the relay");
        let mut flagged = broadcast.clone();
        flagged.to_external = true;
        assert_eq!(e.accept(7, &flagged), Err(Reject::WrongSender), "a mailbox message");
        assert!(matches!(
            e.accept(7, &from_party(&forger, 0, None, None, b"commitment")),
            Err(Reject::Unauthentic(_))
        ));
        assert_eq!(e.accept(7, &broadcast), Ok(()));
        assert_eq!(e.accept(7, &broadcast), Err(Reject::Duplicate));
        // Point to point: sealed to this node's session key only.
        assert!(matches!(
            e.accept(7, &from_party(&party, 1, Some(0), Some(&other_key), b"share")),
            Err(Reject::Unauthentic(_))
        ));
        let mut altered = from_party(&party, 1, Some(0), Some(&my_key), b"share");
        if let Some(b) = altered.payload.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(e.accept(7, &altered), Err(Reject::Unauthentic(_))));
        assert_eq!(
            e.accept(7, &from_party(&party, 1, Some(0), Some(&my_key), b"share")),
            Ok(())
        );
        // The relay cannot speak for node 7's own slot with the party's key
        // either: node slots keep their certificate rule.
        let mut as_node = from_party(&party, 0, None, None, b"x");
        as_node.from = 1;
        assert_eq!(e.accept(5, &as_node), Err(Reject::WrongSender));
        let got = delivered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(got, vec![(2, 0, b"commitment".to_vec()), (2, 1, b"share".to_vec())]);
    }

    #[tokio::test]
    async fn early_message_is_held_until_its_session_registers() {
        let sessions = Arc::new(Sessions::default());
        let id = [4u8; 32];
        let e = Envelope {
            session_id: id.to_vec(),
            ..env(0, 1, None, b"ok")
        };
        let s2 = sessions.clone();
        let held = tokio::spawn(async move {
            let t = Instant::now();
            let r = s2.route_wait(7, &e, Duration::from_secs(5)).await;
            (r, t.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _guard = sessions.register(id, Arc::new(entry(Arc::default())));
        let (r, waited) = held.await.unwrap_or_else(|_| unreachable!());
        assert_eq!(r, Ok(()));
        assert!(
            waited < Duration::from_secs(1),
            "woken by the registration, not the hold limit: {waited:?}"
        );
        // Unknown for good: refused once the hold expires.
        let other = Envelope {
            session_id: vec![9; 32],
            ..env(0, 1, None, b"ok")
        };
        assert_eq!(
            sessions.route_wait(7, &other, Duration::from_millis(30)).await,
            Err(Reject::UnknownSession)
        );
    }

    #[test]
    fn sessions_route_unknown_and_reused_ids() {
        let sessions = Sessions::default();
        let id = [3u8; 32];
        assert_eq!(
            sessions.route(
                7,
                &Envelope {
                    session_id: id.to_vec(),
                    ..env(0, 1, None, b"ok")
                }
            ),
            Err(Reject::UnknownSession)
        );
        assert_eq!(
            sessions.route(
                7,
                &Envelope {
                    session_id: vec![1],
                    ..env(0, 1, None, b"ok")
                }
            ),
            Err(Reject::UnknownSession)
        );
        let guard = sessions.register(id, Arc::new(entry(Arc::default())));
        assert!(guard.is_ok());
        assert_eq!(
            sessions.route(
                7,
                &Envelope {
                    session_id: id.to_vec(),
                    ..env(0, 1, None, b"ok")
                }
            ),
            Ok(())
        );
        assert_eq!(sessions.active_count(), 1);
        drop(guard);
        assert_eq!(sessions.active_count(), 0);
        assert!(
            sessions.register(id, Arc::new(entry(Arc::default()))).is_err(),
            "session ids are never reused"
        );
    }
}
