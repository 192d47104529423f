//! The coordinator side of a session: the node that took a request
//! proposes the session to its parties (`RunSession`), runs its own part
//! beside their calls and collects every party's outcome
//! ([`Node::coordinate_quorum`] picks the parties and falls back to other
//! sets when some are busy or down).

use super::*;

/// How [`Node`] coordinates one session.
#[derive(Clone, Copy)]
pub(crate) struct Run<'a> {
    /// Wait for every party's outcome (`false`: party 0's is enough).
    pub(crate) all: bool,
    /// The session deadline.
    pub(crate) budget: Duration,
    /// Run this node's own part (`false`: it already did, e.g. its
    /// partial signature from a pooled presignature).
    pub(crate) run_local: bool,
    /// The session id (32 random bytes).
    pub(crate) session_id: SessionId,
    /// The client's request the session carries out (none for presigning).
    pub(crate) auth: Option<&'a ClientAuthorization>,
}

/// The remote parties' answers to a proposal: `(party index, result)`.
pub(crate) type RemoteAnswers = tokio::sync::mpsc::UnboundedReceiver<(usize, Result<SessionOutcome, SessionError>)>;

/// What the coordinator learned from a finished session.
pub(crate) struct Outcomes {
    pub(crate) by_party: Vec<Option<SessionOutcome>>,
}

impl Outcomes {
    /// The signature party 0 (the aggregator) reported.
    ///
    /// # Errors
    /// Internal, when it reported none.
    pub(crate) fn aggregate_signature(self) -> Result<Vec<u8>, NodeError> {
        let signature = self
            .by_party
            .into_iter()
            .next()
            .flatten()
            .map(|o| o.signature)
            .unwrap_or_default();
        if signature.is_empty() {
            return Err(NodeError::internal("aggregator returned no signature"));
        }
        Ok(signature)
    }
}

/// How long a node that failed to answer is tried last, in milliseconds.
const DOWN_PENALTY_MS: u64 = 5_000;

impl Node {
    pub(crate) fn mark_down(&self, node: u16) {
        self.health.failed(node);
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, Instant::now());
    }

    pub(crate) fn recently_down(&self, node: u16) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .is_some_and(|t| t.elapsed() < Duration::from_millis(DOWN_PENALTY_MS))
    }

    /// Proposes a session to `parties` and runs our own part if we are one.
    /// Waits for every party (`all = true`) or only for party 0's outcome.
    pub(crate) async fn coordinate(
        &self,
        parties: &[u16],
        kind: Kind,
        all: bool,
        auth: Option<&ClientAuthorization>,
    ) -> Result<Outcomes, SessionError> {
        self.coordinate_with_budget(parties, kind, all, self.timeout(), auth)
            .await
    }

    /// [`Node::coordinate`] with a session deadline of `budget`.
    pub(crate) async fn coordinate_with_budget(
        &self,
        parties: &[u16],
        kind: Kind,
        all: bool,
        budget: Duration,
        auth: Option<&ClientAuthorization>,
    ) -> Result<Outcomes, SessionError> {
        let run = Run {
            all,
            budget,
            run_local: true,
            session_id: random_session_id(),
            auth,
        };
        self.coordinate_inner(parties, kind, run)
            .await
            .map_err(|e| self.replay_as_unavailable(e))
    }

    /// Runs a session as [`Run`] says: proposes it to `parties`, runs this
    /// node's part (unless `run.run_local` is false) and collects the
    /// outcomes.
    pub(crate) async fn coordinate_inner(
        &self,
        parties: &[u16],
        kind: Kind,
        run: Run<'_>,
    ) -> Result<Outcomes, SessionError> {
        let proposal = SessionProposal {
            session_id: run.session_id.to_vec(),
            coordinator: u32::from(self.cfg.node_id),
            parties: parties.iter().map(|&p| u32::from(p)).collect(),
            deadline_ms: u32::try_from(run.budget.as_millis()).unwrap_or(u32::MAX),
            authorization: run.auth.cloned(),
            kind: Some(kind),
        };
        let (mut rx, tasks) = self.propose_to_peers(parties, &proposal, run.budget);
        let r = self
            .collect_outcomes(parties, proposal, &run, &mut rx, tasks.len())
            .await;
        if r.is_err() {
            // Stop asking the others; on success their calls run to the
            // end (they finish their part and audit it).
            tasks.iter().for_each(tokio::task::JoinHandle::abort);
        }
        r
    }

    /// Sends `proposal` to every party but this node, each call in its own
    /// task; the answers arrive on the channel as `(party index, result)`.
    pub(crate) fn propose_to_peers(
        &self,
        parties: &[u16],
        proposal: &SessionProposal,
        budget: Duration,
    ) -> (RemoteAnswers, Vec<tokio::task::JoinHandle<()>>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (i, &node) in parties.iter().enumerate() {
            // The external party takes part through its relay (this node).
            if node == self.cfg.node_id || node == sigil_crypto::relay::EXTERNAL_PARTY {
                continue;
            }
            let (peers, p, tx) = (self.peers.clone(), proposal.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let r = peers.run_session(node, p, budget + Duration::from_millis(500)).await;
                let _ = tx.send((i, r));
            }));
        }
        (rx, tasks)
    }

    /// Runs this node's own part (as `run` says) while `remote` answers
    /// arrive, until every party's outcome (`run.all`) or party 0's is in.
    /// An unavailable or refusing party ends it at once (the caller may
    /// pick other parties; a refusal is final); protocol errors and
    /// timeouts are kept while the rest finishes.
    pub(crate) async fn collect_outcomes(
        &self,
        parties: &[u16],
        proposal: SessionProposal,
        run: &Run<'_>,
        remote: &mut RemoteAnswers,
        mut remote_left: usize,
    ) -> Result<Outcomes, SessionError> {
        let my_index = parties.iter().position(|&p| p == self.cfg.node_id);
        let mut by_party: Vec<Option<SessionOutcome>> = vec![None; parties.len()];
        let mut local_pending = run.run_local && my_index.is_some();
        if !run.run_local {
            if let Some(slot) = my_index.and_then(|i| by_party.get_mut(i)) {
                *slot = Some(SessionOutcome::default());
            }
        }
        let is_party = local_pending;
        // Our own part runs in a task of its own: a heavy protocol takes
        // its thread off the workers (`session::run_heavy`), and the
        // peers' answers must still be read meanwhile. Aborted when we
        // return first (it then ends at its next await or its deadline).
        let me = if is_party { self.me.upgrade() } else { None };
        if is_party && me.is_none() {
            return Err(SessionError::Internal("the node is shutting down".into()));
        }
        let mut task = me.map(|me| tokio::spawn(async move { me.check_and_run(proposal, true).await }));
        let _abort = AbortOnDrop(task.as_ref().map(tokio::task::JoinHandle::abort_handle));
        let local = async {
            match task.as_mut() {
                Some(h) => h
                    .await
                    .unwrap_or_else(|e| Err(SessionError::Internal(format!("own session part: {e}")))),
                None => futures::future::pending().await,
            }
        };
        tokio::pin!(local);
        let mut first_error: Option<SessionError> = None;
        loop {
            let done = if run.all {
                // An external party reports no outcome to the coordinator.
                by_party
                    .iter()
                    .zip(parties)
                    .all(|(o, &p)| o.is_some() || p == sigil_crypto::relay::EXTERNAL_PARTY)
            } else {
                by_party.first().is_some_and(Option::is_some)
            };
            if done {
                return Ok(Outcomes { by_party });
            }
            if !local_pending && remote_left == 0 {
                break;
            }
            let (i, r) = tokio::select! {
                r = &mut local, if local_pending => {
                    local_pending = false;
                    (my_index.unwrap_or_default(), r)
                }
                Some((i, r)) = remote.recv(), if remote_left > 0 => {
                    remote_left -= 1;
                    if let Err(
                        e @ (SessionError::Unavailable { .. } | SessionError::Refused { .. } | SessionError::Busy { .. }),
                    ) = r
                    {
                        return Err(e);
                    }
                    (i, r)
                }
            };
            match r {
                Ok(o) => {
                    if let Some(slot) = by_party.get_mut(i) {
                        *slot = Some(o);
                    }
                }
                // Our own part failed: that is the session's outcome.
                Err(e) if Some(i) == my_index => return Err(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| SessionError::Internal("session ended without an outcome".into())))
    }

    /// Runs a session among `key.threshold` of the key's parties: this node
    /// first when it is one, the others drawn by health
    /// ([`selection::Health::choose`]). When a chosen
    /// party is unreachable it is marked down and another set is tried,
    /// until the session deadline. Returns the outcomes and the parties
    /// used (in session order).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] naming the unreachable nodes when fewer
    /// than `threshold` remain; the session's own errors otherwise.
    pub(crate) async fn coordinate_quorum(
        &self,
        key: &KeyRecord,
        kind: Kind,
        wait_all: bool,
        role: &str,
        auth: Option<&ClientAuthorization>,
        avoid: &[u16],
    ) -> Result<(Outcomes, Vec<u16>), SessionError> {
        let deadline = Instant::now() + self.timeout();
        let mut excluded: Vec<u16> = avoid.to_vec();
        let mut last_reason = String::new();
        loop {
            // Without its client, an external party cannot sign.
            let candidates: Vec<u16> = sigil_crypto::relay::node_parties(&key.parties)
                .filter(|p| !excluded.contains(p))
                .collect();
            if candidates.len() < usize::from(key.threshold) {
                return Err(SessionError::Unavailable {
                    nodes: excluded,
                    reason: format!(
                        "fewer than {} {role} reachable; last error: {last_reason}",
                        key.threshold
                    ),
                });
            }
            let chosen = self
                .health
                .choose(self.cfg.node_id, &candidates, usize::from(key.threshold), |n| {
                    self.recently_down(n)
                });
            let started = Instant::now();
            match self.coordinate(&chosen, kind.clone(), wait_all, auth).await {
                Ok(o) => {
                    let took = started.elapsed();
                    chosen
                        .iter()
                        .filter(|&&n| n != self.cfg.node_id)
                        .for_each(|&n| self.health.answered(n, took));
                    return Ok((o, chosen));
                }
                Err(SessionError::Busy { node, reason }) if Instant::now() < deadline => {
                    tracing::info!(node, %reason, "{role}: a party is busy, choosing another set");
                    if !excluded.contains(&node) {
                        excluded.push(node);
                    }
                    last_reason = reason;
                }
                Err(SessionError::Unavailable { nodes, reason }) if Instant::now() < deadline => {
                    tracing::info!(?nodes, %reason, "{role}: a party is unavailable, choosing another set");
                    for n in nodes {
                        self.mark_down(n);
                        if !excluded.contains(&n) {
                            excluded.push(n);
                        }
                    }
                    last_reason = reason;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Node {
    /// A peer's refusal of a token issued before that peer started (it
    /// restarted since: its replay cache starts empty) is the peer's state,
    /// not the client's doing: the party counts as busy, so another set is
    /// tried (the others check the token themselves) and, if none is left,
    /// the client gets a 503 to retry with a new token. A real replay
    /// (`replayed`: the token was presented by another coordinator) stays
    /// a refusal that reaches the client.
    pub(crate) fn replay_as_unavailable(&self, e: SessionError) -> SessionError {
        match e {
            SessionError::Refused {
                node,
                refusal: auth::Refusal::PredatesStart,
            } if node != self.cfg.node_id => SessionError::Busy {
                node,
                reason: format!("node {node} started after the client's token was issued; retry with a new token"),
            },
            e => e,
        }
    }
}

/// Aborts a task when dropped (a `JoinHandle` only detaches).
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}
