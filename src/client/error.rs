//! The errors of the client library.
//!
//! [`ClientError`] says what went wrong in terms a caller can act on: the cluster's own
//! [`ErrorCode`] with its message and leader hint ([`ClientError::Server`]), a write whose
//! outcome is unknown ([`ClientError::OutcomeUnknown`]), a node that could not be reached, or a
//! request given up after its retry budget or deadline ([`ClientError::GaveUp`], which keeps the
//! last error).

use crate::proto::error::ErrorCode;

/// Where the leader is, as a node said in an error's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node id.
    pub id: u32,
    /// The leader's client address (`host:port`), as the cluster knows it.
    pub address: String,
}

impl LeaderHint {
    /// The hint carried by a protocol `LeaderHint`, if it names a leader (id 0 means none).
    pub fn from_proto(hint: Option<&crate::proto::common::LeaderHint>) -> Option<Self> {
        hint.filter(|hint| hint.leader_id != 0).map(|hint| Self { id: hint.leader_id, address: hint.address.clone() })
    }
}

impl std::fmt::Display for LeaderHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.address.is_empty() {
            write!(f, "node {}", self.id)
        } else {
            write!(f, "node {} at {}", self.id, self.address)
        }
    }
}

/// Why a request failed.
///
/// Decide from the variant and [`ClientError::code`], never by parsing the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered with an error code (never [`ErrorCode::Success`]).
    #[error("{}: {message}{}", code.as_str_name(), hint_suffix(.leader_hint))]
    Server {
        /// What went wrong; `keel.error.ErrorCode` documents what each code means for the request.
        code: ErrorCode,
        /// The server's description, for people.
        message: String,
        /// The leader, when the answering node knows it.
        leader_hint: Option<LeaderHint>,
        /// The server's suggested wait before a retry, in milliseconds (0: no suggestion).
        retry_after_ms: u64,
    },
    /// A read answered with an error code this client does not know (from a newer server). The
    /// request failed. (The same answer to a write is reported as [`ClientError::OutcomeUnknown`].)
    #[error("the server answered with error code {code}, unknown to this client: {message}")]
    UnknownCode {
        /// The raw code.
        code: i32,
        /// The server's description.
        message: String,
    },
    /// A write (or membership change) may or may not have been applied: the connection failed or
    /// the client's deadline passed after the request was sent, or the server answered with a
    /// code this client does not know. It was not retried. Read the key to find out, or retry only
    /// if the write is idempotent (a compare-and-swap makes it so).
    #[error(
        "the outcome of the write is unknown ({reason}); it may or may not have been applied: read the key to find out"
    )]
    OutcomeUnknown {
        /// The endpoint the request was sent to.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// A node could not be reached, or the connection broke during a request that is safe to
    /// retry.
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What the transport said.
        reason: String,
    },
    /// The node answered with a gRPC status that is neither a Keel error nor a transport failure
    /// (for example `UNIMPLEMENTED` from a server that is not Keel).
    #[error("{endpoint} answered with gRPC status {code:?}: {message}")]
    Rpc {
        /// The endpoint.
        endpoint: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The request was retried until its retry budget or deadline ran out; `last` is the last
    /// failure.
    #[error("gave up after {attempts} attempt(s) in {elapsed_ms} ms; last error: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Time spent, in milliseconds.
        elapsed_ms: u64,
        /// The last failure.
        last: Box<ClientError>,
    },
    /// The server ended a watch. With [`ErrorCode::WatchLagged`] every event at or below
    /// `revision` was delivered: resume with `watch_from(.., revision + 1)`. With
    /// [`ErrorCode::Compacted`] the start revision was below the compaction point `revision`:
    /// re-read the state and watch from the revision after the read.
    #[error("{}: the watch was canceled at revision {revision}", code.as_str_name())]
    WatchCanceled {
        /// Why: `WATCH_LAGGED`, `COMPACTED`, or the node's error.
        code: ErrorCode,
        /// See the variant's docs.
        revision: u64,
    },
    /// An endpoint is not a valid `host:port` or URI.
    #[error("invalid endpoint '{endpoint}': {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The client was given no endpoint.
    #[error("no endpoints given: pass at least one node address (host:port)")]
    NoEndpoints,
    /// A request was refused before sending (for example an empty key list).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A response broke the protocol (for example success without a result).
    #[error("malformed response from {endpoint}: {reason}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
}

fn hint_suffix(hint: &Option<LeaderHint>) -> String {
    hint.as_ref().map(|hint| format!(" (leader: {hint})")).unwrap_or_default()
}

impl ClientError {
    /// The cluster's error code behind this error, if any: the server's code, the last error's
    /// code for [`ClientError::GaveUp`], and [`ErrorCode::OutcomeUnknown`] for
    /// [`ClientError::OutcomeUnknown`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } | Self::WatchCanceled { code, .. } => Some(*code),
            Self::OutcomeUnknown { .. } => Some(ErrorCode::OutcomeUnknown),
            Self::GaveUp { last, .. } => last.code(),
            _ => None,
        }
    }

    /// The leader hint carried by the error (or by the last error given up on).
    pub fn leader_hint(&self) -> Option<&LeaderHint> {
        match self {
            Self::Server { leader_hint, .. } => leader_hint.as_ref(),
            Self::GaveUp { last, .. } => last.leader_hint(),
            _ => None,
        }
    }

    /// The server's message (or the client's description when the server said nothing).
    pub fn message(&self) -> String {
        match self {
            Self::Server { message, .. } | Self::UnknownCode { message, .. } => message.clone(),
            Self::GaveUp { last, .. } => last.message(),
            other => other.to_string(),
        }
    }

    /// True when a write may or may not have been applied: the server said
    /// `ERROR_CODE_OUTCOME_UNKNOWN`, or the client could not tell.
    pub fn is_outcome_unknown(&self) -> bool {
        self.code() == Some(ErrorCode::OutcomeUnknown)
    }

    /// The innermost error: the last failure of a [`ClientError::GaveUp`], or `self`.
    pub fn root(&self) -> &ClientError {
        match self {
            Self::GaveUp { last, .. } => last.root(),
            other => other,
        }
    }

    /// A short advice for people on what to do next, used by the `keel` command line.
    pub fn advice(&self) -> &'static str {
        match self.root() {
            Self::Server { code, .. } | Self::WatchCanceled { code, .. } => advice_for(*code),
            Self::UnknownCode { .. } => "the server is newer than this client; upgrade the client",
            Self::OutcomeUnknown { .. } => "the write may or may not have been applied: read the key before retrying",
            Self::Unreachable { .. } => {
                "check that the nodes are running and that --endpoints lists their client addresses"
            }
            Self::Rpc { .. } => "check that --endpoints points at Keel nodes of a compatible version",
            Self::InvalidEndpoint { .. } | Self::NoEndpoints => "pass endpoints as host:port,host:port",
            Self::InvalidRequest(_) => "fix the request",
            Self::Protocol { .. } => "the server broke the protocol; report it",
            Self::GaveUp { .. } => "retry later",
        }
    }
}

/// What a person should do after an error code.
fn advice_for(code: ErrorCode) -> &'static str {
    use ErrorCode as C;
    match code {
        C::Success => "",
        C::NotLeader | C::LeaderUnknown => {
            "no leader could be reached: check that a majority of the nodes is up, then retry"
        }
        C::InvalidArgument => "fix the request (keys must not be empty; scan and watch prefixes start with '/')",
        C::KeyTooLarge | C::ValueTooLarge | C::RequestTooLarge => "make the request smaller",
        C::ConsistencyPolicyUnsupported => "use --consistency linearizable",
        C::Timeout => "the request timed out without effect; retry",
        C::ProposalDropped | C::Overloaded => "the request was not applied; retry later",
        C::OutcomeUnknown => "the write may or may not have been applied: read the key before retrying",
        C::MembershipChangeInProgress => "wait for the current membership change to commit, then retry",
        C::UnknownMember => "check the node id with `keel members`",
        C::MemberAlreadyExists => "the node is already a member; see `keel members`",
        C::WatchLagged => "re-read the state and watch again",
        C::Compacted => "re-read the state (a scan gives its revision) and watch from the revision after it",
        C::Unavailable | C::ShuttingDown => "the node cannot serve now; try another endpoint or retry later",
        C::StorageFailure => "the node's storage failed: check its disk and logs; try another endpoint",
        C::Internal => "a bug in the server: report it with the message above",
        C::Unauthenticated => "the cluster has authentication enabled: pass --user NAME (and the password)",
        C::PermissionDenied => "grant the user a role that allows this (etcdctl role grant-permission)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_show_code_message_and_hint() {
        let error = ClientError::Server {
            code: ErrorCode::NotLeader,
            message: "not the leader".into(),
            leader_hint: Some(LeaderHint { id: 2, address: "127.0.0.1:7002".into() }),
            retry_after_ms: 0,
        };
        assert_eq!(error.to_string(), "ERROR_CODE_NOT_LEADER: not the leader (leader: node 2 at 127.0.0.1:7002)");
        let gave_up = ClientError::GaveUp { attempts: 3, elapsed_ms: 10, last: Box::new(error) };
        assert_eq!(gave_up.code(), Some(ErrorCode::NotLeader));
        assert_eq!(gave_up.leader_hint().map(|hint| hint.id), Some(2));
        assert!(!gave_up.is_outcome_unknown());
    }

    #[test]
    fn leader_hint_zero_means_none() {
        let none = crate::proto::common::LeaderHint { leader_id: 0, address: String::new() };
        assert_eq!(LeaderHint::from_proto(Some(&none)), None);
        assert_eq!(LeaderHint::from_proto(None), None);
    }
}
