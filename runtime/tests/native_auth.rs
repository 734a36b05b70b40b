//! The native API (`KeelClient`, its `Batch` stream, the admin service) under etcd
//! authentication, on a 3-member cluster (plain build only): no token, a wrong password, a
//! user's permissions on writes, compare-and-swap, reads, scans and watches, `root` for
//! administration, a revoked permission, an expired token the client replaces by itself, a
//! disabled authentication that opens everything again, `keel bench --user` through both
//! APIs, and native writes that an auth change overtakes refused for their old auth revision.
#![cfg(not(madsim))]

use std::time::Duration;

use keel::client::{ClientError, ClientOptions, Consistency, Credentials, KeelClient};
use keel::proto::authpb::{permission, Permission};
use keel::proto::client::raft_client_service_client::RaftClientServiceClient;
use keel::proto::client::write_command::{Insert, Operation};
use keel::proto::client::{ClientWriteRequest, WriteCommand};
use keel::proto::error::ErrorCode;
use keel::proto::etcdserverpb::auth_client::AuthClient;
use keel::proto::etcdserverpb::{AuthDisableRequest, AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest};

#[path = "support/etcd_auth.rs"]
mod support;
use support::{add_alice, authenticate, cluster, cluster_with_alice, enable, stop, with};
use tonic::transport::Channel;

/// A client of `endpoints` acting as `user` (no credentials for `None`).
fn client(endpoints: &[String], user: Option<(&str, &str)>, batch_stream: bool) -> KeelClient {
    let credentials = user.map(|(user, password)| Credentials { user: user.into(), password: password.into() });
    let options =
        ClientOptions { credentials, batch_stream, deadline: Duration::from_secs(10), ..ClientOptions::default() };
    KeelClient::new(endpoints.to_vec(), options).expect("valid endpoints")
}

/// The error code of a refused operation.
fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Option<ErrorCode> {
    result.expect_err("refused").code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_api_checks_every_caller_once_authentication_is_enabled() {
    let (nodes, channels, addresses) = cluster(300_000).await;
    let anonymous = client(&addresses, None, false);
    anonymous.put("/app/before", "1", None).await.expect("open before auth enable");
    let root = enable(&channels[0]).await;
    add_alice(&channels[1], &root).await;
    // And write-only on /drop.
    let write_only =
        Permission { perm_type: permission::Type::Write as i32, key: "/drop".into(), range_end: "".into() };
    let grant = AuthRoleGrantPermissionRequest { name: "app".into(), perm: Some(write_only) };
    AuthClient::new(channels[0].clone()).role_grant_permission(with(&root, grant)).await.expect("granted");

    // Without a token, or with a wrong password: nothing but Status.
    assert_eq!(code(anonymous.put("/app/x", "1", None).await), Some(ErrorCode::Unauthenticated));
    assert_eq!(code(anonymous.get(["/app/before"], Consistency::Linearizable).await), Some(ErrorCode::Unauthenticated));
    assert_eq!(code(anonymous.scan("/app/").await), Some(ErrorCode::Unauthenticated));
    assert_eq!(code(anonymous.members().await), Some(ErrorCode::Unauthenticated));
    anonymous.status(&addresses[0]).await.expect("status needs no token, as etcd's");
    let wrong = client(&addresses, Some(("alice", "nope")), false);
    let refused = wrong.put("/app/x", "1", None).await.expect_err("a wrong password");
    assert!(refused.to_string().contains("authentication failed"), "{refused}");

    // alice: read-write on /app/, read-only on /shared, nothing else; unary and batched alike.
    for batch_stream in [false, true] {
        let alice = client(&addresses, Some(("alice", "alicepw")), batch_stream);
        alice.put("/app/x", "1", None).await.expect("inside /app/");
        assert!(alice.cas("/app/x", Some("1"), "2").await.expect("a compare-and-swap inside /app/"));
        let read = alice.get(["/app/x"], Consistency::Linearizable).await.expect("a read inside /app/");
        assert_eq!(read[0].value, "2");
        alice.get(["/shared"], Consistency::Eventual).await.expect("a read-only key reads");
        assert_eq!(code(alice.put("/other", "1", None).await), Some(ErrorCode::PermissionDenied));
        assert_eq!(code(alice.put("/shared", "1", None).await), Some(ErrorCode::PermissionDenied));
        assert_eq!(code(alice.delete("/shared").await), Some(ErrorCode::PermissionDenied));
        // A compare-and-swap writes, and tells its caller about the value: it needs both.
        assert_eq!(code(alice.cas("/shared", None::<&str>, "1").await), Some(ErrorCode::PermissionDenied));
        alice.put("/drop", "1", None).await.expect("write-only");
        assert_eq!(code(alice.cas("/drop", Some("1"), "2").await), Some(ErrorCode::PermissionDenied));
        assert_eq!(code(alice.get(["/drop"], Consistency::Linearizable).await), Some(ErrorCode::PermissionDenied));
        let refused = alice.get(["/app/x", "/other"], Consistency::Linearizable).await;
        assert_eq!(code(refused), Some(ErrorCode::PermissionDenied));
    }
    let alice = client(&addresses, Some(("alice", "alicepw")), false);
    assert_eq!(alice.scan("/app/").await.expect("a scan of /app/").entries.len(), 2);
    assert_eq!(code(alice.scan("/").await), Some(ErrorCode::PermissionDenied));
    // Watches: one inside /app/ sees alice's write; one outside is canceled with the reason.
    let mut events = alice.watch("/app/", true, false).await.expect("a watch of /app/");
    alice.put("/app/w", "1", None).await.expect("written");
    let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("in time");
    assert_eq!(event.expect("an event").expect("not an error").key, "/app/w");
    assert_eq!(code(alice.watch("/other", false, false).await), Some(ErrorCode::PermissionDenied));

    // Administration: any user lists members, only root changes them or moves leadership.
    assert_eq!(alice.members().await.expect("members").voters.len(), 3);
    assert_eq!(code(alice.add_learner(9, "127.0.0.1:1", true).await), Some(ErrorCode::PermissionDenied));
    assert_eq!(code(alice.transfer_leader(1).await), Some(ErrorCode::PermissionDenied));
    let admin = client(&addresses, Some(("root", "rootpw")), false);
    admin.put("/other", "root", None).await.expect("root writes anywhere");
    let leader = admin.status(&addresses[0]).await.expect("status").leader.expect("a leader").id;
    admin.transfer_leader(leader).await.expect("root moves leadership (here: where it is)");
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_permission_refuses_the_next_write_and_disabling_opens_everything() {
    let (nodes, channels, addresses, root) = cluster_with_alice(300_000).await;
    let alice = client(&addresses, Some(("alice", "alicepw")), true);
    alice.put("/app/k", "1", None).await.expect("allowed");
    let revoke = AuthRoleRevokePermissionRequest { role: "app".into(), key: "/app/".into(), range_end: "/app0".into() };
    AuthClient::new(channels[2].clone()).role_revoke_permission(with(&root, revoke)).await.expect("revoked");
    // The same client and token: the revocation counts from the moment it was answered.
    assert_eq!(code(alice.put("/app/k", "2", None).await), Some(ErrorCode::PermissionDenied));
    let read = alice.get(["/app/k"], Consistency::Linearizable).await;
    assert_eq!(code(read), Some(ErrorCode::PermissionDenied));
    AuthClient::new(channels[1].clone()).auth_disable(with(&root, AuthDisableRequest {})).await.expect("disabled");
    let anonymous = client(&addresses, None, false);
    anonymous.put("/app/k", "3", None).await.expect("open again");
    // A client with credentials keeps working: it sends a token nobody checks any more.
    alice.put("/app/k", "4", None).await.expect("still allowed");
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_logs_in_again_when_its_token_expires() {
    let (nodes, _, addresses, _) = cluster_with_alice(1_000).await;
    for batch_stream in [false, true] {
        let alice = client(&addresses, Some(("alice", "alicepw")), batch_stream);
        alice.put("/app/k", "1", None).await.expect("a first token");
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        // The node refuses the expired token; the client logs in again and retries once.
        alice.put("/app/k", "2", None).await.expect("a second token");
        let read = alice.get(["/app/k"], Consistency::Linearizable).await.expect("read");
        assert_eq!(read[0].value, "2");
        // A watch opened with an expired token: refused at once, logged in again, opened.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let mut events = alice.watch("/app/k", false, false).await.expect("a watch with a third token");
        alice.put("/app/k", "3", None).await.expect("written");
        let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("in time");
        assert_eq!(event.expect("an event").expect("not an error").value, "3");
    }
    stop(nodes).await;
}

/// `keel bench` against the cluster at `addresses` through `api`, as `user` if given: the
/// requests that succeeded and the JSON report.
async fn bench(addresses: &[String], api: &str, user: Option<&str>) -> (u64, String) {
    let mut line: Vec<String> = ["bench", "--api", api, "--requests", "200", "--clients", "4", "--warmup", "0s"]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
    line.extend([
        "--timeout".into(),
        "3".into(),
        "-w".into(),
        "json".into(),
        "--endpoints".into(),
        addresses.join(","),
    ]);
    if let Some(user) = user {
        line.extend(["--user".into(), user.into()]);
    }
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_keel")).args(&line).output().expect("keel runs")
    })
    .await
    .expect("the bench task");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (report["succeeded"].as_u64().unwrap_or(0), format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_bench_logs_in_with_user_through_either_api() {
    let (nodes, channels, addresses) = cluster(300_000).await;
    enable(&channels[0]).await;
    for api in ["native", "etcd"] {
        let (succeeded, report) = bench(&addresses, api, Some("root:rootpw")).await;
        assert_eq!(succeeded, 200, "--api {api} --user root: {report}");
        let (succeeded, report) = bench(&addresses, api, None).await;
        let refusal = if api == "native" { "UNAUTHENTICATED" } else { "user name is empty" };
        assert!(succeeded == 0 && report.contains(refusal), "--api {api} without --user: {report}");
    }
    stop(nodes).await;
}

/// One raw native insert of `key` as the holder of `token`: the answer's error code.
async fn raw_put(channel: Channel, token: String, key: String) -> i32 {
    let insert = Insert { key: key.into(), value: "v".into(), ttl_secs: 0 };
    let command = Some(WriteCommand { operation: Some(Operation::Insert(insert)) });
    let answer = RaftClientServiceClient::new(channel)
        .handle_client_write(with(&token, ClientWriteRequest { client_id: 1, command }))
        .await;
    answer.map_or(-1, |answer| answer.into_inner().error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_write_checked_against_a_table_that_changes_before_it_applies_is_refused() {
    let (nodes, channels, addresses, root) = cluster_with_alice(300_000).await;
    let leader = client(&addresses, None, false).status(&addresses[0]).await.expect("status").leader.expect("a leader");
    let channel = channels[leader.id as usize - 1].clone();
    let alice = authenticate(&channel, "alice", "alicepw").await.expect("alice");
    // alice keeps 32 raw writes in flight (no client retries) while root changes an unrelated
    // permission 20 times: each change moves the auth revision, so a write checked before a
    // change and appended after it must be refused as a whole when it applies.
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (channel, alice, stopped) = (channel.clone(), alice.clone(), stopped.clone());
        tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::<i32, u64>::new();
            let mut next = 0u64;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let round = (0..32).map(|i| raw_put(channel.clone(), alice.clone(), format!("/app/{}", next + i)));
                for code in futures_util::future::join_all(round).await {
                    *codes.entry(code).or_default() += 1;
                }
                next += 32;
            }
            codes
        })
    };
    let mut auth = AuthClient::new(channel.clone());
    for change in 0..20 {
        let permission =
            Permission { perm_type: permission::Type::Read as i32, key: "/x".into(), range_end: "".into() };
        if change % 2 == 0 {
            let grant = AuthRoleGrantPermissionRequest { name: "app".into(), perm: Some(permission) };
            auth.role_grant_permission(with(&root, grant)).await.expect("granted");
        } else {
            let revoke = AuthRoleRevokePermissionRequest { role: "app".into(), key: "/x".into(), range_end: "".into() };
            auth.role_revoke_permission(with(&root, revoke)).await.expect("revoked");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stopped.store(true, std::sync::atomic::Ordering::Relaxed);
    let codes = writer.await.expect("the writer");
    let (applied, refused) = (ErrorCode::Success as i32, ErrorCode::ProposalDropped as i32);
    assert!(codes.keys().all(|code| *code == applied || *code == refused), "unexpected answers: {codes:?}");
    assert!(codes.get(&applied).copied().unwrap_or(0) > 0, "no write applied: {codes:?}");
    assert!(codes.get(&refused).copied().unwrap_or(0) > 0, "no write refused for an old auth revision: {codes:?}");
    eprintln!("answers by error code: {codes:?}");
    stop(nodes).await;
}
