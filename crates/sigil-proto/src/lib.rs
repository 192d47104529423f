//! Sigil's protobuf definitions and the gRPC code generated from them
//! (prost + tonic, compiled by protox, so no `protoc` is needed).
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

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

/// `prime.v1`: the prime pool service (`sigil primes serve`).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]
pub mod prime {
    tonic::include_proto!("prime.v1");
}

/// `sigil.v1`: the client-facing gRPC API (`Signer`), beside REST.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]
pub mod signer {
    tonic::include_proto!("sigil.v1");
}

/// The encoded `FileDescriptorSet` of every Sigil proto, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sigil_descriptor");
