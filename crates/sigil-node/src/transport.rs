//! The client side of the peer transport: lazily connected mTLS gRPC
//! clients of `sigil.peer.v1.Peer`, one per other node. The session layer
//! sends through it; the server side is [`crate::peer`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sigil_proto::peer::peer_client::PeerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::certs::node_dns_name;
use crate::config::NodeConfig;

/// Lazily connected mTLS clients, one per other node.
#[derive(Clone, Default)]
pub struct PeerClients {
    clients: Arc<HashMap<u16, PeerClient<Channel>>>,
}

impl PeerClients {
    /// Builds a client for every node of `cfg` except this one. Nothing is
    /// dialled until first use.
    ///
    /// # Errors
    /// Unreadable certificate files or a malformed peer address.
    pub fn new(cfg: &NodeConfig, ca: &Certificate, identity: &Identity) -> anyhow::Result<Self> {
        let mut clients = HashMap::new();
        for n in cfg.nodes.iter().filter(|n| n.id != cfg.node_id) {
            let tls = ClientTlsConfig::new()
                .ca_certificate(ca.clone())
                .identity(identity.clone())
                .domain_name(node_dns_name(n.id));
            let ep = Endpoint::from_shared(format!("https://{}", n.peer_addr))?
                .tls_config(tls)?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_millis(1000))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_while_idle(true);
            let client = PeerClient::new(ep.connect_lazy()).max_decoding_message_size(16 * 1024 * 1024);
            clients.insert(n.id, client);
        }
        Ok(PeerClients {
            clients: Arc::new(clients),
        })
    }

    /// The client for node `id`.
    pub fn client(&self, id: u16) -> Option<PeerClient<Channel>> {
        self.clients.get(&id).cloned()
    }
}
