//! Key and prefix watches: events, previous values, progress, refusals and lag.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_deliver_changes_previous_values_progress_and_refusals() {
    let servers = start_cluster(3, |config| {
        config.service.watchers_max = 3;
        config.node.raft.lease = Some(LeaseConfig { clock_drift_ppm_max: 1_000 });
    })
    .await;
    let leader = ready_leader(&servers).await;
    let server = &servers[&leader];
    let mut client = server.client().await;

    // With leases configured, a lease read is served.
    assert!(write_ok(&mut client, insert("/other/x", "0")).await);
    let lease = read(&mut client, &["/other/x"], Some(ReadConsistencyPolicy::LeaseRead)).await;
    assert_eq!(pairs(&lease), vec![pair("/other/x", "0")]);

    let mut prefix = watch(&mut client, "/w/", true, true).await;
    let mut exact = watch(&mut client, "/w/x", false, false).await;
    assert!(write_ok(&mut client, insert("/w/x", "1")).await);
    assert!(write_ok(&mut client, insert("/other/y", "no")).await);
    assert!(write_ok(&mut client, insert("/w/x", "2")).await);
    assert!(write_ok(&mut client, insert("/w/z", "3")).await);
    assert!(write_ok(&mut client, delete("/w/x")).await);

    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(next_change(&mut prefix).await);
    }
    let seen: Vec<(WatchEventType, &str, &str, &str)> =
        events.iter().map(|e| (e.event_type(), text(&e.key), text(&e.value), text(&e.prev_value))).collect();
    assert_eq!(
        seen,
        vec![
            (WatchEventType::Put, "/w/x", "1", ""),
            (WatchEventType::Put, "/w/x", "2", "1"),
            (WatchEventType::Put, "/w/z", "3", ""),
            (WatchEventType::Delete, "/w/x", "", "2"),
        ]
    );
    let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "revisions increase: {revisions:?}");
    assert_eq!(revisions[1], revisions[0] + 2, "the write to /other/y took a revision in between");
    assert!(events.iter().all(|e| e.error() == ErrorCode::Success));

    // The exact watch sees only its key, and no previous values (prev_kv is off).
    let mut exact_seen = Vec::new();
    for _ in 0..3 {
        let e = next_change(&mut exact).await;
        exact_seen.push((e.event_type(), text(&e.value).to_string(), e.prev_value.is_empty()));
    }
    assert_eq!(
        exact_seen,
        vec![
            (WatchEventType::Put, "1".to_string(), true),
            (WatchEventType::Put, "2".to_string(), true),
            (WatchEventType::Delete, String::new(), true),
        ]
    );

    // Idle streams receive PROGRESS with the store's revision.
    let mut admin = server.admin().await;
    let revision = status(&mut admin).await.expect("status").revision;
    assert_eq!(revision, revisions[3]);
    let progress = next(&mut prefix).await.expect("open");
    assert_eq!((progress.event_type(), progress.revision), (WatchEventType::Progress, revision));

    // An invalid prefix is refused in-band: one CANCELED event, then the stream ends.
    let mut invalid = watch(&mut client, "/w", true, false).await;
    let refusal = next(&mut invalid).await.expect("a refusal");
    assert_eq!((refusal.event_type(), refusal.error()), (WatchEventType::Canceled, ErrorCode::InvalidArgument));
    assert!(next(&mut invalid).await.is_none());

    // The watcher limit (3) counts membership watches too.
    let mut membership =
        client.watch_membership(WatchMembershipRequest { client_id: 7 }).await.expect("membership watch").into_inner();
    let first: MembershipSnapshot = next(&mut membership).await.expect("the current membership");
    assert_eq!((first.members, first.learners), (vec![1, 2, 3], vec![]));
    let mut over = watch(&mut client, "/w/", true, false).await;
    let refusal = next(&mut over).await.expect("a refusal");
    assert_eq!((refusal.event_type(), refusal.error()), (WatchEventType::Canceled, ErrorCode::Overloaded));
    let over_membership = client.watch_membership(WatchMembershipRequest { client_id: 7 }).await;
    assert_eq!(over_membership.expect_err("over the limit").code(), Code::ResourceExhausted);
    // Closing a stream frees its slot.
    drop(exact);
    let again = eventually("a free watcher slot", || {
        let mut client = client.clone();
        async move {
            let mut stream = watch(&mut client, "/w/", true, false).await;
            assert!(write_ok(&mut client, insert("/w/again", "1")).await);
            let event = next(&mut stream).await?;
            (event.event_type() != WatchEventType::Canceled).then_some((stream, event))
        }
    })
    .await;
    assert_eq!((again.1.event_type(), text(&again.1.key)), (WatchEventType::Put, "/w/again"));

    // Shutdown ends the open streams with UNAVAILABLE.
    drop(again);
    let mut servers = servers;
    let TestServer { stop, task, .. } = servers.remove(&leader).expect("the leader's server");
    let _ = stop.send(());
    let ended = timeout(WAIT, async {
        loop {
            match prefix.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .expect("the stream ends in time");
    assert_eq!(ended, Some(Code::Unavailable));
    timeout(WAIT, task).await.expect("stops").expect("no panic").expect("clean shutdown");
    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_is_canceled_with_a_resume_revision() {
    let servers = start_cluster(3, |config| {
        config.node.watch_buffer_events = 4;
        config.service.watch_output_buffer = 1;
        config.service.watch_progress_interval_ms = 60_000;
    })
    .await;
    let leader = ready_leader(&servers).await;
    let mut client = servers[&leader].client().await;
    // A watcher that does not read: HTTP/2 flow control stops the server from sending after a
    // few large events, and the node's event buffer (4 events) overflows.
    let mut stream = watch(&mut client, "/big/", true, false).await;
    let value = Bytes::from(vec![b'x'; 128 * 1024]);
    let mut revisions = Vec::new();
    for i in 0..40 {
        assert!(write_ok(&mut client, insert(&format!("/big/{i:02}"), value.clone())).await);
    }
    let mut admin = servers[&leader].admin().await;
    let last = status(&mut admin).await.expect("status").revision;
    let canceled = loop {
        let event = next(&mut stream).await.expect("the stream ends with a CANCELED event");
        if event.event_type() == WatchEventType::Canceled {
            break event;
        }
        assert_eq!(event.event_type(), WatchEventType::Put);
        revisions.push(event.revision);
    };
    assert_eq!(canceled.error(), ErrorCode::WatchLagged);
    assert!(next(&mut stream).await.is_none(), "the stream ends after CANCELED");
    assert!(revisions.len() < 40, "some events were lost to the lag");
    assert!(revisions.windows(2).all(|w| w[1] == w[0] + 1), "delivered events have no gap: {revisions:?}");
    // Everything at or below the resume revision was delivered; it is at most one revision
    // behind the last delivered event (the lag may have cut that revision short).
    let delivered_last = revisions.last().copied().unwrap_or(0);
    assert!(canceled.revision <= delivered_last && canceled.revision + 1 >= delivered_last, "{canceled:?}");
    assert!(canceled.revision < last);
    // Resuming at the revision after CANCELED replays the missed events from the history, then
    // continues live: every write appears exactly once, in order.
    let mut resumed = watch_from(&mut client, "/big/", true, true, canceled.revision + 1).await;
    assert!(write_ok(&mut client, insert("/big/live", "after")).await);
    let mut replayed = Vec::new();
    let live = loop {
        let event = next_change(&mut resumed).await;
        assert_eq!(event.event_type(), WatchEventType::Put, "{event:?}");
        if text(&event.key) == "/big/live" {
            break event;
        }
        replayed.push(event.revision);
    };
    let mut all = revisions.into_iter().filter(|revision| *revision <= canceled.revision).collect::<Vec<_>>();
    all.extend(replayed);
    all.push(live.revision);
    assert_eq!(all, ((all[0])..=live.revision).collect::<Vec<_>>(), "no gap, no duplicate");
    assert_eq!(all.len(), 41, "the 40 writes and the live one");
    // A start in the future skips what comes before it.
    let mut future = watch_from(&mut client, "/big/", true, false, live.revision + 2).await;
    assert!(write_ok(&mut client, insert("/big/skipped", "x")).await);
    assert!(write_ok(&mut client, insert("/big/seen", "y")).await);
    let first = next_change(&mut future).await;
    assert_eq!((text(&first.key), first.revision), ("/big/seen", live.revision + 2));
    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}
