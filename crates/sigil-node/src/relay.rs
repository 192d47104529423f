//! External parties: a client (`sigil-client`) that holds one share of a
//! key and takes part in its sessions through one node, the *relay* (the
//! node that took the client's request and coordinates the session).
//!
//! Two halves:
//! - [`ExternalSession`]: what every node party of such a session knows
//!   of the external party (its session index, its relay, its client's
//!   session keys from the client's signed request) and this node's own
//!   X25519 key for the session. The session layer uses it to open what
//!   the party sends (signature by the party's session key, HPKE
//!   decryption) and to seal and sign what it sends the party
//!   ([`sigil_crypto::relay`]).
//! - [`Mailbox`] (at the relay only): the messages addressed to the
//!   party, numbered from 1, which the client reads
//!   (`GET /v1/sessions/{id}/messages?after=N`), and the checks on what it
//!   submits (`POST /v1/sessions/{id}/messages`) before the relay hands it
//!   to the session's parties.
//!
//! Who may send what, and what the receiver verifies:
//!
//! | message | who may send it | what the receiver checks |
//! |---|---|---|
//! | party -> relay (REST/gRPC submit) | the session's client, with its signed token | the token (as every request), the client is the session's, the session runs, the sender index is the party's, the round schedule expects it to that recipient, the signature under the party's session key; a repeat with the same signature is accepted again without effect (idempotent), another message in the same slot is a conflict |
//! | relay -> node (`Deliver`, `from` = the party) | the session's relay only (its certificate) | as any envelope ([`crate::session`]), and the party's signature; p2p payloads must decrypt with this node's session key |
//! | node -> relay (`Deliver`, `to_external`) | a node party of the session (its certificate names the `from` slot) | the relay's mailbox: schedule, once per (round, sender), and the node's identity signature |
//! | relay -> party (the mailbox) | | the client checks every node's identity signature against its own `identities.json`, and decrypts p2p payloads with its session key |
//! | party -> relay, `CONFIRM_ROUND` (the party's confirmation of a new key) | the session's client, once the relay has put the record to it | the relay: a broadcast signed by the party's session key whose payload is that key's signature over the canonical record put to it (else refused, nothing relayed); every node at commit: the record's external attestation under `policy.external_keys`, the key its own copy of the client's signed request named |
//! | relay -> party, the record to confirm (session view `record`) | the coordinator, after every node party attested the record | the client rebuilds the canonical record from its own key generation and checks creator, policy and hash before it signs |
//!
//! A relay that drops a message makes the session fail at its deadline
//! naming the party that waits in vain; one that alters a message makes
//! its signature or decryption fail at the receiver, which refuses it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use round_based::MessageType;
use serde::{Deserialize, Serialize};
use sigil_crypto::relay::{RelayError, RelayMessage, SessionSecret, CONFIRM_ROUND, EXTERNAL_PARTY, HELLO_ROUND};
use sigil_crypto::{PartyIndex, SessionId};
use sigil_proto::peer::Envelope;
use tokio::time::Instant;

use crate::error::ErrorDetail;
use crate::session::{ExpectFn, Reject};

/// The session keys an external party's client names in the body of the
/// request that starts a session (`"party_keys"`), fresh per session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartyKeys {
    /// Ed25519 public key (64 hex characters) that signs every message
    /// the party sends in the session.
    pub verifying_key: String,
    /// X25519 public key (64 hex characters) the nodes seal their
    /// point-to-point messages to (HPKE, RFC 9180).
    pub hpke_public_key: String,
}

impl PartyKeys {
    /// The parsed keys.
    ///
    /// # Errors
    /// The reason, for a 400.
    pub fn parse(&self) -> Result<(VerifyingKey, [u8; 32]), String> {
        let vk = sigil_crypto::relay::verifying_key_from_hex("party_keys.verifying_key", &self.verifying_key)
            .map_err(|e| e.to_string())?;
        let hpke = sigil_crypto::relay::key_from_hex("party_keys.hpke_public_key", &self.hpke_public_key)
            .map_err(|e| e.to_string())?;
        Ok((vk, hpke))
    }
}

/// One external party of a new key (`"external_parties": [{"client": id}]`
/// in `POST /v1/keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalParty {
    /// The client that runs the party and holds its share (today: the
    /// client making the request, which runs it with `sigil-client`).
    pub client: String,
}

/// `"user_share"` in `POST /v1/keys`: the coordinator runs the external
/// party for the DKG only, in memory, and answers with its share sealed
/// to this key (never storing it); the requesting client is the party's
/// client and later signs with `sigil-client`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserShareRequest {
    /// X25519 public key (64 hex characters) the share is sealed to.
    pub recipient_public_key: String,
}

/// What a node party of a session knows of its external party.
pub struct ExternalSession {
    /// The party's session index.
    pub index: PartyIndex,
    /// Node id of its relay (the session's coordinator).
    pub relay: u16,
    /// Its client.
    pub client: String,
    verifying_key: VerifyingKey,
    hpke_key: [u8; 32],
    /// This node's X25519 key for the session (sent in its hello).
    secret: SessionSecret,
    /// This node's identity key: signs what it sends the party.
    identity: SigningKey,
    /// At the relay: the party's mailbox.
    pub(crate) mailbox: Option<Arc<Mailbox>>,
}

impl ExternalSession {
    /// The link of a session whose party `index` is external, relayed by
    /// `relay`, for `client` with its session `keys`; this node signs with
    /// `identity`.
    ///
    /// # Errors
    /// Malformed keys.
    pub fn new(
        index: PartyIndex,
        relay: u16,
        client: String,
        keys: &PartyKeys,
        identity: SigningKey,
        mailbox: Option<Arc<Mailbox>>,
    ) -> Result<Self, String> {
        let (verifying_key, hpke_key) = keys.parse()?;
        Ok(ExternalSession {
            index,
            relay,
            client,
            verifying_key,
            hpke_key,
            secret: SessionSecret::generate(&mut rand::rngs::OsRng),
            identity,
            mailbox,
        })
    }

    /// Opens an envelope from the party: checks its signature under the
    /// party's session key and decrypts a point-to-point payload.
    ///
    /// # Errors
    /// [`Reject::Unauthentic`].
    pub fn open(&self, env: &Envelope) -> Result<Vec<u8>, Reject> {
        let m = relay_message(env).map_err(|e| Reject::Unauthentic(e.to_string()))?;
        m.open(&self.verifying_key, Some(&self.secret))
            .map_err(|e| Reject::Unauthentic(e.to_string()))
    }

    /// The envelope for the party of `plaintext` from session party `from`
    /// in `round` (`p2p`: sealed to the party), signed with this node's
    /// identity key.
    ///
    /// # Errors
    /// Sealing failure (a bad party key, checked at the start).
    pub fn seal(&self, env: Envelope) -> Result<Envelope, RelayError> {
        let round = u16::try_from(env.round).map_err(|_| RelayError::Malformed("round".into()))?;
        let from = u16::try_from(env.from).map_err(|_| RelayError::Malformed("from".into()))?;
        let p2p = env.to.is_some();
        let m = RelayMessage::new(
            &self.identity,
            session_id_of(&env)?,
            round,
            from,
            p2p.then_some(self.index),
            &env.payload,
            p2p.then_some(&self.hpke_key),
            &mut rand::rngs::OsRng,
        )?;
        Ok(envelope(m, true))
    }

    /// This node's hello: its X25519 key for the session, signed.
    ///
    /// # Errors
    /// As [`ExternalSession::seal`].
    pub fn hello(&self, session_id: SessionId, me: PartyIndex) -> Result<Envelope, RelayError> {
        let m = RelayMessage::new(
            &self.identity,
            session_id,
            HELLO_ROUND,
            me,
            None,
            &self.secret.public_key(),
            None,
            &mut rand::rngs::OsRng,
        )?;
        Ok(envelope(m, true))
    }
}

fn session_id_of(env: &Envelope) -> Result<SessionId, RelayError> {
    env.session_id
        .as_slice()
        .try_into()
        .map_err(|_| RelayError::Malformed("session_id must be 32 bytes".into()))
}

/// The relay message an envelope carries.
///
/// # Errors
/// Out-of-range fields.
pub fn relay_message(env: &Envelope) -> Result<RelayMessage, RelayError> {
    let narrow =
        |v: u32, what: &str| u16::try_from(v).map_err(|_| RelayError::Malformed(format!("{what} out of range")));
    Ok(RelayMessage {
        session_id: session_id_of(env)?,
        round: narrow(env.round, "round")?,
        from: narrow(env.from, "from")?,
        to: env.to.map(|t| narrow(t, "to")).transpose()?,
        payload: env.payload.clone(),
        signature: env.signature.clone(),
    })
}

/// The envelope of a relay message.
pub fn envelope(m: RelayMessage, to_external: bool) -> Envelope {
    Envelope {
        session_id: m.session_id.to_vec(),
        round: u32::from(m.round),
        from: u32::from(m.from),
        to: m.to.map(u32::from),
        payload: m.payload,
        signature: m.signature,
        to_external,
    }
}

/// Why the relay refused what the party submitted (REST 4xx, gRPC status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitRefusal {
    /// No such session at this node, or it is not this client's.
    #[error("no session {0} for this client here")]
    UnknownSession(String),
    /// The session has ended.
    #[error("the session has ended")]
    Ended,
    /// Not the party's index, or a recipient outside the session.
    #[error("not a member: {0}")]
    NotAMember(String),
    /// The round schedule expects no such message.
    #[error("message not expected: {0}")]
    OutOfSchedule(String),
    /// Another message was already accepted for this round and recipient.
    #[error("another message was already accepted for round {0}")]
    Conflict(u16),
    /// The signature does not verify, or a field is malformed.
    #[error("{0}")]
    Unauthentic(String),
}

impl SubmitRefusal {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            SubmitRefusal::UnknownSession(_) => "unknown_session",
            SubmitRefusal::Ended => "ended",
            SubmitRefusal::NotAMember(_) => "not_a_member",
            SubmitRefusal::OutOfSchedule(_) => "unexpected_round",
            SubmitRefusal::Conflict(_) => "conflict",
            SubmitRefusal::Unauthentic(_) => "unauthentic",
        }
    }
}

/// What a session of a mailbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionKindView {
    /// A key generation.
    Dkg,
    /// A signature.
    Sign,
}

/// The end of a relayed session.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The key (DKG) or signature (sign), as the API shows it.
    Succeeded(serde_json::Value),
    /// The error, as the API shows it.
    Failed(ErrorDetail),
}

/// The mailbox of one relayed session (see the module docs).
pub struct Mailbox {
    /// The session.
    pub session_id: SessionId,
    /// What it does.
    pub kind: SessionKindView,
    /// The key it makes or uses.
    pub key_id: String,
    /// The scheme.
    pub scheme: String,
    /// The external party's client.
    pub client: String,
    /// Node ids in session order ([`EXTERNAL_PARTY`] for the party).
    pub parties: Arc<[u16]>,
    /// The party's session index.
    pub index: PartyIndex,
    /// The key's threshold.
    pub threshold: u16,
    /// The session's coordinator (this node).
    pub coordinator: u16,
    expects: ExpectFn,
    verifying_key: VerifyingKey,
    identities: HashMap<u16, VerifyingKey>,
    /// When the session must end.
    pub deadline: Instant,
    state: Mutex<MailboxState>,
    notify: tokio::sync::Notify,
}

#[derive(Default)]
struct MailboxState {
    /// Messages to the party; sequence number = position + 1.
    outbox: Vec<RelayMessage>,
    from_nodes: HashSet<(u16, PartyIndex)>,
    /// The signature accepted per (round, recipient) from the party.
    from_party: HashMap<(u16, Option<PartyIndex>), Vec<u8>>,
    /// A new key's record the party is asked to confirm.
    confirm: Option<Confirm>,
    outcome: Option<Outcome>,
}

/// A record put to the party for its confirmation ([`CONFIRM_ROUND`]).
struct Confirm {
    /// Its canonical bytes.
    record: Vec<u8>,
    /// What the party is shown (the session view's `record`).
    view: serde_json::Value,
    /// The party's signature over `record`, once it confirmed.
    signature: Option<Vec<u8>>,
}

/// What a mailbox is made of ([`Mailbox::new`]).
pub struct MailboxSpec {
    /// The session.
    pub session_id: SessionId,
    /// What it does.
    pub kind: SessionKindView,
    /// The key.
    pub key_id: String,
    /// The scheme.
    pub scheme: String,
    /// The party's client.
    pub client: String,
    /// Session parties.
    pub parties: Vec<u16>,
    /// The key's threshold.
    pub threshold: u16,
    /// The coordinator.
    pub coordinator: u16,
    /// The round schedule.
    pub expects: ExpectFn,
    /// The party's session keys.
    pub keys: PartyKeys,
    /// The node parties' identity keys.
    pub identities: HashMap<u16, VerifyingKey>,
    /// The session deadline.
    pub deadline: Instant,
}

impl Mailbox {
    /// A mailbox for `spec`.
    ///
    /// # Errors
    /// Malformed party keys, or no external party in the session.
    pub fn new(spec: MailboxSpec) -> Result<Self, String> {
        let (verifying_key, _) = spec.keys.parse()?;
        let index = spec
            .parties
            .iter()
            .position(|&p| p == EXTERNAL_PARTY)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or("the session has no external party")?;
        Ok(Mailbox {
            session_id: spec.session_id,
            kind: spec.kind,
            key_id: spec.key_id,
            scheme: spec.scheme,
            client: spec.client,
            parties: spec.parties.into(),
            index,
            threshold: spec.threshold,
            coordinator: spec.coordinator,
            expects: spec.expects,
            verifying_key,
            identities: spec.identities,
            deadline: spec.deadline,
            state: Mutex::default(),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn n(&self) -> u16 {
        u16::try_from(self.parties.len()).unwrap_or(u16::MAX)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MailboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a node's message for the party: from node `caller`, whose
    /// index `env.from` names it; a hello once, or a message the schedule
    /// expects from it to the party, once; signed by its identity key.
    /// Also after the session's end: the nodes may finish before their
    /// last messages reach the party, which still needs them (ECDSA
    /// signing: every signer combines every partial signature); the
    /// schedule bounds what a mailbox takes.
    ///
    /// # Errors
    /// The [`Reject`] reason.
    pub fn accept_from_node(&self, caller: u16, env: &Envelope) -> Result<(), Reject> {
        let m = relay_message(env).map_err(|e| Reject::Garbage(e.to_string()))?;
        if self.parties.get(usize::from(m.from)) != Some(&caller) {
            return Err(Reject::WrongSender);
        }
        let kind = match m.to {
            None => MessageType::Broadcast,
            Some(to) if to == self.index => MessageType::P2P,
            Some(_) => return Err(Reject::UnexpectedRound),
        };
        let expected = if m.round == HELLO_ROUND {
            kind == MessageType::Broadcast
        } else {
            (self.expects)(m.round, m.from, self.index, self.n()) == Some(kind)
        };
        if !expected {
            return Err(Reject::UnexpectedRound);
        }
        let key = self.identities.get(&caller).ok_or(Reject::WrongSender)?;
        m.verify(key).map_err(|e| Reject::Unauthentic(e.to_string()))?;
        let mut state = self.state();
        if !state.from_nodes.insert((m.round, m.from)) {
            return Err(Reject::Duplicate);
        }
        state.outbox.push(m);
        drop(state);
        self.notify.notify_waiters();
        Ok(())
    }

    /// Checks a message the party submits (see the module table). Returns
    /// `None` for an exact repeat (already relayed), else the node ids to
    /// relay it to.
    ///
    /// # Errors
    /// The [`SubmitRefusal`].
    pub fn submit(&self, m: &RelayMessage) -> Result<Option<Vec<u16>>, SubmitRefusal> {
        if m.session_id != self.session_id {
            return Err(SubmitRefusal::UnknownSession(hex::encode(m.session_id)));
        }
        if m.from != self.index {
            return Err(SubmitRefusal::NotAMember(format!(
                "from must be the external party's index {}",
                self.index
            )));
        }
        if m.round == CONFIRM_ROUND {
            return self.submit_confirmation(m).map(|fresh| fresh.then(Vec::new));
        }
        let recipients: Vec<PartyIndex> = match m.to {
            Some(to) if to == self.index || to >= self.n() => {
                return Err(SubmitRefusal::NotAMember(format!("no party {to} in the session")))
            }
            Some(to) => {
                if (self.expects)(m.round, self.index, to, self.n()) != Some(MessageType::P2P) {
                    return Err(SubmitRefusal::OutOfSchedule(format!("p2p round {} to {to}", m.round)));
                }
                vec![to]
            }
            None => {
                let to: Vec<PartyIndex> = (0..self.n())
                    .filter(|&j| j != self.index)
                    .filter(|&j| (self.expects)(m.round, self.index, j, self.n()) == Some(MessageType::Broadcast))
                    .collect();
                if to.is_empty() {
                    return Err(SubmitRefusal::OutOfSchedule(format!("broadcast round {}", m.round)));
                }
                to
            }
        };
        m.verify(&self.verifying_key)
            .map_err(|e| SubmitRefusal::Unauthentic(e.to_string()))?;
        let mut state = self.state();
        if state.outcome.is_some() {
            return Err(SubmitRefusal::Ended);
        }
        match state.from_party.get(&(m.round, m.to)) {
            Some(sig) if *sig == m.signature => return Ok(None),
            Some(_) => return Err(SubmitRefusal::Conflict(m.round)),
            None => {}
        }
        state.from_party.insert((m.round, m.to), m.signature.clone());
        Ok(Some(
            recipients
                .iter()
                .filter_map(|&j| self.parties.get(usize::from(j)).copied())
                .collect(),
        ))
    }

    /// Takes the party's confirmation of the record put to it: a
    /// [`CONFIRM_ROUND`] broadcast signed by the party, whose payload is
    /// its session key's signature over the record's canonical bytes.
    /// Returns whether it is new (else an exact repeat). It goes to no
    /// node: the coordinator adds it to the record as the external slot's
    /// attestation, which every node verifies before it commits.
    fn submit_confirmation(&self, m: &RelayMessage) -> Result<bool, SubmitRefusal> {
        use ed25519_dalek::Verifier as _;
        if m.to.is_some() {
            return Err(SubmitRefusal::OutOfSchedule(
                "a confirmation goes to the relay only".into(),
            ));
        }
        m.verify(&self.verifying_key)
            .map_err(|e| SubmitRefusal::Unauthentic(e.to_string()))?;
        let mut state = self.state();
        if state.outcome.is_some() {
            return Err(SubmitRefusal::Ended);
        }
        let Some(confirm) = state.confirm.as_mut() else {
            return Err(SubmitRefusal::OutOfSchedule("no record to confirm yet".into()));
        };
        let valid = ed25519_dalek::Signature::from_slice(&m.payload)
            .is_ok_and(|sig| self.verifying_key.verify(&confirm.record, &sig).is_ok());
        if !valid {
            return Err(SubmitRefusal::Unauthentic(
                "the confirmation is not the party's signature over the record".into(),
            ));
        }
        match &confirm.signature {
            Some(sig) if *sig == m.payload => return Ok(false),
            Some(_) => return Err(SubmitRefusal::Conflict(CONFIRM_ROUND)),
            None => confirm.signature = Some(m.payload.clone()),
        }
        drop(state);
        self.notify.notify_waiters();
        Ok(true)
    }

    /// Puts a new key's record to the party: its canonical bytes, and
    /// what the session view shows of it (`record`).
    pub fn ask_confirmation(&self, record: Vec<u8>, view: serde_json::Value) {
        self.state().confirm = Some(Confirm {
            record,
            view,
            signature: None,
        });
        self.notify.notify_waiters();
    }

    /// The party's signature over the record put to it, once it confirmed;
    /// `None` if the session ends or its deadline passes first.
    pub async fn confirmation(&self) -> Option<Vec<u8>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state();
                if let Some(sig) = state.confirm.as_ref().and_then(|c| c.signature.clone()) {
                    return Some(sig);
                }
                if state.outcome.is_some() {
                    return None;
                }
            }
            if tokio::time::timeout_at(self.deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// The record put to the party while it has not confirmed it: its
    /// canonical bytes and its view.
    pub fn to_confirm(&self) -> Option<(Vec<u8>, serde_json::Value)> {
        let state = self.state();
        state
            .confirm
            .as_ref()
            .filter(|c| c.signature.is_none() && state.outcome.is_none())
            .map(|c| (c.record.clone(), c.view.clone()))
    }

    /// The messages for the party after sequence number `after`, with
    /// their numbers; waits up to `wait` for one when there is none yet
    /// and the session runs (its end wakes the wait).
    pub async fn messages_after(&self, after: u64, wait: Duration) -> Vec<(u64, RelayMessage)> {
        let until = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ready = {
                let state = self.state();
                let skip = usize::try_from(after).unwrap_or(usize::MAX);
                // At most MAX_PAGE_BYTES of payload per page (at least one
                // message): the party reads on from the last number.
                let mut bytes = 0usize;
                let out: Vec<(u64, RelayMessage)> = state
                    .outbox
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .take_while(|(_, m)| {
                        let first = bytes == 0;
                        bytes = bytes.saturating_add(m.payload.len().max(1));
                        first || bytes <= MAX_PAGE_BYTES
                    })
                    .map(|(i, m)| (u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1), m.clone()))
                    .collect();
                (out, state.outcome.is_some())
            };
            if !ready.0.is_empty() || ready.1 || Instant::now() >= until {
                return ready.0;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Waits up to `wait` for the session's end, or for a record the
    /// party must confirm.
    pub async fn wait_end(&self, wait: Duration) {
        let until = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state().outcome.is_some() || self.to_confirm().is_some() {
                return;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return;
            }
        }
    }

    /// Ends the session with `outcome`; later submissions are refused.
    pub fn finish(&self, outcome: Outcome) {
        self.state().outcome = Some(outcome);
        self.notify.notify_waiters();
    }

    /// The outcome, once the session ended.
    pub fn outcome(&self) -> Option<Outcome> {
        self.state().outcome.clone()
    }

    /// Messages queued for the party so far.
    pub fn queued(&self) -> u64 {
        u64::try_from(self.state().outbox.len()).unwrap_or(u64::MAX)
    }
}

/// The most payload bytes one read of a mailbox returns (more wait for the
/// next read), so a page stays small whatever a session queued.
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// How long an ended session's mailbox is kept (for its status, and the
/// party's last reads).
const KEEP_ENDED: Duration = Duration::from_secs(60);

/// Each relayed session's mailbox, and when it ended.
type Boxes = HashMap<SessionId, (Arc<Mailbox>, Option<Instant>)>;

/// The mailboxes of the sessions this node relays.
#[derive(Default)]
pub struct Relay {
    boxes: Mutex<Boxes>,
}

impl Relay {
    /// Registers `mailbox`; forgets sessions ended more than a minute ago.
    pub fn open(&self, mailbox: Arc<Mailbox>) {
        let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        boxes.retain(|_, (_, ended)| ended.is_none_or(|t| t.elapsed() < KEEP_ENDED));
        boxes.insert(mailbox.session_id, (mailbox, None));
    }

    /// Marks the session ended (its mailbox stays readable a while).
    pub fn close(&self, id: &SessionId) {
        if let Some((_, ended)) = self.boxes.lock().unwrap_or_else(|p| p.into_inner()).get_mut(id) {
            *ended = Some(Instant::now());
        }
    }

    /// The mailbox of session `id`.
    pub fn get(&self, id: &SessionId) -> Option<Arc<Mailbox>> {
        self.boxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|(m, _)| m.clone())
    }

    /// Queues node `caller`'s message for the external party of the
    /// session the envelope names ([`Mailbox::accept_from_node`]).
    ///
    /// # Errors
    /// The [`Reject`] reason ([`Reject::UnknownSession`] when this node
    /// relays no such session).
    pub fn queue_from_node(&self, caller: u16, env: &Envelope) -> Result<(), Reject> {
        let id: SessionId = env
            .session_id
            .as_slice()
            .try_into()
            .map_err(|_| Reject::UnknownSession)?;
        self.get(&id)
            .ok_or(Reject::UnknownSession)?
            .accept_from_node(caller, env)
    }

    /// The mailbox of session `id` if `client` is its party's client.
    ///
    /// # Errors
    /// [`SubmitRefusal::UnknownSession`] otherwise (another client's
    /// session is not told apart from none).
    pub fn of_client(&self, id: &SessionId, client: &str) -> Result<Arc<Mailbox>, SubmitRefusal> {
        self.get(id)
            .filter(|m| m.client == client)
            .ok_or_else(|| SubmitRefusal::UnknownSession(hex::encode(id)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;
    use sigil_crypto::frost::dkg;

    struct Fixture {
        mailbox: Mailbox,
        party: SigningKey,
        party_secret: SessionSecret,
        node7: SigningKey,
    }

    /// A DKG among nodes [3, 7] and the party (index 2), relayed by 3.
    fn fixture() -> Fixture {
        let party = SigningKey::generate(&mut OsRng);
        let party_secret = SessionSecret::generate(&mut OsRng);
        let (node3, node7) = (SigningKey::generate(&mut OsRng), SigningKey::generate(&mut OsRng));
        let keys = PartyKeys {
            verifying_key: hex::encode(party.verifying_key().to_bytes()),
            hpke_public_key: hex::encode(party_secret.public_key()),
        };
        let mailbox = Mailbox::new(MailboxSpec {
            session_id: [9; 32],
            kind: SessionKindView::Dkg,
            key_id: "k".into(),
            scheme: "frost-ed25519".into(),
            client: "alice".into(),
            parties: vec![3, 7, EXTERNAL_PARTY],
            threshold: 2,
            coordinator: 3,
            expects: dkg::expects,
            keys,
            identities: HashMap::from([(3, node3.verifying_key()), (7, node7.verifying_key())]),
            deadline: Instant::now() + Duration::from_secs(5),
        })
        .unwrap();
        Fixture {
            mailbox,
            party,
            party_secret,
            node7,
        }
    }

    fn from_party(f: &Fixture, round: u16, to: Option<u16>, payload: &[u8]) -> RelayMessage {
        RelayMessage::new(&f.party, [9; 32], round, 2, to, payload, None, &mut OsRng).unwrap()
    }

    #[test]
    fn party_submissions_follow_membership_schedule_and_signature() {
        let f = fixture();
        let mb = &f.mailbox;
        assert_eq!(mb.submit(&from_party(&f, 0, None, b"r1")), Ok(Some(vec![3, 7])));
        // Idempotent: the same message again (Ed25519 signatures are
        // deterministic) is accepted and not relayed twice.
        assert_eq!(mb.submit(&from_party(&f, 0, None, b"r1")), Ok(None));
        assert_eq!(
            mb.submit(&from_party(&f, 0, None, b"other")),
            Err(SubmitRefusal::Conflict(0)),
            "another message in a used slot"
        );
        assert_eq!(mb.submit(&from_party(&f, 1, Some(1), b"share")), Ok(Some(vec![7])));
        assert!(matches!(
            mb.submit(&from_party(&f, 1, None, b"x")),
            Err(SubmitRefusal::OutOfSchedule(_))
        ));
        assert!(matches!(
            mb.submit(&from_party(&f, 5, Some(0), b"x")),
            Err(SubmitRefusal::OutOfSchedule(_))
        ));
        assert!(matches!(
            mb.submit(&from_party(&f, 1, Some(2), b"x")),
            Err(SubmitRefusal::NotAMember(_))
        ));
        assert!(matches!(
            mb.submit(&from_party(&f, 1, Some(9), b"x")),
            Err(SubmitRefusal::NotAMember(_))
        ));
        let mut posing = RelayMessage::new(&f.party, [9; 32], 1, 1, Some(0), b"x", None, &mut OsRng).unwrap();
        assert!(
            matches!(mb.submit(&posing), Err(SubmitRefusal::NotAMember(_))),
            "a node's index"
        );
        posing.from = 2;
        assert!(
            matches!(mb.submit(&posing), Err(SubmitRefusal::Unauthentic(_))),
            "re-labelled"
        );
        let forged = RelayMessage::new(&f.node7, [9; 32], 1, 2, Some(0), b"x", None, &mut OsRng).unwrap();
        assert!(matches!(mb.submit(&forged), Err(SubmitRefusal::Unauthentic(_))));
        let other_session = RelayMessage::new(&f.party, [8; 32], 1, 2, Some(0), b"x", None, &mut OsRng).unwrap();
        assert!(matches!(
            mb.submit(&other_session),
            Err(SubmitRefusal::UnknownSession(_))
        ));
        mb.finish(Outcome::Succeeded(serde_json::json!({})));
        assert_eq!(
            mb.submit(&from_party(&f, 1, Some(0), b"late")),
            Err(SubmitRefusal::Ended),
            "replayed after the end"
        );
    }

    /// The party's confirmation of a record: refused before the record is
    /// put, to a node, or as anything but the party's signature over that
    /// record; accepted once (repeats idempotent, another signature a
    /// conflict), relayed to no node; it ends the `confirming` state and
    /// wakes the coordinator's wait.
    #[tokio::test]
    async fn confirmations_are_the_partys_signature_over_the_record_put_to_it() {
        use ed25519_dalek::Signer as _;
        let f = fixture();
        let mb = &f.mailbox;
        let record = b"canonical record".to_vec();
        let confirm = |key: &SigningKey, signed: &[u8], to: Option<u16>| {
            let sig = key.sign(signed).to_bytes();
            RelayMessage::new(&f.party, [9; 32], CONFIRM_ROUND, 2, to, &sig, None, &mut OsRng).unwrap()
        };
        assert!(
            matches!(
                mb.submit(&confirm(&f.party, &record, None)),
                Err(SubmitRefusal::OutOfSchedule(_))
            ),
            "nothing to confirm yet"
        );
        mb.ask_confirmation(record.clone(), serde_json::json!({"key": {}}));
        assert!(mb.to_confirm().is_some());
        assert!(matches!(
            mb.submit(&confirm(&f.party, &record, Some(0))),
            Err(SubmitRefusal::OutOfSchedule(_))
        ));
        assert!(
            matches!(
                mb.submit(&confirm(&f.party, b"another record", None)),
                Err(SubmitRefusal::Unauthentic(_))
            ),
            "over another record"
        );
        assert!(
            matches!(
                mb.submit(&confirm(&f.node7, &record, None)),
                Err(SubmitRefusal::Unauthentic(_))
            ),
            "by another key"
        );
        let good = confirm(&f.party, &record, None);
        assert_eq!(mb.submit(&good), Ok(Some(vec![])), "to no node");
        assert_eq!(mb.submit(&good), Ok(None), "a repeat");
        assert!(mb.to_confirm().is_none());
        assert_eq!(mb.confirmation().await, Some(good.payload.clone()));
    }

    #[tokio::test]
    async fn node_messages_are_queued_once_in_order_and_checked() {
        let f = fixture();
        let mb = &f.mailbox;
        let to_party = |round: u16, to: Option<u16>, key: &SigningKey| {
            envelope(
                RelayMessage::new(
                    key,
                    [9; 32],
                    round,
                    1,
                    to,
                    b"m",
                    to.map(|_| f.party_secret.public_key()).as_ref(),
                    &mut OsRng,
                )
                .unwrap(),
                true,
            )
        };
        assert_eq!(mb.accept_from_node(7, &to_party(HELLO_ROUND, None, &f.node7)), Ok(()));
        assert_eq!(mb.accept_from_node(7, &to_party(0, None, &f.node7)), Ok(()));
        assert_eq!(
            mb.accept_from_node(7, &to_party(0, None, &f.node7)),
            Err(Reject::Duplicate)
        );
        assert_eq!(
            mb.accept_from_node(3, &to_party(1, Some(2), &f.node7)),
            Err(Reject::WrongSender),
            "node 3 sending as node 7"
        );
        assert!(matches!(
            mb.accept_from_node(7, &to_party(1, Some(2), &f.party)),
            Err(Reject::Unauthentic(_))
        ));
        assert_eq!(
            mb.accept_from_node(7, &to_party(1, Some(0), &f.node7)),
            Err(Reject::UnexpectedRound),
            "not for the party"
        );
        // A long poll returns when a message arrives or at its wait.
        let t = Instant::now();
        assert!(mb.messages_after(2, Duration::from_millis(50)).await.is_empty());
        assert!(t.elapsed() >= Duration::from_millis(50));
        // The nodes may end the session before their last message reaches
        // the mailbox: it is still queued for the party.
        mb.finish(Outcome::Succeeded(serde_json::json!({})));
        assert_eq!(mb.accept_from_node(7, &to_party(1, Some(2), &f.node7)), Ok(()));
        let all = mb.messages_after(0, Duration::ZERO).await;
        assert_eq!(
            all.iter().map(|(s, m)| (*s, m.round)).collect::<Vec<_>>(),
            vec![(1, HELLO_ROUND), (2, 0), (3, 1)]
        );
        let p2p = &all[2].1;
        assert_eq!(p2p.open(&f.node7.verifying_key(), Some(&f.party_secret)).unwrap(), b"m");
    }
}
