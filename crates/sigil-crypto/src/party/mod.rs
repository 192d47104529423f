//! The external party: the very [`crate::frost`] and [`crate::ecdsa`]
//! functions the nodes run ([`protocols`], the one place that picks them
//! by scheme), driven over a [`Relay`] (the node that relays the session)
//! with every message checked and protected end to end
//! ([`crate::relay`]).
//!
//! Free of tokio, sockets and files: the transport is the [`Relay`]
//! trait (`sigil-client` implements it over REST and gRPC; the node, over
//! its own mailbox for a user share), and the protocol and
//! the message pump run in one task (`futures::select`), so this module
//! and the FROST party can later build for `wasm32-unknown-unknown` with
//! a browser `fetch` relay. (The crate as a whole cannot yet:
//! `sigil-crypto` links `cggmp21`, which needs GMP, so an ECDSA party
//! never can.)
//!
//! What the party checks on every message it reads: the session id, a
//! sender that is a node party of the session, that node's identity
//! signature (the caller's own `identities.json`, never the relay's
//! word), and for point-to-point messages that they decrypt with the
//! party's session key. Before the protocol starts it waits for every
//! node's signed *hello*, which carries the X25519 key its point-to-point
//! messages are sealed to.

pub mod protocols;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;

use crate::relay::{RelayMessage, SessionSecret, CONFIRM_ROUND, EXTERNAL_PARTY, HELLO_ROUND};
use crate::{PartyIndex, SessionId};
use ed25519_dalek::{SigningKey, VerifyingKey};
use futures::{FutureExt, StreamExt};
use round_based::{Incoming, MessageDestination, MessageType, MpcParty, Outgoing, ProtocolMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Most protocol messages read before every node's hello is in.
const MAX_EARLY: usize = 1024;

/// What the external party needs from its relay.
pub trait Relay {
    /// The messages for the party after sequence number `after`, with
    /// their numbers (may wait a while for the next one; an empty answer
    /// is fine). Once the session has ended and nothing is left, an error.
    fn fetch(&self, after: u64) -> impl Future<Output = Result<Vec<(u64, RelayMessage)>, PartyError>>;

    /// Submits one of the party's messages (idempotent: a repeat is
    /// accepted without effect).
    fn submit(&self, m: &RelayMessage) -> impl Future<Output = Result<(), PartyError>>;
}

/// Why the party's part of a session failed.
#[derive(Debug, thiserror::Error)]
pub enum PartyError {
    /// The relay or the network failed, or the session ended.
    #[error("relay: {0}")]
    Relay(String),
    /// A message failed its checks (signature, decryption, sender, round).
    #[error("refused a message from node {node}: {reason}")]
    BadMessage {
        /// The node it claims to come from.
        node: u16,
        /// Why.
        reason: String,
    },
    /// The protocol failed; `culprits` are node ids it blames.
    #[error("protocol failed: {reason} (culprits: {culprits:?})")]
    Protocol {
        /// Node ids proven to have misbehaved.
        culprits: Vec<u16>,
        /// The protocol's error.
        reason: String,
    },
    /// The session is not one this party can run.
    #[error("invalid session: {0}")]
    Invalid(String),
}

/// One session as the party runs it: who the parties are, where it sits,
/// and the keys that protect its messages.
pub struct PartySession {
    /// The session id.
    pub session_id: SessionId,
    /// Node ids in session order, [`EXTERNAL_PARTY`] for this party.
    pub parties: Vec<u16>,
    /// This party's session index.
    pub index: PartyIndex,
    /// The nodes' identity keys (from the caller's `identities.json`).
    identities: HashMap<u16, VerifyingKey>,
    /// This party's session signing key (its public half is in the
    /// client's signed request).
    signing: SigningKey,
    /// This party's session X25519 key (likewise).
    secret: SessionSecret,
}

/// The fresh session keys of a party and their public halves, as the
/// request that starts the session names them (`party_keys`).
pub struct SessionKeys {
    /// Signs the party's messages.
    pub signing: SigningKey,
    /// Opens the nodes' point-to-point messages.
    pub secret: SessionSecret,
}

impl SessionKeys {
    /// Fresh keys.
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng;
        SessionKeys {
            signing: SigningKey::generate(&mut rng),
            secret: SessionSecret::generate(&mut rng),
        }
    }

    /// `{"verifying_key": hex, "hpke_public_key": hex}`.
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::json!({
            "verifying_key": hex::encode(self.signing.verifying_key().to_bytes()),
            "hpke_public_key": hex::encode(self.secret.public_key()),
        })
    }
}

impl PartySession {
    /// A session among `parties` (one of them [`EXTERNAL_PARTY`]), with
    /// the nodes' `identities` and this party's `keys`.
    ///
    /// # Errors
    /// [`PartyError::Invalid`]: no external slot, a node without an
    /// identity key, or more than `u16::MAX` parties.
    pub fn new(
        session_id: SessionId,
        parties: Vec<u16>,
        identities: &HashMap<u16, VerifyingKey>,
        keys: SessionKeys,
    ) -> Result<Self, PartyError> {
        let index = parties
            .iter()
            .position(|&p| p == EXTERNAL_PARTY)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| PartyError::Invalid("the session has no external party".into()))?;
        let mut ids = HashMap::new();
        for &p in parties.iter().filter(|&&p| p != EXTERNAL_PARTY) {
            let key = identities
                .get(&p)
                .ok_or_else(|| PartyError::Invalid(format!("no identity key for node {p}")))?;
            ids.insert(p, *key);
        }
        Ok(PartySession {
            session_id,
            parties,
            index,
            identities: ids,
            signing: keys.signing,
            secret: keys.secret,
        })
    }

    /// This party's confirmation of a new key's record, whose canonical
    /// bytes (`sigil_api::record`) are `record_bytes`: a
    /// [`CONFIRM_ROUND`] message to the relay carrying the session key's
    /// signature over them. Call it only after checking the record
    /// against this party's own key generation.
    ///
    /// # Errors
    /// [`PartyError::Invalid`] if the message cannot be made.
    pub fn confirmation(&self, record_bytes: &[u8]) -> Result<RelayMessage, PartyError> {
        use ed25519_dalek::Signer as _;
        let signature = self.signing.sign(record_bytes).to_bytes();
        RelayMessage::new(
            &self.signing,
            self.session_id,
            CONFIRM_ROUND,
            self.index,
            None,
            &signature,
            None,
            &mut rand::rngs::OsRng,
        )
        .map_err(|e| PartyError::Invalid(e.to_string()))
    }

    /// The hex Ed25519 key this party's messages (and confirmation) verify
    /// under, as `policy.external_keys` names it.
    pub fn verifying_key_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    /// The number of parties.
    pub fn n(&self) -> u16 {
        u16::try_from(self.parties.len()).unwrap_or(u16::MAX)
    }

    fn node_at(&self, i: PartyIndex) -> u16 {
        self.parties.get(usize::from(i)).copied().unwrap_or(u16::MAX)
    }

    /// Checks one relayed message and opens it: `(from, round, p2p,
    /// plaintext)`.
    fn open(&self, m: &RelayMessage) -> Result<(PartyIndex, u16, bool, Vec<u8>), PartyError> {
        let node = self.node_at(m.from);
        let bad = |reason: String| PartyError::BadMessage { node, reason };
        if m.session_id != self.session_id {
            return Err(bad("for another session".into()));
        }
        if m.from == self.index || m.to.is_some_and(|t| t != self.index) {
            return Err(bad("not from a node party to this party".into()));
        }
        let key = self
            .identities
            .get(&node)
            .ok_or_else(|| bad("sender is not a node party".into()))?;
        let plaintext = m.open(key, Some(&self.secret)).map_err(|e| bad(e.to_string()))?;
        Ok((m.from, m.round, m.to.is_some(), plaintext))
    }

    /// Reads messages until every node's hello is in: the X25519 key of
    /// each node party (by session index), the protocol messages read
    /// meanwhile, and the cursor.
    async fn hellos<R: Relay>(
        &self,
        relay: &R,
    ) -> Result<(HashMap<PartyIndex, [u8; 32]>, Vec<RelayMessage>, u64), PartyError> {
        let mut keys = HashMap::new();
        let mut early = Vec::new();
        let mut after = 0;
        let nodes = self.parties.len().saturating_sub(1);
        while keys.len() < nodes {
            for (seq, m) in relay.fetch(after).await? {
                after = after.max(seq);
                if m.round != HELLO_ROUND {
                    if early.len() >= MAX_EARLY {
                        return Err(PartyError::Relay("too many messages before the hellos".into()));
                    }
                    early.push(m);
                    continue;
                }
                // What does not verify is dropped, not blamed on the node
                // it names: the relay may have made it up.
                if let Ok((from, _, _, key)) = self.open(&m) {
                    if let Ok(key) = <[u8; 32]>::try_from(key) {
                        keys.insert(from, key);
                    }
                }
            }
        }
        Ok((keys, early, after))
    }

    /// Runs `protocol` (one of `crate::frost`'s, as party
    /// [`PartySession::index`]) over `relay`: waits for the hellos, then
    /// pumps messages both ways until the protocol ends and its last
    /// message is submitted.
    ///
    /// # Errors
    /// The relay's, a refused message's, or the protocol's error (its
    /// culprits as node ids).
    pub async fn run<M, T, R, F, Fut>(&self, relay: &R, protocol: F) -> Result<T, PartyError>
    where
        M: ProtocolMessage + Serialize + DeserializeOwned + Send + 'static,
        R: Relay,
        F: FnOnce(MpcParty<M, Delivery<M>>) -> Fut,
        Fut: Future<Output = Result<T, crate::Error>>,
    {
        let (hpke, early, after) = self.hellos(relay).await?;
        let (in_tx, in_rx) = futures::channel::mpsc::unbounded::<Incoming<M>>();
        let (out_tx, mut out_rx) = futures::channel::mpsc::unbounded::<Outgoing<M>>();
        let incoming = in_rx.map(Ok as fn(Incoming<M>) -> Result<Incoming<M>, Infallible>);
        let party = MpcParty::connected((incoming, out_tx));

        let mut inbox = Inbox::<M>::default();
        for m in &early {
            inbox.take(self, m, &in_tx)?;
        }
        let receive = async {
            let mut after = after;
            let failed: PartyError = 'pump: loop {
                let batch = match relay.fetch(after).await {
                    Ok(batch) => batch,
                    Err(e) => break 'pump e,
                };
                for (seq, m) in batch {
                    after = after.max(seq);
                    if m.round != HELLO_ROUND {
                        if let Err(e) = inbox.take(self, &m, &in_tx) {
                            break 'pump e;
                        }
                    }
                }
            };
            failed
        };
        let send = async {
            while let Some(out) = out_rx.next().await {
                relay.submit(&self.seal(&out, &hpke)?).await?;
            }
            Ok::<(), PartyError>(())
        };
        let run = protocol(party).map(|r| {
            r.map_err(|e| PartyError::Protocol {
                culprits: e.culprits().iter().map(|&i| self.node_at(i)).collect(),
                reason: e.to_string(),
            })
        });
        // A failed submission ends the run at once.
        let both = futures::future::try_join(run, send).map(|r| r.map(|(t, ())| t));
        futures::pin_mut!(both, receive);
        match futures::future::select(both, receive).await {
            futures::future::Either::Left((r, _)) => r,
            futures::future::Either::Right((e, _)) => Err(e),
        }
    }

    /// An outgoing protocol message as a relay message: broadcast in the
    /// clear, point to point sealed to the recipient's hello key; signed.
    fn seal<M: ProtocolMessage + Serialize>(
        &self,
        out: &Outgoing<M>,
        hpke: &HashMap<PartyIndex, [u8; 32]>,
    ) -> Result<RelayMessage, PartyError> {
        let payload = postcard::to_allocvec(&out.msg).map_err(|e| PartyError::Invalid(e.to_string()))?;
        let (to, key) = match out.recipient {
            MessageDestination::AllParties => (None, None),
            MessageDestination::OneParty(j) => (
                Some(j),
                Some(
                    hpke.get(&j)
                        .ok_or_else(|| PartyError::Invalid(format!("no session key of party {j}")))?,
                ),
            ),
        };
        RelayMessage::new(
            &self.signing,
            self.session_id,
            out.msg.round(),
            self.index,
            to,
            &payload,
            key,
            &mut rand::rngs::OsRng,
        )
        .map_err(|e| PartyError::Invalid(e.to_string()))
    }
}

/// How long a relay's `fetch` keeps reading once the session has
/// succeeded and nothing is left to read: the nodes' last messages to the
/// party may still be on their way to the mailbox (a node finishes once
/// it has what it needs; ECDSA's party still needs every partial
/// signature), and then the party's protocol ends on its own, which ends
/// the pump; after this long the relay gives up with [`unfinished`].
pub const ENDED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The error of a party that did not finish although its session
/// succeeded.
pub fn unfinished() -> PartyError {
    PartyError::Relay("the session succeeded but this party did not finish".into())
}

/// The `round_based` delivery the party's protocol runs over.
pub type Delivery<M> = (
    futures::stream::Map<
        futures::channel::mpsc::UnboundedReceiver<Incoming<M>>,
        fn(Incoming<M>) -> Result<Incoming<M>, Infallible>,
    >,
    futures::channel::mpsc::UnboundedSender<Outgoing<M>>,
);

/// Hands checked messages to the protocol, each `(round, from)` once.
struct Inbox<M> {
    seen: HashSet<(u16, PartyIndex)>,
    next_id: u64,
    _m: std::marker::PhantomData<M>,
}

impl<M> Default for Inbox<M> {
    fn default() -> Self {
        Inbox {
            seen: HashSet::new(),
            next_id: 0,
            _m: std::marker::PhantomData,
        }
    }
}

impl<M: ProtocolMessage + DeserializeOwned> Inbox<M> {
    /// Hands `m` to the protocol once it verifies; a message whose
    /// signature or encryption fails is dropped (the relay may have made
    /// it up; a node that really sent nothing fails the session at its
    /// deadline), one that verifies but does not decode blames its signer.
    fn take(
        &mut self,
        s: &PartySession,
        m: &RelayMessage,
        tx: &futures::channel::mpsc::UnboundedSender<Incoming<M>>,
    ) -> Result<(), PartyError> {
        let Ok((from, round, p2p, plaintext)) = s.open(m) else {
            return Ok(());
        };
        if !self.seen.insert((round, from)) {
            return Ok(());
        }
        let bad = |reason: String| PartyError::BadMessage {
            node: s.node_at(from),
            reason,
        };
        let msg: M = postcard::from_bytes(&plaintext).map_err(|e| bad(format!("does not decode: {e}")))?;
        if msg.round() != round {
            return Err(bad(format!(
                "payload is for round {}, message says {round}",
                msg.round()
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        let _ = tx.unbounded_send(Incoming {
            id,
            sender: from,
            msg_type: if p2p { MessageType::P2P } else { MessageType::Broadcast },
            msg,
        });
        Ok(())
    }
}

/// The nodes' identity keys from an `identities.json` (`{"<id>": "<64
/// hex>"}`, as `sigil certs init` writes it).
///
/// # Errors
/// Malformed JSON, ids or keys.
pub fn parse_identities(json: &str) -> Result<HashMap<u16, VerifyingKey>, PartyError> {
    let raw: BTreeMap<String, String> =
        serde_json::from_str(json).map_err(|e| PartyError::Invalid(format!("identities: {e}")))?;
    raw.into_iter()
        .map(|(id, key)| {
            let id: u16 = id
                .parse()
                .map_err(|_| PartyError::Invalid(format!("identities: node id {id:?}")))?;
            let key = crate::relay::verifying_key_from_hex(&format!("identity of node {id}"), &key)
                .map_err(|e| PartyError::Invalid(e.to_string()))?;
            Ok((id, key))
        })
        .collect()
}
