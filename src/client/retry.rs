//! The retry and redirect policy, kept apart from the transport so that it can be tested with a
//! fake one.
//!
//! One operation is a loop of attempts. Each attempt goes to one endpoint and ends in success or
//! a [`Failure`]; [`decide`] turns the failure into the error to report and a [`Step`]:
//!
//! * `NOT_LEADER` with a hint → retry at the hinted address at once ([`Step::Redirect`]);
//! * `NOT_LEADER` without a hint, a node that cannot be reached → try the next endpoint;
//! * `LEADER_UNKNOWN` → wait `retry_after_ms` (or the backoff), then try the next endpoint;
//! * `OVERLOADED`, `MEMBERSHIP_CHANGE_IN_PROGRESS` → wait, then try the same endpoint again;
//! * `PROPOSAL_DROPPED` → retry at the hinted leader, or the next endpoint after a backoff.
//!
//! Only what is safe is retried. Reads (reads, scans, status, membership listing) are retried
//! after any failure that is not the request's own fault. Writes (and membership changes and
//! leadership transfers) are retried only when they were certainly not applied: the request was
//! never sent, or the cluster answered `NOT_LEADER`, `LEADER_UNKNOWN`, `PROPOSAL_DROPPED`,
//! `OVERLOADED` or `MEMBERSHIP_CHANGE_IN_PROGRESS`. A write that ends in `OUTCOME_UNKNOWN`,
//! `TIMEOUT`, an unknown error code, a broken connection or the client's own deadline is returned
//! at once. Every operation is bounded by [`ClientOptions::max_attempts`] and
//! [`ClientOptions::deadline`]; running out of either gives [`ClientError::GaveUp`] with the last
//! error.
//!
//! `UNAUTHENTICATED` is retried once per operation, at once and at the same endpoint, when the
//! client has [`ClientOptions::credentials`]: the router forgets its token, and the next
//! attempt logs in first (see [`Session`]).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::error::{ClientError, LeaderHint};
use super::options::ClientOptions;
use crate::proto::error::ErrorCode;

/// Whether an operation may be repeated after an ambiguous failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Has no effect: safe to retry after any transient failure.
    Read,
    /// Changes the cluster: retried only when certainly not applied.
    Write,
}

/// How one attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The node answered with a Keel error code other than success (possibly one this client does
    /// not know).
    Code { code: i32, message: String, leader_hint: Option<LeaderHint>, retry_after_ms: u64 },
    /// The request was certainly not sent (connecting failed).
    NotSent(String),
    /// The connection failed, or no answer came in time, after the request may have been sent.
    Lost(String),
    /// A gRPC status that is neither a Keel error nor a transport failure.
    Rpc { code: tonic::Code, message: String },
    /// The answer broke the protocol.
    Protocol(String),
}

/// How long to wait before the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// At once, unless every endpoint has just been tried (then the backoff).
    None,
    /// The exponential backoff.
    Backoff,
    /// The server's `retry_after_ms`, or the backoff when it gave none.
    Hint(u64),
}

/// What to do after a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Retry at once at this address (the leader's).
    Redirect(String),
    /// Try the next endpoint.
    Next(Wait),
    /// Try the same endpoint again.
    Same(Wait),
    /// Do not retry.
    Stop,
}

/// The error a failure stands for, and what to do next.
pub(crate) fn decide(kind: OpKind, endpoint: &str, failure: Failure) -> (Step, ClientError) {
    let endpoint_owned = endpoint.to_owned();
    match failure {
        Failure::Code { code, message, leader_hint, retry_after_ms } => match ErrorCode::try_from(code) {
            // A success code is never a failure: the caller reports success itself.
            Ok(ErrorCode::Success) | Err(_) => {
                let error = match kind {
                    OpKind::Read => ClientError::UnknownCode { code, message },
                    OpKind::Write => ClientError::OutcomeUnknown {
                        endpoint: endpoint_owned,
                        reason: format!("error code {code}, unknown to this client: {message}"),
                    },
                };
                (Step::Stop, error)
            }
            Ok(code) => {
                let redirect = leader_hint
                    .as_ref()
                    .map(|hint| normalize(&hint.address))
                    .filter(|address| !address.is_empty() && address != endpoint);
                let step = step_for_code(kind, code, redirect, retry_after_ms);
                (step, ClientError::Server { code, message, leader_hint, retry_after_ms })
            }
        },
        Failure::NotSent(reason) => {
            (Step::Next(Wait::None), ClientError::Unreachable { endpoint: endpoint_owned, reason })
        }
        Failure::Lost(reason) => match kind {
            OpKind::Read => (Step::Next(Wait::None), ClientError::Unreachable { endpoint: endpoint_owned, reason }),
            OpKind::Write => (Step::Stop, ClientError::OutcomeUnknown { endpoint: endpoint_owned, reason }),
        },
        Failure::Rpc { code, message } => (Step::Stop, ClientError::Rpc { endpoint: endpoint_owned, code, message }),
        Failure::Protocol(reason) => (Step::Stop, ClientError::Protocol { endpoint: endpoint_owned, reason }),
    }
}

fn step_for_code(kind: OpKind, code: ErrorCode, redirect: Option<String>, retry_after_ms: u64) -> Step {
    use ErrorCode as C;
    match (code, kind) {
        (C::NotLeader, _) => redirect.map_or(Step::Next(Wait::None), Step::Redirect),
        (C::LeaderUnknown, _) => Step::Next(Wait::Hint(retry_after_ms)),
        (C::ProposalDropped, _) => redirect.map_or(Step::Next(Wait::Backoff), Step::Redirect),
        (C::Overloaded | C::MembershipChangeInProgress, _) => Step::Same(Wait::Hint(retry_after_ms)),
        // Not applied, but for a read only: a write answered so is returned as it is.
        (C::Timeout, OpKind::Read) => Step::Next(Wait::None),
        (C::Unavailable | C::ShuttingDown | C::StorageFailure, OpKind::Read) => Step::Next(Wait::Hint(retry_after_ms)),
        _ => Step::Stop,
    }
}

/// `host:port` → `http://host:port`; a URI with a scheme is kept as it is.
pub fn normalize(address: &str) -> String {
    let address = address.trim();
    if address.is_empty() || address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

/// The client's etcd login: the token it sends, and whether it must log in before its next
/// request (a node answered `UNAUTHENTICATED`). `generation` counts tokens, so that a `Batch`
/// stream opened with an older one is reopened.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// The token to send, if any, as the `token` metadata value.
    pub(crate) token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// Log in before the next request.
    pub(crate) login_wanted: bool,
    /// Bumped each time the token changes.
    pub(crate) generation: u64,
}

/// The endpoints of a client and the address it last found serving (shared by its operations).
#[derive(Debug)]
pub(crate) struct Router {
    endpoints: Vec<String>,
    preferred: Mutex<Option<String>>,
    session: Mutex<Session>,
}

impl Router {
    /// A router over `endpoints` (normalized, not empty).
    pub(crate) fn new(endpoints: Vec<String>) -> Self {
        Self { endpoints, preferred: Mutex::new(None), session: Mutex::new(Session::default()) }
    }

    /// The login state, locked.
    pub(crate) fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets the token of login `generation` and asks for a login before the next request;
    /// nothing when a newer login has replaced it already (the many requests an expired token
    /// fails at once cost one login, not one each).
    fn forget_token(&self, generation: u64) {
        let mut session = self.session();
        if session.generation == generation {
            session.token = None;
            session.login_wanted = true;
            session.generation += 1;
        }
    }

    /// The configured endpoints.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn preferred(&self) -> Option<String> {
        self.preferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_preferred(&self, address: Option<String>) {
        *self.preferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = address;
    }

    /// Runs `attempt` (given the endpoint to call) until it succeeds, [`decide`] says stop, or
    /// the retry budget or deadline runs out.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        options: &ClientOptions,
        kind: OpKind,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let start = Instant::now();
        let deadline = start + options.deadline;
        let max_attempts = options.max_attempts.max(1);
        let count = self.endpoints.len().max(1);
        let mut cursor = 0usize;
        let mut target = self.preferred().unwrap_or_else(|| self.endpoints[0].clone());
        let mut attempts = 0u32;
        let mut retries = 0u32;
        // Consecutive moves to another endpoint without a wait, and consecutive redirects.
        let mut rotations = 0usize;
        let mut redirects = 0u32;
        let mut logged_in_again = false;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let budget = options.request_timeout.min(remaining).max(Duration::from_millis(1));
            // The login the attempt starts with: its failure forgets that token, no newer one.
            let generation = self.session().generation;
            let outcome = match tokio::time::timeout(budget, attempt(target.clone())).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::Lost(format!("no answer within {} ms", budget.as_millis()))),
            };
            let failure = match outcome {
                Ok(value) => {
                    self.set_preferred(Some(target));
                    return Ok(value);
                }
                Err(failure) => failure,
            };
            let (mut step, error) = decide(kind, &target, failure);
            if error.code() == Some(ErrorCode::Unauthenticated) && options.credentials.is_some() && !logged_in_again {
                logged_in_again = true;
                self.forget_token(generation);
                step = Step::Same(Wait::None);
            }
            tracing::debug!(endpoint = target.as_str(), attempt = attempts, error = %error, ?step, "keel request attempt failed");
            let wait = match step {
                Step::Stop => return Err(error),
                Step::Redirect(address) => {
                    redirects += 1;
                    rotations = 0;
                    self.set_preferred(Some(address.clone()));
                    target = address;
                    if redirects > 1 {
                        Wait::Backoff
                    } else {
                        Wait::None
                    }
                }
                Step::Next(wait) => {
                    redirects = 0;
                    rotations += 1;
                    if self.preferred().as_deref() == Some(target.as_str()) {
                        self.set_preferred(None);
                    }
                    target = self.next_endpoint(&target, &mut cursor);
                    if wait == Wait::None && rotations >= count {
                        rotations = 0;
                        Wait::Backoff
                    } else {
                        wait
                    }
                }
                Step::Same(wait) => {
                    redirects = 0;
                    wait
                }
            };
            if attempts >= max_attempts {
                return Err(gave_up(attempts, start, error));
            }
            let delay = match wait {
                Wait::None => Duration::ZERO,
                Wait::Backoff | Wait::Hint(0) => {
                    retries += 1;
                    options.backoff(retries)
                }
                Wait::Hint(ms) => {
                    retries += 1;
                    Duration::from_millis(ms).min(options.deadline)
                }
            };
            if Instant::now() + delay >= deadline {
                return Err(gave_up(attempts, start, error));
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// The configured endpoint after `failed` (or the next one in turn when `failed` is not one
    /// of them, e.g. a leader hint's address).
    fn next_endpoint(&self, failed: &str, cursor: &mut usize) -> String {
        let count = self.endpoints.len();
        let next = match self.endpoints.iter().position(|endpoint| endpoint == failed) {
            Some(index) => (index + 1) % count,
            None => *cursor % count,
        };
        *cursor = next + 1;
        self.endpoints[next].clone()
    }
}

fn gave_up(attempts: u32, start: Instant, last: ClientError) -> ClientError {
    let elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    ClientError::GaveUp { attempts, elapsed_ms, last: Box::new(last) }
}

#[cfg(all(test, not(madsim)))]
#[path = "retry_tests.rs"]
mod tests;
