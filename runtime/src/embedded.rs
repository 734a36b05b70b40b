//! Embedded mode: a Rust program runs a Keel node in its own process and talks to it through a
//! [`NodeHandle`], with no serialization and no network hop.
//!
//! [`EmbeddedNode::start`] runs the same server as the `keel node` binary (storage, peer
//! transport, and the gRPC services, so that peers and other clients reach it as usual) on the
//! caller's tokio runtime, and returns once the node has started. Requests through
//! [`EmbeddedNode::handle`] travel as Rust values straight to the node's driver: a write is
//! answered once it is committed on a quorum (fsynced there) and applied; a linearizable read is
//! confirmed by ReadIndex. Redirection is the embedder's job: a follower answers writes with
//! [`ClientError::NotLeader`](crate::node::ClientError::NotLeader) and the leader's address; use
//! [`keel::client::KeelClient`] for a client that follows hints by itself.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use keel_core::kv::KvCommand;
//! use keel_runtime::embedded::EmbeddedNode;
//! use keel_runtime::node::{NodeConfig, ReadConsistency};
//! use keel_runtime::server::ServerConfig;
//!
//! let address = "127.0.0.1:7101".to_string();
//! let members = BTreeMap::from([(1, address.clone())]);
//! let mut config = ServerConfig::new(NodeConfig::new(1, members), address.parse()?);
//! config.data_dir = Some("/var/lib/my-app/keel".into());
//! let node = EmbeddedNode::start(config).await?;
//! let handle = node.handle();
//! handle.write(KvCommand::Put { key: "/greeting".into(), value: "hello".into(), ttl_ms: None }).await?;
//! let read = handle.read(vec!["/greeting".into()], ReadConsistency::Linearizable).await?;
//! assert_eq!(read[0].as_ref().map(|kv| &kv.value[..]), Some(&b"hello"[..]));
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use tokio::sync::oneshot;

use crate::node::NodeHandle;
use crate::server::{serve_embedded, ServerConfig, ServerError};

/// A node running inside this process; see the module docs.
pub struct EmbeddedNode {
    handle: NodeHandle,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl EmbeddedNode {
    /// Validates `config`, opens the storage, starts the node and its gRPC server on the current
    /// tokio runtime, and returns once the node runs (it may not have a leader yet).
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        let (started_tx, started_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        let mut server = tokio::spawn(serve_embedded(config, shutdown, started_tx));
        tokio::select! {
            biased;
            started = started_rx => match started {
                Ok(handle) => Ok(Self { handle, stop, server }),
                // The server ended before the node started: its result says why.
                Err(_) => Err(finished(server.await)),
            },
            ended = &mut server => Err(finished(ended)),
        }
    }

    /// The in-process client of this node (cheap to clone).
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops the node the way SIGTERM stops `keel node`: a leader hands leadership over first,
    /// calls in flight drain, storage closes. Returns the node's fatal error, if it stopped on
    /// one.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(());
        match self.server.await {
            Ok(result) => result,
            Err(error) => Err(ServerError::Serve { address: String::new(), message: error.to_string() }),
        }
    }
}

/// The error of a server task that ended during start-up.
fn finished(joined: Result<Result<(), ServerError>, tokio::task::JoinError>) -> ServerError {
    match joined {
        Ok(Err(error)) => error,
        Ok(Ok(())) => ServerError::Serve { address: String::new(), message: "the server ended during start-up".into() },
        Err(error) => ServerError::Serve { address: String::new(), message: error.to_string() },
    }
}
