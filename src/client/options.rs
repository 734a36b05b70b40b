//! Tuning of a [`KeelClient`](super::KeelClient): deadlines, retry budget, backoff.

use std::time::Duration;

/// How a [`KeelClient`](super::KeelClient) connects, waits and retries.
///
/// Every operation is bounded twice: by [`ClientOptions::max_attempts`] and by
/// [`ClientOptions::deadline`]; each attempt is further bounded by
/// [`ClientOptions::request_timeout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Sent in every request's `client_id` (for the server's logs).
    pub client_id: u32,
    /// Time allowed to open a connection to one node.
    pub connect_timeout: Duration,
    /// Time allowed to one attempt (connecting, sending and the answer). Keep it longer than the
    /// nodes' own request timeout (5 s by default), so that a slow write is answered by the server
    /// (`OUTCOME_UNKNOWN` or `TIMEOUT`) rather than cut off by the client.
    pub request_timeout: Duration,
    /// Time allowed to one operation, all attempts and waits included.
    pub deadline: Duration,
    /// Attempts per operation at most, the first included (at least 1).
    pub max_attempts: u32,
    /// First wait before retrying when the cluster gives no `retry_after_ms`.
    pub backoff_min: Duration,
    /// Longest wait between two attempts.
    pub backoff_max: Duration,
    /// Largest encoded message sent or accepted.
    pub message_bytes_max: usize,
    /// Send writes and reads over one multiplexed `Batch` stream per node (Keel extension; the
    /// node must serve it) instead of one unary call each. Worth it when many tasks share the
    /// client; the answers, errors and retries are the same. Off by default.
    pub batch_stream: bool,
    /// Dial every node over TLS, verifying it with these certificate authorities (and showing
    /// this client's certificate, if it has one). `None`: plain text.
    pub tls: Option<crate::tls::ClientTls>,
    /// The etcd user to act as once the cluster has authentication enabled (`etcdctl auth
    /// enable`). The client logs in (etcd's `Authenticate`, on the same address) the first
    /// time a node answers `UNAUTHENTICATED`, sends the token with every request, and logs in
    /// again when the token expires. `None`: no token is sent, and a cluster with
    /// authentication enabled refuses every request but `Status`.
    pub credentials: Option<Credentials>,
}

/// An etcd user name and password (see [`ClientOptions::credentials`]). `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<hidden>").finish()
    }
}

impl Default for ClientOptions {
    /// 2 s to connect, 7 s per attempt, 15 s per operation, 10 attempts, backoff 50 ms to 1 s,
    /// 16 MiB messages, plain text.
    fn default() -> Self {
        Self {
            client_id: 0,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(7),
            deadline: Duration::from_secs(15),
            max_attempts: 10,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            message_bytes_max: 16 << 20,
            batch_stream: false,
            tls: None,
            credentials: None,
        }
    }
}

impl ClientOptions {
    /// The wait before retry number `retry` (1 for the first retry): `backoff_min` doubled per
    /// retry, capped at `backoff_max`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(16);
        self.backoff_min.saturating_mul(factor).min(self.backoff_max.max(self.backoff_min))
    }
}

/// The consistency of a read (`keel.client.ReadConsistencyPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Confirmed by a quorum after the read arrived: sees every write acknowledged before it.
    #[default]
    Linearizable,
    /// Served by the leader from its lease, without a quorum round trip; linearizable while clock
    /// drift stays within the cluster's configured bound. Refused when the cluster disabled leases.
    Lease,
    /// Served by whichever node answers, from its own state: may be stale.
    Eventual,
}

impl Consistency {
    /// The protocol value.
    pub fn to_proto(self) -> crate::proto::client::ReadConsistencyPolicy {
        use crate::proto::client::ReadConsistencyPolicy as P;
        match self {
            Self::Linearizable => P::LinearizableRead,
            Self::Lease => P::LeaseRead,
            Self::Eventual => P::EventualConsistency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = ClientOptions::default();
        assert_eq!(options.backoff(1), Duration::from_millis(50));
        assert_eq!(options.backoff(2), Duration::from_millis(100));
        assert_eq!(options.backoff(5), Duration::from_millis(800));
        assert_eq!(options.backoff(6), Duration::from_secs(1));
        assert_eq!(options.backoff(u32::MAX), Duration::from_secs(1));
    }
}
