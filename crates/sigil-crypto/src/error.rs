//! The one error type of the protocols.

use crate::PartyIndex;

/// Why a protocol run failed.
///
/// Variants that blame carry `culprits`: the 0-based session party indices of
/// the parties that provably misbehaved. [`Error::culprits`] matches
/// exhaustively so that a new variant cannot forget to say whom it blames.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A party's DKG share does not match its published commitment
    /// (RFC 9591 Appendix C, `part3`).
    #[error("invalid secret share from parties {culprits:?}")]
    InvalidSecretShare {
        /// Session party indices of the senders of bad shares.
        culprits: Vec<PartyIndex>,
    },
    /// A reshare dealer's Feldman commitments are missing, of the wrong
    /// length or not bound to its old verifying share, or a party that
    /// does not deal sent some (WWW02 section 4, step 3).
    #[error("invalid resharing commitments from parties {culprits:?}")]
    InvalidCommitment {
        /// Session party indices of the senders of bad commitments.
        culprits: Vec<PartyIndex>,
    },
    /// A party's DKG proof of knowledge of its secret does not verify.
    #[error("invalid proof of knowledge from parties {culprits:?}")]
    InvalidProofOfKnowledge {
        /// Session party indices of the senders of bad proofs.
        culprits: Vec<PartyIndex>,
    },
    /// A signature share does not verify against the signer's verifying
    /// share (RFC 9591 §5.4, cheater detection).
    #[error("invalid signature share from parties {culprits:?}")]
    InvalidSignatureShare {
        /// Session party indices of the cheating signers.
        culprits: Vec<PartyIndex>,
    },
    /// Parties saw different round-1 DKG packages (the broadcast was not
    /// consistent). The listed parties reported a different transcript hash
    /// than ours; this does not prove which party equivocated.
    #[error("inconsistent broadcast: parties {parties:?} saw a different round-1 transcript")]
    InconsistentBroadcast {
        /// Session party indices whose echo differed from ours.
        parties: Vec<PartyIndex>,
    },
    /// The parameters of the run are invalid (threshold, party count,
    /// signer set, our own index).
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// A FROST operation failed for a reason that blames nobody.
    #[error("frost: {0}")]
    Frost(String),
    /// The transport failed to send or receive a message.
    #[error("transport: {0}")]
    Transport(String),
}

impl Error {
    /// The parties this error proves misbehaved, as session party indices.
    pub fn culprits(&self) -> Vec<PartyIndex> {
        match self {
            Error::InvalidSecretShare { culprits }
            | Error::InvalidProofOfKnowledge { culprits }
            | Error::InvalidCommitment { culprits }
            | Error::InvalidSignatureShare { culprits } => culprits.clone(),
            Error::InconsistentBroadcast { .. }
            | Error::InvalidParameters(_)
            | Error::Frost(_)
            | Error::Transport(_) => Vec::new(),
        }
    }

    pub(crate) fn transport(e: impl core::fmt::Display) -> Self {
        Error::Transport(e.to_string())
    }
}
