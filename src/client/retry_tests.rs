//! The retry and redirect policy against a fake transport: scripted answers per endpoint, and a
//! record of which endpoint each attempt went to. Waits and deadlines are a few milliseconds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use super::*;

const A: &str = "http://a:1";
const B: &str = "http://b:1";
const C: &str = "http://c:1";

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    Ok,
    Fail(Failure),
    /// Never answers (the client's per-attempt timeout fires).
    Hang,
}

/// A fake transport: each endpoint answers from its script, then with "connection refused".
#[derive(Default)]
struct Fake {
    scripts: Mutex<BTreeMap<String, VecDeque<Reply>>>,
    calls: Mutex<Vec<String>>,
}

impl Fake {
    fn script(self, endpoint: &str, replies: impl IntoIterator<Item = Reply>) -> Self {
        self.scripts.lock().unwrap().entry(endpoint.to_owned()).or_default().extend(replies);
        self
    }

    async fn call(&self, endpoint: String) -> Result<&'static str, Failure> {
        self.calls.lock().unwrap().push(endpoint.clone());
        let reply = self.scripts.lock().unwrap().get_mut(&endpoint).and_then(VecDeque::pop_front);
        match reply {
            Some(Reply::Ok) => Ok("done"),
            Some(Reply::Fail(failure)) => Err(failure),
            Some(Reply::Hang) => std::future::pending().await,
            None => Err(Failure::NotSent("connection refused".into())),
        }
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

fn code(code: ErrorCode, hint: Option<(u32, &str)>, retry_after_ms: u64) -> Reply {
    Reply::Fail(Failure::Code {
        code: code as i32,
        message: format!("{code:?}"),
        leader_hint: hint.map(|(id, address)| LeaderHint { id, address: address.into() }),
        retry_after_ms,
    })
}

fn router() -> Router {
    Router::new(vec![A.into(), B.into(), C.into()])
}

fn options() -> ClientOptions {
    ClientOptions {
        max_attempts: 6,
        request_timeout: Duration::from_millis(50),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(4),
        ..ClientOptions::default()
    }
}

async fn run(router: &Router, fake: &Fake, kind: OpKind) -> Result<&'static str, ClientError> {
    router.run(&options(), kind, |endpoint| fake.call(endpoint)).await
}

#[tokio::test]
async fn not_leader_with_a_hint_redirects_and_is_remembered() {
    let router = router();
    // The hint is a bare host:port, as nodes send it.
    let fake =
        Fake::default().script(A, [code(ErrorCode::NotLeader, Some((2, "b:1")), 0)]).script(B, [Reply::Ok, Reply::Ok]);
    assert_eq!(run(&router, &fake, OpKind::Write).await, Ok("done"));
    assert_eq!(fake.calls(), [A, B]);
    // The next operation goes straight to the leader.
    assert_eq!(run(&router, &fake, OpKind::Read).await, Ok("done"));
    assert_eq!(fake.calls(), [B]);
}

#[tokio::test]
async fn not_leader_without_a_hint_tries_the_next_endpoint() {
    let router = router();
    let fake = Fake::default()
        .script(A, [code(ErrorCode::NotLeader, None, 0)])
        .script(B, [code(ErrorCode::NotLeader, None, 0)])
        .script(C, [Reply::Ok]);
    assert_eq!(run(&router, &fake, OpKind::Write).await, Ok("done"));
    assert_eq!(fake.calls(), [A, B, C]);
}

#[tokio::test]
async fn a_hint_naming_the_answering_node_is_not_followed() {
    let router = router();
    let fake = Fake::default().script(A, [code(ErrorCode::NotLeader, Some((1, A)), 0)]).script(B, [Reply::Ok]);
    assert_eq!(run(&router, &fake, OpKind::Write).await, Ok("done"));
    assert_eq!(fake.calls(), [A, B]);
}

#[tokio::test]
async fn leader_unknown_waits_then_tries_another_endpoint() {
    let router = router();
    let fake = Fake::default().script(A, [code(ErrorCode::LeaderUnknown, None, 5)]).script(B, [Reply::Ok]);
    assert_eq!(run(&router, &fake, OpKind::Write).await, Ok("done"));
    assert_eq!(fake.calls(), [A, B]);
    // The wait is the server's retry_after_ms.
    assert_eq!(step_for_code(OpKind::Write, ErrorCode::LeaderUnknown, None, 200), Step::Next(Wait::Hint(200)));
}

#[tokio::test]
async fn overloaded_and_dropped_writes_are_retried() {
    let router = router();
    let fake = Fake::default()
        .script(A, [code(ErrorCode::Overloaded, None, 10), code(ErrorCode::ProposalDropped, Some((3, C)), 0)])
        .script(C, [Reply::Ok]);
    assert_eq!(run(&router, &fake, OpKind::Write).await, Ok("done"));
    assert_eq!(fake.calls(), [A, A, C]);
}

#[tokio::test]
async fn writes_with_an_unknown_outcome_are_never_retried() {
    for reply in [code(ErrorCode::OutcomeUnknown, None, 0), code(ErrorCode::Timeout, None, 0)] {
        let router = router();
        let fake = Fake::default().script(A, [reply]).script(B, [Reply::Ok]);
        let error = run(&router, &fake, OpKind::Write).await.unwrap_err();
        assert!(matches!(error, ClientError::Server { code: ErrorCode::OutcomeUnknown | ErrorCode::Timeout, .. }));
        assert_eq!(fake.calls(), [A]);
    }
}

#[tokio::test]
async fn a_lost_connection_is_retried_for_reads_only() {
    let lost = || Reply::Fail(Failure::Lost("connection reset".into()));
    let router = router();
    let fake = Fake::default().script(A, [lost()]).script(B, [Reply::Ok]);
    assert_eq!(run(&router, &fake, OpKind::Read).await, Ok("done"));
    assert_eq!(fake.calls(), [A, B]);

    let router = self::router();
    let fake = Fake::default().script(A, [lost()]).script(B, [Reply::Ok]);
    let error = run(&router, &fake, OpKind::Write).await.unwrap_err();
    assert!(error.is_outcome_unknown(), "{error}");
    assert_eq!(fake.calls(), [A]);
}

#[tokio::test]
async fn a_write_that_times_out_on_the_client_is_reported_as_unknown() {
    let router = router();
    let fake = Fake::default().script(A, [Reply::Hang]).script(B, [Reply::Ok]);
    let error = run(&router, &fake, OpKind::Write).await.unwrap_err();
    assert!(matches!(error, ClientError::OutcomeUnknown { .. }), "{error}");
    assert_eq!(fake.calls(), [A]);
    // The same hang on a read moves on.
    let fake = Fake::default().script(A, [Reply::Hang]).script(B, [Reply::Ok]);
    assert_eq!(run(&self::router(), &fake, OpKind::Read).await, Ok("done"));
}

#[tokio::test]
async fn a_write_never_sent_is_retried_elsewhere() {
    let router = router();
    // A refuses connections (no script).
    let fake = Fake::default().script(B, [Reply::Ok]);
    assert_eq!(run(&router, &fake, OpKind::Write).await, Ok("done"));
    assert_eq!(fake.calls(), [A, B]);
}

#[tokio::test]
async fn unknown_codes_are_failures_never_success() {
    let unknown =
        || Reply::Fail(Failure::Code { code: 99, message: "new".into(), leader_hint: None, retry_after_ms: 0 });
    let fake = Fake::default().script(A, [unknown(), unknown()]);
    let read = run(&router(), &fake, OpKind::Read).await.unwrap_err();
    assert_eq!(read, ClientError::UnknownCode { code: 99, message: "new".into() });
    let write = run(&router(), &fake, OpKind::Write).await.unwrap_err();
    assert!(write.is_outcome_unknown());
    assert_eq!(fake.calls(), [A, A]);
}

#[tokio::test]
async fn the_retry_budget_bounds_attempts() {
    let router = router();
    // Everyone is down: 6 attempts, then the last error.
    let fake = Fake::default();
    let error = run(&router, &fake, OpKind::Read).await.unwrap_err();
    match error {
        ClientError::GaveUp { attempts, last, .. } => {
            assert_eq!(attempts, 6);
            assert!(matches!(*last, ClientError::Unreachable { .. }));
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(fake.calls(), [A, B, C, A, B, C]);
}

#[tokio::test]
async fn redirect_loops_are_bounded() {
    let router = router();
    let ping = (0..10).map(|_| code(ErrorCode::NotLeader, Some((2, B)), 0));
    let pong = (0..10).map(|_| code(ErrorCode::NotLeader, Some((1, A)), 0));
    let fake = Fake::default().script(A, ping).script(B, pong);
    let error = run(&router, &fake, OpKind::Write).await.unwrap_err();
    assert!(matches!(error, ClientError::GaveUp { attempts: 6, .. }));
    assert_eq!(error.code(), Some(ErrorCode::NotLeader));
}

#[tokio::test]
async fn the_deadline_bounds_the_whole_operation() {
    let router = router();
    let fake = Fake::default().script(A, [Reply::Hang]).script(B, [Reply::Hang]).script(C, [Reply::Hang]);
    let options = ClientOptions {
        request_timeout: Duration::from_millis(40),
        deadline: Duration::from_millis(100),
        max_attempts: 100,
        ..ClientOptions::default()
    };
    let error = router.run(&options, OpKind::Read, |endpoint| fake.call(endpoint)).await.unwrap_err();
    // Two full attempts and a last one cut to the 20 ms left (the three endpoints hang once, then
    // refuse: at most four attempts fit whatever the timer granularity).
    assert!(matches!(error, ClientError::GaveUp { attempts: 3 | 4, .. }), "{error}");
}

#[tokio::test]
async fn invalid_requests_are_not_retried() {
    let router = router();
    let fake = Fake::default().script(A, [code(ErrorCode::InvalidArgument, None, 0)]);
    let error = run(&router, &fake, OpKind::Read).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument));
    assert_eq!(fake.calls(), [A]);
}

#[test]
fn addresses_are_normalized() {
    assert_eq!(normalize("127.0.0.1:7001"), "http://127.0.0.1:7001");
    assert_eq!(normalize(" http://x:1 "), "http://x:1");
    assert_eq!(normalize(""), "");
}

#[tokio::test]
async fn unauthenticated_is_retried_once_after_a_new_login_only_with_credentials() {
    let unauthenticated = || code(ErrorCode::Unauthenticated, None, 0);
    // Without credentials a login cannot help: the error is returned at once.
    let anonymous = router();
    let fake = Fake::default().script(A, [unauthenticated(), Reply::Ok]);
    let error = run(&anonymous, &fake, OpKind::Write).await.expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::Unauthenticated));
    assert_eq!(fake.calls(), [A]);
    assert!(!anonymous.session().login_wanted);
    // With credentials: the token is forgotten, a login is asked for, and the same endpoint is
    // tried again, once per operation.
    let credentials = Some(crate::client::Credentials { user: "alice".into(), password: "pw".into() });
    let with_login = ClientOptions { credentials, ..options() };
    let router = router();
    router.session().token = Some(tonic::metadata::MetadataValue::from_static("old"));
    let generation = router.session().generation;
    let fake = Fake::default().script(A, [unauthenticated(), Reply::Ok, unauthenticated(), unauthenticated()]);
    assert_eq!(router.run(&with_login, OpKind::Write, |endpoint| fake.call(endpoint)).await, Ok("done"));
    assert_eq!(fake.calls(), [A, A]);
    let (wanted, token, new_generation) = {
        let session = router.session();
        (session.login_wanted, session.token.clone(), session.generation)
    };
    assert!(wanted && token.is_none() && new_generation > generation);
    let error = router.run(&with_login, OpKind::Write, |endpoint| fake.call(endpoint)).await.expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::Unauthenticated));
    assert_eq!(fake.calls(), [A, A]);
}

#[test]
fn a_failure_forgets_only_the_token_it_was_sent_with() {
    let router = router();
    router.session().token = Some(tonic::metadata::MetadataValue::from_static("new"));
    router.session().generation = 4;
    // A request sent with login 3's token fails after login 4: the new token stays.
    router.forget_token(3);
    assert!(!router.session().login_wanted && router.session().token.is_some());
    router.forget_token(4);
    let session = router.session();
    assert!(session.login_wanted && session.token.is_none() && session.generation == 5);
}
