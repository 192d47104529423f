//! The round schedule a node enforces on incoming messages, checked on the
//! sending side in simulations: [`checked`] wraps a party so that every
//! message it sends must be one its recipients expect (right round, right
//! kind: broadcast or point-to-point). A schedule copied from a protocol
//! crate (`cggmp21`'s rounds) then cannot drift from what the protocol
//! really sends without a simulation failing.

use futures::SinkExt;
use round_based::{Delivery, MessageDestination, MessageType, Mpc, MpcParty, Outgoing, ProtocolMessage};

use crate::PartyIndex;

/// A protocol's schedule: what party `me` of `n` expects from `from` in
/// `round` (`None`: nothing). The same functions the node's session layer
/// enforces (`frost::dkg::expects`, `ecdsa::expects::*`, ...).
pub type Schedule = fn(u16, PartyIndex, PartyIndex, u16) -> Option<MessageType>;

/// Panics unless every recipient of `out`, sent by party `i` of `n`,
/// expects it under `schedule`.
///
/// # Panics
/// On a message outside the schedule (this is for tests).
#[allow(clippy::panic)]
pub fn assert_scheduled<M: ProtocolMessage>(out: &Outgoing<M>, i: PartyIndex, n: u16, schedule: Schedule) {
    let round = out.msg.round();
    let (kind, recipients): (MessageType, Vec<PartyIndex>) = match out.recipient {
        MessageDestination::AllParties => (MessageType::Broadcast, (0..n).filter(|&j| j != i).collect()),
        MessageDestination::OneParty(j) => (MessageType::P2P, vec![j]),
    };
    for j in recipients {
        let want = schedule(round, i, j, n);
        if want != Some(kind) {
            panic!("party {i} sent a {kind:?} message of round {round} to party {j}, which expects {want:?}");
        }
    }
}

/// `party` (index `i` of `n`) with every outgoing message checked by
/// [`assert_scheduled`].
pub fn checked<M, D>(party: MpcParty<M, D>, i: PartyIndex, n: u16, schedule: Schedule) -> MpcParty<M, impl Delivery<M>>
where
    M: ProtocolMessage + Send + 'static,
    D: Delivery<M>,
{
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, outgoing) = delivery.split();
    let outgoing = outgoing.with(move |out: Outgoing<M>| {
        assert_scheduled(&out, i, n, schedule);
        futures::future::ready(Ok::<_, D::SendError>(out))
    });
    MpcParty::connected((incoming, outgoing))
}
