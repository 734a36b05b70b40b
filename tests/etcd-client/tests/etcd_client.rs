//! The etcd v3 API's streaming calls through the `etcd-client` crate, against a 3-node Keel
//! cluster: a prefix watch from a past revision with previous values, fed by writes of the
//! library and of Keel's native client; a lease kept alive over the keep-alive stream past its
//! TTL, then revoked with its keys; and a watch that keeps delivering across a leader move.

use std::time::Duration;

use etcd_client::{
    Client, EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions, WatchResponse, WatchStream,
};
use keel::client::{ClientOptions, KeelClient};
use keel_etcd_client_tests::{eventually, Cluster, WAIT};

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
