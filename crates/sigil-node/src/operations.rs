//! Long operations: a key generation the client chose not to wait for
//! (`POST /v1/keys?wait=false`, answered `202 Accepted`), followed with
//! `GET /v1/operations/{operation_id}` until it ends.
//!
//! Operations live in the memory of the node that coordinates them: a
//! restart of that node ends them (the key generation itself dies with
//! the coordinator; nothing half-made is kept, see
//! [`Node::run_keygen`](crate::Node::run_keygen)). Finished operations are
//! kept for [`KEEP_FINISHED`], and at most [`MAX_OPERATIONS`] at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorDetail};
use crate::views::KeyView;

/// How long a finished operation stays readable.
pub const KEEP_FINISHED: Duration = Duration::from_secs(3600);

/// Operations held at once (running and finished); past it, new
/// `wait=false` requests get a 503 until old ones expire.
pub const MAX_OPERATIONS: usize = 1024;

/// Counters a key generation updates as it goes (Paillier: one attempt per
/// DKG session over a batch of candidates). Lock-free; read at any time.
#[derive(Debug, Default)]
pub struct KeygenProgress {
    attempts: AtomicU64,
    candidates: AtomicU64,
    past_trial_division: AtomicU64,
}

impl KeygenProgress {
    /// Records one finished attempt: `candidates` pairs whose `N` was
    /// revealed, `past` of which passed trial division.
    pub fn attempt(&self, candidates: u64, past: u64) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.candidates.fetch_add(candidates, Ordering::Relaxed);
        self.past_trial_division.fetch_add(past, Ordering::Relaxed);
    }

    /// `(attempts, candidates, past_trial_division)` so far.
    #[must_use]
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.attempts.load(Ordering::Relaxed),
            self.candidates.load(Ordering::Relaxed),
            self.past_trial_division.load(Ordering::Relaxed),
        )
    }
}

/// An operation's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// Still working.
    Running,
    /// Ended with the key (`key`).
    Succeeded,
    /// Ended with an error (`error`, as the waiting request would have had
    /// it, with its HTTP status in `status`).
    Failed,
}

/// `GET /v1/operations/{operation_id}`: a key generation's or reshare's
/// progress or end.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OperationView {
    /// Operation id (UUID).
    pub operation_id: String,
    /// `create_key`, `reshare` or `refresh`.
    pub kind: &'static str,
    /// The id the key gets when it is made.
    pub key_id: String,
    /// The key's scheme.
    pub scheme: String,
    /// `running`, `succeeded` or `failed`.
    pub state: OperationState,
    /// Milliseconds since the operation started (until it ended, once ended).
    pub elapsed_ms: u64,
    /// Paillier: DKG sessions (attempts) finished so far.
    pub attempts: u64,
    /// Paillier: candidate pairs `(p, q)` whose `N` was revealed so far
    /// (pairs that passed the distributed sieve).
    pub candidates: u64,
    /// Paillier: how many of those `N` passed trial division and went to
    /// the biprimality test.
    pub past_trial_division: u64,
    /// The key, once `succeeded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyView>,
    /// The HTTP status the waiting request would have had, once `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The error, once `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// How an operation ended: the key, or the HTTP status and error.
type Outcome = Result<KeyView, (u16, ErrorDetail)>;

/// One operation.
#[derive(Debug)]
pub struct Operation {
    id: String,
    kind: &'static str,
    key_id: String,
    scheme: String,
    started: Instant,
    /// The key generation's counters.
    pub progress: KeygenProgress,
    end: Mutex<Option<(Instant, Outcome)>>,
}

impl Operation {
    /// The operation id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records the end.
    pub fn finish(&self, result: Result<KeyView, ApiError>) {
        let r = result.map_err(|e| e.detail());
        *self.end.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), r));
    }

    /// The API view.
    #[must_use]
    pub fn view(&self) -> OperationView {
        let (attempts, candidates, past_trial_division) = self.progress.get();
        let end = self.end.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (state, until, key, status, error) = match end {
            None => (OperationState::Running, Instant::now(), None, None, None),
            Some((at, Ok(k))) => (OperationState::Succeeded, at, Some(k), None, None),
            Some((at, Err((s, e)))) => (OperationState::Failed, at, None, Some(s), Some(e)),
        };
        OperationView {
            operation_id: self.id.clone(),
            kind: self.kind,
            key_id: self.key_id.clone(),
            scheme: self.scheme.clone(),
            state,
            elapsed_ms: u64::try_from(until.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX),
            attempts,
            candidates,
            past_trial_division,
            key,
            status,
            error,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        self.end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > KEEP_FINISHED)
    }
}

/// The operations of one node.
#[derive(Debug, Default)]
pub struct Operations {
    by_id: Mutex<HashMap<String, Arc<Operation>>>,
}

impl Operations {
    /// Registers a new running operation of `kind` (`create_key`,
    /// `reshare`, `refresh`) for `key_id`.
    ///
    /// # Errors
    /// 503 when [`MAX_OPERATIONS`] are held.
    pub fn start(&self, kind: &'static str, key_id: &str, scheme: &str) -> Result<Arc<Operation>, ApiError> {
        let mut by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        by_id.retain(|_, op| !op.expired(now));
        if by_id.len() >= MAX_OPERATIONS {
            return Err(ApiError::unavailable(
                vec![],
                format!("{MAX_OPERATIONS} operations are held; wait for some to end, or wait=true"),
            ));
        }
        let op = Arc::new(Operation {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            key_id: key_id.to_string(),
            scheme: scheme.to_string(),
            started: now,
            progress: KeygenProgress::default(),
            end: Mutex::new(None),
        });
        by_id.insert(op.id.clone(), op.clone());
        Ok(op)
    }

    /// The operation `id`, if held.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<Arc<Operation>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_end_show_in_the_view() {
        let ops = Operations::default();
        let op = ops.start("create_key", "k1", "paillier").unwrap();
        op.progress.attempt(10, 3);
        op.progress.attempt(5, 1);
        let v = ops.get(op.id()).unwrap().view();
        assert_eq!(v.state, OperationState::Running);
        assert_eq!((v.attempts, v.candidates, v.past_trial_division), (2, 15, 4));
        op.finish(Err(ApiError::bad_request("no")));
        let v = op.view();
        assert_eq!(v.state, OperationState::Failed);
        assert_eq!(v.status, Some(400));
        assert_eq!(v.error.unwrap().message, "no");
        let e = v.elapsed_ms;
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(op.view().elapsed_ms, e, "elapsed stops at the end");
        assert!(ops.get("nope").is_none());
    }
}
