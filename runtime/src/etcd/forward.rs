//! Forwarding of etcd writes from a follower to the leader.
//!
//! etcd accepts writes on every member and carries them to the leader itself; etcd clients do
//! not redirect. Keel's core proposes only on the leader, so a follower's etcd API sends the
//! same etcd request to the leader's etcd API (the leader hint's address serves every API) and
//! relays the answer. A forwarded request carries the [`FORWARDED`] metadata, and a node that
//! receives one while not leading answers `etcdserver: leader changed` instead of forwarding
//! again: at most one hop, no loops. Connections are cached per address, at most
//! [`CHANNELS_MAX`] of them (the cache is emptied when full).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use keel::tls::ClientTls;
use keel_core::LeaderHint;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::Status;

use super::errors;
use crate::node::ClientError;

/// Metadata key marking a request forwarded by a follower.
pub(crate) const FORWARDED: &str = "keel-etcd-forwarded";

/// Most leader connections kept.
const CHANNELS_MAX: usize = 16;

/// Connections to leaders, by address.
#[derive(Debug)]
pub(crate) struct Forwarder {
    channels: Mutex<BTreeMap<String, Channel>>,
    timeout: Duration,
    /// The node's outbound TLS (`crate::tls`), if it has one.
    tls: Option<ClientTls>,
}

impl Forwarder {
    /// A forwarder whose calls (connecting included) last at most `timeout_ms`, over TLS when
    /// `tls` is given.
    pub(crate) fn new(timeout_ms: u64, tls: Option<ClientTls>) -> Self {
        Self { channels: Mutex::new(BTreeMap::new()), timeout: Duration::from_millis(timeout_ms.max(1)), tls }
    }

    /// A connection to the leader named by `hint`, unless the request was forwarded already or
    /// no leader is known: then the etcd error for "not the leader".
    pub(crate) async fn channel(&self, hint: &LeaderHint, metadata: &MetadataMap) -> Result<Channel, Status> {
        if metadata.get(FORWARDED).is_some() || hint.leader_id.is_none() || hint.address.is_empty() {
            return Err(errors::of_client(&ClientError::NotLeader(hint.clone())));
        }
        let cached = self.channels.lock().ok().and_then(|channels| channels.get(&hint.address).cloned());
        let channel = match cached {
            Some(channel) => channel,
            None => {
                let channel = self.connect(&hint.address).await?;
                if let Ok(mut channels) = self.channels.lock() {
                    if channels.len() >= CHANNELS_MAX {
                        channels.clear();
                    }
                    channels.insert(hint.address.clone(), channel.clone());
                }
                channel
            }
        };
        Ok(channel)
    }

    /// Runs a forwarded call under the forwarding deadline; a failed call forgets the connection.
    pub(crate) async fn call<T>(
        &self,
        address: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(errors::status(errors::TIMEOUT)),
        };
        if result.as_ref().is_err_and(|status| status.code() == tonic::Code::Unavailable) {
            self.forget(address);
        }
        result
    }

    /// Forgets the connection to `address` (after a failed call), so the next call reconnects.
    pub(crate) fn forget(&self, address: &str) {
        if let Ok(mut channels) = self.channels.lock() {
            channels.remove(address);
        }
    }

    /// A new connection to the member at `address`, made within the forwarding deadline.
    pub(crate) async fn connect(&self, address: &str) -> Result<Channel, Status> {
        let unreachable = |what: String| Status::unavailable(format!("etcdserver: leader unreachable: {what}"));
        let endpoint =
            keel::tls::endpoint(address, self.tls.as_ref()).map_err(unreachable)?.connect_timeout(self.timeout);
        endpoint.connect().await.map_err(|error| unreachable(error.to_string()))
    }
}

/// A request to forward: `message` with the [`FORWARDED`] mark.
pub(crate) fn forwarded<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_forwarded_request_is_never_forwarded_again_and_no_leader_is_said() {
        let forwarder = Forwarder::new(100, None);
        let hint = LeaderHint { leader_id: Some(2), address: "127.0.0.1:1".into(), term: 3 };
        let request = forwarded(());
        let second_hop = forwarder.channel(&hint, request.metadata()).await.unwrap_err();
        assert_eq!((second_hop.code(), second_hop.message()), (tonic::Code::Unavailable, errors::LEADER_CHANGED.1));
        let unknown = LeaderHint { leader_id: None, address: String::new(), term: 3 };
        let no_leader = forwarder.channel(&unknown, &MetadataMap::new()).await.unwrap_err();
        assert_eq!(no_leader.message(), errors::NO_LEADER.1);
    }
}
