//! Forwarding of etcd writes from a follower to the leader.
//!
//! etcd accepts writes on every member and carries them to the leader itself; etcd clients do
//! not redirect. Keel's core proposes only on the leader, so a follower's etcd API sends the
//! same etcd request to the leader's etcd API (the leader hint's address serves every API) and
//! relays the answer. A forwarded request carries the [`FORWARDED`] metadata, and a node that
//! receives one while not leading answers `etcdserver: leader changed` instead of forwarding
//! again: at most one hop, no loops. Connections are cached per address, at most
//! [`CHANNELS_MAX`] of them (the cache is emptied when full).
//!
//! The relayed answer's header names the member that answered the client, as etcd's does (the
//! member that received a write answers it there): the leader's header is relabelled with this
//! member's id ([`Answer`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use keel::proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseRevokeResponse, MemberAddResponse, MemberPromoteResponse, MemberRemoveResponse, MemberUpdateResponse,
    PutResponse, ResponseHeader, TxnResponse,
};
use keel_core::LeaderHint;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::Status;

use super::errors;
use crate::node::ClientError;
use crate::tls_reload::OutboundTls;

/// Metadata key marking a request forwarded by a follower.
pub(crate) const FORWARDED: &str = "keel-etcd-forwarded";

/// Most leader connections kept.
const CHANNELS_MAX: usize = 16;

/// An etcd answer that a follower relays: its header can be relabelled with the relaying member
/// (the Auth service's answers implement it in `auth.rs`).
pub(crate) trait Answer {
    /// The answer's header, if it has one.
    fn header_mut(&mut self) -> Option<&mut ResponseHeader>;
}

macro_rules! answers {
    ($($answer:ty),* $(,)?) => {
        $(impl Answer for $answer {
            fn header_mut(&mut self) -> Option<&mut ResponseHeader> {
                self.header.as_mut()
            }
        })*
    };
}

answers!(
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseKeepAliveResponse,
    MemberAddResponse,
    MemberRemoveResponse,
    MemberUpdateResponse,
    MemberPromoteResponse,
    AlarmResponse,
);

/// Connections to leaders, by address.
#[derive(Debug)]
pub(crate) struct Forwarder {
    /// This member's id, which relayed answers carry.
    member_id: u64,
    channels: Mutex<BTreeMap<String, Channel>>,
    timeout: Duration,
    /// The node's outbound TLS (`crate::tls_reload`), if it has one.
    tls: Option<OutboundTls>,
}

impl Forwarder {
    /// The forwarder of member `member_id`, whose calls (connecting included) last at most
    /// `timeout_ms`, over TLS when `tls` is given.
    pub(crate) fn new(member_id: u64, timeout_ms: u64, tls: Option<OutboundTls>) -> Self {
        let timeout = Duration::from_millis(timeout_ms.max(1));
        Self { member_id, channels: Mutex::new(BTreeMap::new()), timeout, tls }
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

    /// Runs a forwarded call under the forwarding deadline and relabels its answer as this
    /// member's; a failed call forgets the connection.
    pub(crate) async fn relay<T: Answer>(
        &self,
        address: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        self.call(address, call).await.map(|answer| self.relabel(answer))
    }

    /// `answer` with this member's id in its header, as the member that answers the client.
    pub(crate) fn relabel<T: Answer>(&self, mut answer: T) -> T {
        if let Some(header) = answer.header_mut() {
            header.member_id = self.member_id;
        }
        answer
    }

    /// Runs a call to another member under the forwarding deadline; a failed call forgets the
    /// connection.
    pub(crate) async fn call<T>(
        &self,
        address: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map(tonic::Response::into_inner).map_err(link_failure),
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
        let tls = self.tls.as_ref().map(OutboundTls::current);
        let endpoint = keel::tls::endpoint(address, tls.as_ref()).map_err(unreachable)?.connect_timeout(self.timeout);
        endpoint.connect().await.map_err(|error| unreachable(error.to_string()))
    }
}

/// A failed forwarded call, in etcd's words: a failure of the link itself (tonic's `UNKNOWN`
/// "transport error", which carries the transport's error as its source; the connection broke,
/// or the leader refused this node's certificate after the request was sent) leaves the
/// request's outcome unknown, which etcd says as `request timed out, possibly due to previous
/// leader failure` and its clients know as a typed error. The leader's own answers pass as they
/// are.
fn link_failure(status: Status) -> Status {
    if status.code() == tonic::Code::Unknown && std::error::Error::source(&status).is_some() {
        tracing::debug!("a forwarded request failed on the link to the leader: {status}");
        return errors::status(errors::TIMEOUT_LEADER_FAIL);
    }
    status
}

/// A request to forward: `message` with the [`FORWARDED`] mark and the caller's token from the
/// original request's `metadata` (the leader checks the caller's rights again).
pub(crate) fn forwarded<T>(message: T, metadata: &MetadataMap) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    if let Some(token) = super::access::token_of(metadata).and_then(|token| token.parse().ok()) {
        request.metadata_mut().insert(super::auth_token::TOKEN_METADATA, token);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_forwarded_request_is_never_forwarded_again_and_no_leader_is_said() {
        let forwarder = Forwarder::new(1, 100, None);
        let hint = LeaderHint { leader_id: Some(2), address: "127.0.0.1:1".into(), term: 3 };
        let request = forwarded((), &MetadataMap::new());
        let second_hop = forwarder.channel(&hint, request.metadata()).await.unwrap_err();
        assert_eq!((second_hop.code(), second_hop.message()), (tonic::Code::Unavailable, errors::LEADER_CHANGED.1));
        let unknown = LeaderHint { leader_id: None, address: String::new(), term: 3 };
        let no_leader = forwarder.channel(&unknown, &MetadataMap::new()).await.unwrap_err();
        assert_eq!(no_leader.message(), errors::NO_LEADER.1);
    }

    #[test]
    fn a_relayed_answer_names_the_relaying_member_and_keeps_the_rest_of_its_header() {
        let forwarder = Forwarder::new(3, 100, None);
        let header = ResponseHeader { cluster_id: 9, member_id: 1, revision: 42, raft_term: 5 };
        let answer = forwarder.relabel(PutResponse { header: Some(header), prev_kv: None });
        let expected = ResponseHeader { member_id: 3, ..header };
        assert_eq!(answer.header, Some(expected));
        let bare = forwarder.relabel(TxnResponse::default());
        assert_eq!(bare.header, None, "no header is made up");
    }

    #[test]
    fn a_broken_link_is_etcds_timeout_and_the_leaders_answers_pass_unchanged() {
        let broken = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(broken.code(), tonic::Code::Unknown, "as tonic reports a transport failure");
        let relayed = link_failure(broken);
        assert_eq!((relayed.code(), relayed.message()), errors::TIMEOUT_LEADER_FAIL);
        let answered = errors::status(errors::COMPACTED);
        assert_eq!(link_failure(answered.clone()).message(), answered.message());
        let unknown_from_leader = Status::unknown("an answer of the leader's");
        assert_eq!(link_failure(unknown_from_leader).message(), "an answer of the leader's");
    }
}
