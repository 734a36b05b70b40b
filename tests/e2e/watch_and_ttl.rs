//! Watches see every event in order and resume after CANCELED from the given revision; a TTL
//! key disappears on every node at the same revision.

use std::time::Duration;

use bytes::Bytes;
use keel::client::{ClientError, Consistency, WatchEvent, WatchEventKind, WatchStream};
use keel::proto::error::ErrorCode;
use tokio::time::{timeout, Instant};

use crate::cluster::{Cluster, WAIT};

/// Writes watched, of 128 KiB each (51 MiB): more than HTTP/2 windows, the server's output
/// queue and the node's event buffer hold together (about 35 MiB).
const WATCHED_WRITES: usize = 400;

/// The next PUT or DELETE (progress events skipped), or the error that ended the stream.
async fn next_change(stream: &mut WatchStream) -> Result<WatchEvent, ClientError> {
    loop {
        let next = timeout(WAIT, stream.next()).await.expect("a watch message in time");
        let event = next.expect("the watch stream stays open")?;
        if event.kind != WatchEventKind::Progress {
            return Ok(event);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_event_in_order_and_resume_after_cancel() {
    let cluster = Cluster::start(3, &["--watch-buffer-events", "16"]);
    cluster.leader(&[1, 2, 3]).await;
    let client = cluster.client();
    // A watcher that keeps reading, on node 1, and one that reads nothing, on node 2: once the
    // client's HTTP/2 window (2 MiB), the server's send buffer and output queue (256 events) are
    // full, node 2's event buffer (16 events) overflows.
    let mut reader = cluster.client_of_node(1).watch("/watched/", true, true).await.expect("watch opens");
    let mut idle = cluster.client_of_node(2).watch("/watched/", true, false).await.expect("watch opens");
    let big = Bytes::from(vec![b'x'; 128 * 1024]);
    let keys: Vec<String> = (0..WATCHED_WRITES).map(|i| format!("/watched/{i:03}")).collect();
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while events.len() < WATCHED_WRITES {
            events.push(next_change(&mut reader).await.expect("the reading watcher is never canceled"));
        }
        events
    });
    for key in &keys {
        client.put(key.clone(), big.clone(), None).await.expect("write");
    }
    let seen = collector.await.expect("the collector finishes");
    let seen_keys: Vec<&[u8]> = seen.iter().map(|event| &event.key[..]).collect();
    assert_eq!(seen_keys, keys.iter().map(|key| key.as_bytes()).collect::<Vec<_>>(), "every event, in order");
    assert!(seen.windows(2).all(|pair| pair[1].revision == pair[0].revision + 1), "no gap in revisions");
    assert!(seen.iter().all(|event| event.kind == WatchEventKind::Put && event.value.len() == big.len()));

    // The idle watcher: events in order until CANCELED, then resumed from its revision.
    let mut delivered = Vec::new();
    let canceled_at = loop {
        match next_change(&mut idle).await {
            Ok(event) => delivered.push(event.revision),
            Err(ClientError::WatchCanceled { code, revision }) => {
                assert_eq!(code, ErrorCode::WatchLagged);
                break revision;
            }
            Err(other) => panic!("unexpected watch error {other}"),
        }
    };
    assert!(delivered.len() < WATCHED_WRITES, "the idle watcher lagged");
    let mut resumed =
        cluster.client_of_node(2).watch_from("/watched/", true, false, canceled_at + 1).await.expect("resumes");
    let mut revisions: Vec<u64> = delivered.into_iter().filter(|revision| *revision <= canceled_at).collect();
    while revisions.last() != seen.last().map(|event| event.revision).as_ref() {
        revisions.push(next_change(&mut resumed).await.expect("the resumed watch").revision);
    }
    let expected: Vec<u64> = seen.iter().map(|event| event.revision).collect();
    assert_eq!(revisions, expected, "together, exactly every event once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_key_disappears_on_every_node_at_the_same_revision() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader(&[1, 2, 3]).await;
    let mut watches = Vec::new();
    for id in [1, 2, 3] {
        watches.push(cluster.client_of_node(id).watch("/ttl/key", false, false).await.expect("watch opens"));
    }
    let client = cluster.client();
    let ttl = Duration::from_secs(1);
    let written_at = Instant::now();
    client.put("/ttl/key", "short-lived", Some(ttl)).await.expect("write");
    // Never early: every linearizable read that completes within the time to live of the
    // write's invocation sees the key.
    loop {
        let value = client.get_one("/ttl/key").await.expect("read");
        if written_at.elapsed() >= ttl {
            break;
        }
        assert_eq!(value, Some("short-lived".into()), "expired early, {:?} after the write", written_at.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut delete_revisions = Vec::new();
    for stream in &mut watches {
        let put = next_change(stream).await.expect("the put");
        assert_eq!(put.kind, WatchEventKind::Put);
        let delete = next_change(stream).await.expect("the expiry");
        assert_eq!((delete.kind, &delete.key[..]), (WatchEventKind::Delete, &b"/ttl/key"[..]));
        assert!(delete.revision > put.revision);
        delete_revisions.push(delete.revision);
    }
    assert!(delete_revisions.windows(2).all(|pair| pair[0] == pair[1]), "{delete_revisions:?}");
    for id in [1, 2, 3] {
        let found = cluster.client_of_node(id).get(["/ttl/key"], Consistency::Eventual).await.expect("read");
        assert!(found.is_empty(), "node {id} still has the expired key");
    }
}
