//! Sigil's protobuf definitions and the gRPC code generated from them
//! (prost + tonic, compiled by protox, so no `protoc` is needed).
#![forbid(unsafe_code)]

/// `sigil.peer.v1`: the node-to-node protocol (sessions, envelopes, key
/// finalization). Spoken only over mutual TLS inside the cluster.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]
pub mod peer {
    tonic::include_proto!("sigil.peer.v1");
}
