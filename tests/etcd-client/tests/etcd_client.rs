//! The etcd v3 API's streaming calls through the `etcd-client` crate, against a 3-node Keel
//! cluster: a prefix watch from a past revision with previous values, fed by writes of the
//! library and of Keel's native client; a lease kept alive over the keep-alive stream past its
//! TTL, then revoked with its keys; a watch that keeps delivering across a leader move; and a
//! user of etcd authentication whose streams and calls are checked against its role, and whose
//! expired token the library renews by itself.

use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, LeaseTimeToLiveOptions, Permission, PutOptions, WatchOptions,
    WatchResponse, WatchStream,
};
use keel::client::{ClientOptions, KeelClient};
use keel_etcd_client_tests::{eventually, Cluster, AUTH_TOKEN_TTL, WAIT};

/// A started cluster, an etcd-client of all its nodes once a write goes through, and Keel's
/// native client of the same nodes.
async fn cluster() -> (Cluster, Client, KeelClient) {
    let cluster = Cluster::start(3).await;
    let endpoints = cluster.endpoints();
    let client = eventually("an etcd client whose write succeeds", || async {
        let mut client = Client::connect(&endpoints, None).await.ok()?;
        client.put("/ready", "1", None).await.ok()?;
        Some(client)
    })
    .await;
    let native = KeelClient::new(endpoints, ClientOptions::default()).expect("valid endpoints");
    (cluster, client, native)
}

/// An event as `(type, key, value, previous value, mod revision)`.
type Seen = (EventType, String, String, Option<String>, i64);

/// The watch's next answer, which must come within [`WAIT`] and not cancel the watch.
async fn next_response(stream: &mut WatchStream) -> WatchResponse {
    let next = tokio::time::timeout(WAIT, stream.message()).await.expect("an answer in time");
    let response: WatchResponse = next.expect("the watch stays healthy").expect("the stream stays open");
    assert!(!response.canceled(), "canceled: {}", response.cancel_reason());
    response
}

/// Reads the watch until `count` events arrived.
async fn events(stream: &mut WatchStream, count: usize) -> Vec<Seen> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let response = next_response(stream).await;
        for event in response.events() {
            let kv = event.kv().expect("a key-value");
            let prev = event.prev_kv().map(|prev| prev.value_str().expect("UTF-8").to_string());
            let (key, value) = (kv.key_str().expect("UTF-8").to_string(), kv.value_str().expect("UTF-8").to_string());
            seen.push((event.event_type(), key, value, prev, kv.mod_revision()));
        }
    }
    seen
}

/// Waits for the watch's `created` answer: only from then on is it registered, so a write made
/// earlier may come before its start (a watch without a start revision begins at the revision
/// it is registered at, in etcd as in Keel).
async fn created(stream: &mut WatchStream) {
    loop {
        let response = next_response(stream).await;
        assert!(response.events().is_empty(), "events before the watch was created");
        if response.created() {
            return;
        }
    }
}

fn seen(kind: EventType, key: &str, value: &str, prev: Option<&str>, revision: i64) -> Seen {
    (kind, key.to_string(), value.to_string(), prev.map(str::to_string), revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_from_a_past_revision_sees_both_apis_with_previous_values() {
    let (_cluster, mut client, native) = cluster().await;
    let first = client.put("/w/a", "1", None).await.expect("put").header().expect("a header").revision();
    native.put("/w/b", "2", None).await.expect("native put");
    client.put("/w/a", "3", None).await.expect("put");
    client.put("/other", "x", None).await.expect("put");
    let options = WatchOptions::new().with_prefix().with_start_revision(first).with_prev_key();
    let mut stream = client.watch("/w/", Some(options)).await.expect("the watch opens");
    native.delete("/w/b").await.expect("native delete");
    client.delete("/w/a", None).await.expect("delete");
    let expected = vec![
        seen(EventType::Put, "/w/a", "1", None, first),
        seen(EventType::Put, "/w/b", "2", None, first + 1),
        seen(EventType::Put, "/w/a", "3", Some("1"), first + 2),
        seen(EventType::Delete, "/w/b", "", Some("2"), first + 4),
        seen(EventType::Delete, "/w/a", "", Some("3"), first + 5),
    ];
    assert_eq!(events(&mut stream, 5).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_kept_alive_over_its_stream_outlives_its_ttl_and_revoking_it_deletes_its_keys() {
    let (_cluster, mut client, _native) = cluster().await;
    let lease = client.lease_grant(2, None).await.expect("granted");
    let (id, ttl) = (lease.id(), lease.ttl());
    assert_eq!(ttl, 2);
    for key in ["/l/a", "/l/b"] {
        client.put(key, "v", Some(PutOptions::new().with_lease(id))).await.expect("put with the lease");
    }
    let (mut keeper, mut responses) = client.lease_keep_alive(id).await.expect("the keep-alive stream opens");
    for _ in 0..6 {
        keeper.keep_alive().await.expect("a keep-alive sent");
        let answer = tokio::time::timeout(WAIT, responses.message()).await.expect("an answer in time");
        let answer = answer.expect("the stream stays healthy").expect("the stream stays open");
        assert_eq!((answer.id(), answer.ttl()), (id, 2), "the TTL is refreshed");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let live = client.get("/l/", Some(GetOptions::new().with_prefix())).await.expect("read");
    assert_eq!(live.count(), 2, "kept alive for twice its TTL, the lease still holds its keys");
    let info = client.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await.expect("ttl");
    assert!(info.ttl() > 0 && info.ttl() <= 2, "{info:?}");
    assert_eq!(info.keys(), [b"/l/a".to_vec(), b"/l/b".to_vec()]);
    let mut stream = client.watch("/l/", Some(WatchOptions::new().with_prefix())).await.expect("the watch opens");
    created(&mut stream).await;
    client.lease_revoke(id).await.expect("revoked");
    let deleted = events(&mut stream, 2).await;
    assert!(deleted.iter().all(|event| event.0 == EventType::Delete && event.4 == deleted[0].4), "{deleted:?}");
    let gone = client.get("/l/", Some(GetOptions::new().with_prefix())).await.expect("read");
    assert_eq!(gone.count(), 0);
    assert_eq!(client.lease_time_to_live(id, None).await.expect("ttl").ttl(), -1, "the lease is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_keeps_delivering_across_a_leader_move() {
    let (cluster, mut client, native) = cluster().await;
    let mut stream = client.watch("/m/", Some(WatchOptions::new().with_prefix())).await.expect("the watch opens");
    created(&mut stream).await;
    let before = client.put("/m/1", "a", None).await.expect("put").header().expect("a header").revision();
    assert_eq!(events(&mut stream, 1).await, vec![seen(EventType::Put, "/m/1", "a", None, before)]);
    let leader = client.status().await.expect("status").leader();
    let target = if leader == 1 { 2 } else { 1 };
    // MoveLeader is served by the leader alone, as in etcd.
    let mut at_leader = Client::connect([&cluster.addresses[&leader]], None).await.expect("connected");
    at_leader.move_leader(target).await.expect("leadership moved");
    eventually("the new leader seen by every node", || async {
        for address in cluster.addresses.values() {
            let mut one = Client::connect([address], None).await.ok()?;
            (one.status().await.ok()?.leader() == target).then_some(())?;
        }
        Some(())
    })
    .await;
    client.put("/m/2", "b", None).await.expect("put after the move");
    native.put("/m/3", "c", None).await.expect("native put after the move");
    let after = events(&mut stream, 2).await;
    let expected =
        vec![seen(EventType::Put, "/m/2", "b", None, before + 1), seen(EventType::Put, "/m/3", "c", None, before + 2)];
    assert_eq!(after, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_user_watches_writes_and_keeps_leases_within_its_role_past_token_expiry() {
    let (cluster, mut admin, _native) = cluster().await;
    admin.user_add("root", "rootpw", None).await.expect("root added");
    admin.user_grant_role("root", "root").await.expect("root role");
    admin.role_add("app").await.expect("role added");
    admin.role_grant_permission("app", Permission::read_write("/app/").with_prefix()).await.expect("granted");
    admin.user_add("alice", "alicepw", None).await.expect("alice added");
    admin.user_grant_role("alice", "app").await.expect("app role");
    admin.auth_enable().await.expect("enabled");
    let error = admin.put("/app/x", "no token", None).await.expect_err("refused without a token");
    assert!(error.to_string().contains("user name is empty"), "{error}");
    let options = ConnectOptions::new().with_user("alice", "alicepw").with_auto_token_refresh(true);
    let mut alice = Client::connect(cluster.endpoints(), Some(options)).await.expect("alice logs in");
    let mut stream = alice.watch("/app/", Some(WatchOptions::new().with_prefix())).await.expect("the watch opens");
    created(&mut stream).await;
    let revision = alice.put("/app/1", "a", None).await.expect("put").header().expect("a header").revision();
    assert_eq!(events(&mut stream, 1).await, vec![seen(EventType::Put, "/app/1", "a", None, revision)]);
    let error = alice.put("/other", "b", None).await.expect_err("outside its role");
    assert!(error.to_string().contains("permission denied"), "{error}");
    let lease = alice.lease_grant(5, None).await.expect("granted").id();
    alice.put("/app/leased", "l", Some(PutOptions::new().with_lease(lease))).await.expect("attached");
    let (mut keeper, mut responses) = alice.lease_keep_alive(lease).await.expect("the keep-alive stream opens");
    keeper.keep_alive().await.expect("a keep-alive sent");
    let answer = tokio::time::timeout(WAIT, responses.message()).await.expect("in time").expect("healthy");
    assert_eq!(answer.expect("open").ttl(), 5);
    // Past the token's lifetime: the library sees etcd's "invalid auth token" and logs in again.
    tokio::time::sleep(AUTH_TOKEN_TTL + Duration::from_millis(500)).await;
    let revision = alice.put("/app/2", "b", None).await.expect("put with a renewed token");
    let revision = revision.header().expect("a header").revision();
    // The watch was checked when it was created and goes on delivering.
    let expected = vec![
        seen(EventType::Put, "/app/leased", "l", None, revision - 1),
        seen(EventType::Put, "/app/2", "b", None, revision),
    ];
    assert_eq!(events(&mut stream, 2).await, expected);
    let mut root = Client::connect(cluster.endpoints(), Some(ConnectOptions::new().with_user("root", "rootpw")))
        .await
        .expect("root logs in");
    assert_eq!(root.user_list().await.expect("users").users(), ["alice", "root"]);
    root.auth_disable().await.expect("disabled");
}
