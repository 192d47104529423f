//! A session proposal's kind, parsed once: [`Part`] is what the
//! participant's later steps read (the authority checks, admission, the
//! round schedule and the family's part), so the scheme a proposal names
//! is parsed here and nowhere after.
//!
//! Who sends a proposal and what the receiver checks are in
//! [`crate::session`] and [`crate::authority`]; this module only gives the
//! proto's kind its types.

use sigil_crypto::Scheme;
use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{AuxProposal, DkgProposal, PresignProposal, ReshareProposal, SignProposal};

use crate::error::SessionError;
use crate::family;
use crate::limits::SessionKind;
use crate::session::ExpectFn;

/// A proposal's kind with its scheme parsed and its family picked.
pub(crate) enum Part {
    /// A DKG of a new key of `scheme`.
    Dkg {
        /// The scheme `d.scheme` names.
        scheme: Scheme,
        /// The proposal.
        d: DkgProposal,
    },
    /// A signature (or Paillier decryption) with a key of `scheme`.
    Sign {
        /// The scheme `s.scheme` names (checked against the key's record by
        /// the participant).
        scheme: Scheme,
        /// The proposal.
        s: SignProposal,
    },
    /// ECDSA presigning for the pool of a key.
    Presign(PresignProposal),
    /// CGGMP21 auxiliary info for a party set.
    Aux(AuxProposal),
    /// A refresh or reshare of a key to its next epoch.
    Reshare(Box<ReshareProposal>),
}

impl Part {
    /// Parses `kind`.
    ///
    /// # Errors
    /// [`SessionError::Invalid`] for a scheme this build does not know.
    pub(crate) fn parse(kind: Kind) -> Result<Self, SessionError> {
        let scheme = |name: &str| name.parse::<Scheme>().map_err(|e| SessionError::Invalid(e.to_string()));
        Ok(match kind {
            Kind::Dkg(d) => Part::Dkg {
                scheme: scheme(&d.scheme)?,
                d,
            },
            Kind::Sign(s) => Part::Sign {
                scheme: scheme(&s.scheme)?,
                s,
            },
            Kind::Presign(p) => Part::Presign(p),
            Kind::Aux(a) => Part::Aux(a),
            Kind::Reshare(r) => Part::Reshare(Box::new(r)),
        })
    }

    /// The round schedule the session enforces on incoming messages, and
    /// the kind its admission counts, among `parties` (session order).
    pub(crate) fn schedule(&self, parties: &[u16]) -> (ExpectFn, SessionKind) {
        match self {
            Part::Dkg { scheme, .. } => {
                let f = family::of(*scheme);
                (f.keygen_schedule(parties), f.keygen_kind(parties))
            }
            Part::Sign { scheme, s } => {
                let f = family::of(*scheme);
                (f.sign_schedule(s), f.sign_kind())
            }
            Part::Presign(_) => crate::ecdsa::presign_schedule(),
            Part::Aux(_) => crate::ecdsa::aux_schedule(),
            Part::Reshare(_) => (sigil_crypto::reshare::expects, SessionKind::Dkg),
        }
    }
}
