//! Writes, reads and scans through any node, and data kept across restarts from fjall.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reads_and_scans_with_redirection_and_precise_errors() {
    let servers = start_cluster(3, |_| {}).await;
    let leader = ready_leader(&servers).await;
    let follower = *servers.keys().find(|id| **id != leader).expect("a follower");
    let mut on_leader = servers[&leader].client().await;
    let mut on_follower = servers[&follower].client().await;

    // A write on a follower is redirected with the leader's id and address.
    let refused = write(&mut on_follower, insert("/app/a", "1")).await;
    assert_eq!(refused.error(), ErrorCode::NotLeader);
    let hint = refused.metadata.and_then(|m| m.leader_hint).expect("a leader hint");
    assert_eq!((hint.leader_id, hint.address), (leader, servers[&leader].addr.to_string()));

    // Writes on the leader, with and without a time to live.
    assert!(write_ok(&mut on_leader, insert("/app/a", "1")).await);
    assert!(write_ok(&mut on_leader, insert("/app/b", "2")).await);
    let with_ttl =
        write_request(Operation::Insert(Insert { key: "/app/t".into(), value: "t".into(), ttl_secs: 3_600 }));
    assert!(write_ok(&mut on_leader, with_ttl).await);
    assert!(write_ok(&mut on_leader, delete("/app/t")).await);
    assert!(write_ok(&mut on_leader, delete("/app/never-existed")).await, "deleting a missing key succeeds");

    // Malformed and oversized writes get their own codes.
    let empty = ClientWriteRequest { client_id: 7, command: None };
    assert_eq!(write(&mut on_leader, empty).await.error(), ErrorCode::InvalidArgument);
    let long_key = "k".repeat(5_000);
    assert_eq!(write(&mut on_leader, insert(&long_key, "v")).await.error(), ErrorCode::KeyTooLarge);
    let big_value = Bytes::from(vec![b'v'; (1 << 20) + 1]);
    assert_eq!(write(&mut on_leader, insert("/app/big", big_value)).await.error(), ErrorCode::ValueTooLarge);
    assert_eq!(write(&mut on_leader, insert("", "v")).await.error(), ErrorCode::InvalidArgument);

    // Compare-and-swap: absent expected value means "must not exist"; a failed comparison is
    // not an error but `succeeded = false`.
    assert!(write_ok(&mut on_leader, cas("/app/lock", None, "alice")).await);
    assert!(!write_ok(&mut on_leader, cas("/app/lock", None, "bob")).await);
    assert!(!write_ok(&mut on_leader, cas("/app/lock", Some("bob"), "carol")).await);
    assert!(write_ok(&mut on_leader, cas("/app/lock", Some("alice"), "dave")).await);

    // Reads: absent keys are omitted, the rest come in request order, under every policy.
    let keys = ["/app/lock", "/app/missing", "/app/a"];
    let expected = vec![pair("/app/lock", "dave"), pair("/app/a", "1")];
    assert_eq!(pairs(&read(&mut on_leader, &keys, None).await), expected, "default policy");
    let linearizable = Some(ReadConsistencyPolicy::LinearizableRead);
    assert_eq!(pairs(&read(&mut on_follower, &keys, linearizable).await), expected, "linearizable on a follower");
    let eventual = Some(ReadConsistencyPolicy::EventualConsistency);
    assert_eq!(pairs(&read(&mut on_leader, &keys, eventual).await), expected);
    let lease = read(&mut on_leader, &keys, Some(ReadConsistencyPolicy::LeaseRead)).await;
    assert_eq!(lease.error(), ErrorCode::ConsistencyPolicyUnsupported, "leases are off in this cluster");
    assert!(lease.metadata.is_some_and(|m| m.message.contains("lease reads are disabled")));
    let too_many: Vec<String> = (0..1_025).map(|i| format!("/k/{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert_eq!(read(&mut on_leader, &too_many, None).await.error(), ErrorCode::RequestTooLarge);
    assert_eq!(read(&mut on_leader, &[""], None).await.error(), ErrorCode::InvalidArgument);

    // A scan returns the entries under the prefix and the revision it read at.
    let mut admin = servers[&leader].admin().await;
    let revision = status(&mut admin).await.expect("status").revision;
    for client in [&mut on_leader, &mut on_follower] {
        let scan = client
            .handle_client_scan(ScanRequest { client_id: 7, prefix: "/app/".into() })
            .await
            .expect("scan")
            .into_inner();
        let entries: Vec<(&str, &str)> = scan.entries.iter().map(|e| (text(&e.key), text(&e.value))).collect();
        assert_eq!(entries, vec![("/app/a", "1"), ("/app/b", "2"), ("/app/lock", "dave")]);
        assert_eq!(scan.revision, revision, "the scan reads the latest revision");
    }
    let bad = on_leader.handle_client_scan(ScanRequest { client_id: 7, prefix: "app/".into() }).await;
    let status = bad.expect_err("a prefix without a leading '/' is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.metadata().get("keel-error-code").and_then(|v| v.to_str().ok()),
        Some("ERROR_CODE_INVALID_ARGUMENT")
    );

    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

/// Starts `size` servers on fjall data directories under `dir`, on fresh ephemeral ports (the
/// stored membership keeps the first addresses: restarts reuse them when they are free).
/// Retries briefly while a directory is still locked by the previous run's storage worker.
async fn start_durable(
    size: NodeId,
    dir: &std::path::Path,
    addresses: &mut BTreeMap<NodeId, SocketAddr>,
) -> BTreeMap<NodeId, TestServer> {
    let mut listeners = BTreeMap::new();
    for id in 1..=size {
        let listener = match addresses.get(&id) {
            Some(addr) => bind_again(*addr).await,
            None => listener().await.0,
        };
        addresses.insert(id, listener.local_addr().expect("bound address"));
        listeners.insert(id, listener);
    }
    let members: BTreeMap<NodeId, String> = addresses.iter().map(|(id, a)| (*id, a.to_string())).collect();
    let mut servers = BTreeMap::new();
    for (id, mut listener) in listeners {
        let deadline = Instant::now() + WAIT;
        let server = loop {
            let mut config = server_config(id, &members, addresses[&id]);
            config.data_dir = Some(dir.join(format!("node-{id}")));
            let server = TestServer::start(config, listener);
            sleep(Duration::from_millis(50)).await;
            if !server.task.is_finished() {
                break server;
            }
            let error = server.shutdown().await.expect_err("it stopped on its own");
            assert!(matches!(error, ServerError::Storage(_)), "{error}");
            assert!(Instant::now() < deadline, "the data directory stays locked: {error}");
            listener = bind_again(addresses[&id]).await;
        };
        servers.insert(id, server);
    }
    servers
}

/// A listener on `addr` again, retrying while the port is still held.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    eventually("the port to be free", || async move { TcpListener::bind(addr).await.ok() }).await
}

/// Writes, stops every server, restarts them on the same data directories, and reads.
async fn restart_keeps_data(size: NodeId) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut addresses = BTreeMap::new();
    let servers = start_durable(size, dir.path(), &mut addresses).await;
    let leader = ready_leader(&servers).await;
    let mut client = servers[&leader].client().await;
    assert!(write_ok(&mut client, insert("/d/kept", "yes")).await);
    assert!(write_ok(&mut client, insert("/d/also", "kept")).await);
    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }

    let servers = start_durable(size, dir.path(), &mut addresses).await;
    let leader = ready_leader(&servers).await;
    for id in servers.keys() {
        let mut client = servers[id].client().await;
        let policy = if *id == leader { None } else { Some(ReadConsistencyPolicy::LinearizableRead) };
        let values = pairs(&read(&mut client, &["/d/kept", "/d/also"], policy).await);
        assert_eq!(values, vec![pair("/d/kept", "yes"), pair("/d/also", "kept")], "node {id}");
    }
    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_cluster_keeps_its_data_across_a_full_restart() {
    restart_keeps_data(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_single_node_server_keeps_its_data_across_a_restart() {
    restart_keeps_data(1).await;
}
