//! The Rust client library (`keel::client`) against three node servers started in this process
//! on ephemeral loopback ports (plain build only). Checks what the library adds over the wire
//! protocol: it finds the leader from any endpoint by following hints, skips endpoints that are
//! down, reports request errors with their code, gives up within its deadline, and survives a
//! leadership change.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use keel::client::{ClientError, ClientOptions, Consistency, KeelClient, Role, WatchEventKind};
use keel::proto::error::ErrorCode;
use keel_runtime::node::NodeConfig;
use keel_runtime::server::{serve_with_listener, ServerConfig, ServerError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound on any wait.
const WAIT: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

struct Cluster {
    servers: BTreeMap<u32, Server>,
}

impl Cluster {
    /// Three in-memory nodes with loopback timings.
    async fn start() -> Self {
        let mut listeners = BTreeMap::new();
        let mut members = BTreeMap::new();
        for id in 1..=3u32 {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
            members.insert(id, listener.local_addr().unwrap().to_string());
            listeners.insert(id, listener);
        }
        let mut servers = BTreeMap::new();
        for (id, listener) in listeners {
            let addr = listener.local_addr().unwrap();
            let mut node = NodeConfig::new(id, members.clone());
            node.raft.heartbeat_interval_ms = 30;
            node.raft.election_timeout_ms_min = 300;
            node.raft.election_timeout_ms_max = 600;
            let mut config = ServerConfig::new(node, addr);
            config.transport.call_timeout_ms = 500;
            config.service.watch_progress_interval_ms = 100;
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve_with_listener(config, listener, async move {
                let _ = stopped.await;
            }));
            servers.insert(id, Server { addr, stop, task });
        }
        Self { servers }
    }

    fn endpoint(&self, id: u32) -> String {
        self.servers[&id].addr.to_string()
    }

    fn endpoints(&self) -> Vec<String> {
        self.servers.keys().map(|id| self.endpoint(*id)).collect()
    }

    /// The leader's id, polled through the library's status call.
    async fn leader(&self, client: &KeelClient) -> u32 {
        timeout(WAIT, async {
            loop {
                let statuses = client.status_all().await;
                if let Some(leader) = statuses
                    .into_iter()
                    .filter_map(|(_, status)| status.ok())
                    .find(|status| status.role == Role::Leader)
                {
                    return leader.id;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("a leader is elected")
    }

    async fn stop(self) {
        for (_, server) in self.servers {
            let _ = server.stop.send(());
            let result = timeout(WAIT, server.task).await.expect("the server stops in time").unwrap();
            assert!(result.is_ok(), "{result:?}");
        }
    }
}

fn options() -> ClientOptions {
    ClientOptions { deadline: Duration::from_secs(15), ..ClientOptions::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_finds_the_leader_and_serves_every_operation() {
    let cluster = Cluster::start().await;
    let client = KeelClient::connect(cluster.endpoints(), options()).await.expect("connects");
    let leader = cluster.leader(&client).await;

    // Writes and reads, from whichever endpoint comes first.
    client.put("/app/a", "1", None).await.unwrap();
    client.put("/app/b", "2", Some(Duration::from_secs(60))).await.unwrap();
    let found = client.get(["/app/a", "/app/missing"], Consistency::Linearizable).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].key.as_ref(), found[0].value.as_ref()), (&b"/app/a"[..], &b"1"[..]));
    assert_eq!(client.get_one("/app/b").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert!(client.cas("/app/a", Some("1"), "one").await.unwrap());
    assert!(!client.cas("/app/a", Some("1"), "uno").await.unwrap());
    assert!(client.cas("/app/c", None::<&str>, "3").await.unwrap());
    client.delete("/app/b").await.unwrap();
    let scan = client.scan("/app/").await.unwrap();
    let keys: Vec<&[u8]> = scan.entries.iter().map(|entry| entry.key.as_ref()).collect();
    assert_eq!(keys, [&b"/app/a"[..], b"/app/c"]);
    assert!(scan.revision > 0);

    // Request errors come back typed, with their code, and are not retried.
    let error = client.scan("no-slash").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument), "{error}");

    // Membership and status.
    let members = client.members().await.unwrap();
    assert_eq!(members.voters, [1, 2, 3]);
    assert_eq!(members.addresses.len(), 3);
    let status = client.status(&cluster.endpoint(leader)).await.unwrap();
    assert_eq!((status.id, status.role), (leader, Role::Leader));
    assert_eq!(status.leader.map(|hint| hint.id), Some(leader));

    // A client that knows only a follower is redirected to the leader by its hint.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let only_follower = KeelClient::connect(vec![cluster.endpoint(follower)], options()).await.unwrap();
    only_follower.put("/app/redirected", "yes", None).await.unwrap();
    assert_eq!(only_follower.get_one("/app/redirected").await.unwrap().as_deref(), Some(&b"yes"[..]));

    // Leadership moves; the client follows.
    let target = follower;
    client.transfer_leader(target).await.unwrap();
    assert_eq!(cluster.leader(&client).await, target);
    client.put("/app/after-transfer", "ok", None).await.unwrap();
    assert_eq!(client.get_one("/app/after-transfer").await.unwrap().as_deref(), Some(&b"ok"[..]));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_deliver_changes_with_previous_values() {
    let cluster = Cluster::start().await;
    let client = KeelClient::connect(cluster.endpoints(), options()).await.unwrap();
    cluster.leader(&client).await;
    client.put("/cfg/x", "0", None).await.unwrap();
    let mut stream = client.watch("/cfg/", true, true).await.unwrap();
    client.put("/cfg/x", "1", None).await.unwrap();
    client.delete("/cfg/x").await.unwrap();
    let mut seen = Vec::new();
    timeout(WAIT, async {
        while seen.len() < 2 {
            let event = stream.next().await.expect("the stream stays open").expect("no watch error");
            if event.kind != WatchEventKind::Progress {
                seen.push(event);
            }
        }
    })
    .await
    .expect("both events arrive");
    assert_eq!(
        (seen[0].kind, seen[0].value.as_ref(), seen[0].prev_value.as_ref()),
        (WatchEventKind::Put, &b"1"[..], &b"0"[..])
    );
    assert_eq!((seen[1].kind, seen[1].prev_value.as_ref()), (WatchEventKind::Delete, &b"1"[..]));
    assert!(seen[1].revision > seen[0].revision);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_that_are_down_are_skipped_and_bounded() {
    let cluster = Cluster::start().await;
    // A port nobody listens on, listed first.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
    let mut endpoints = vec![dead.clone()];
    endpoints.extend(cluster.endpoints());
    let client = KeelClient::connect(endpoints, options()).await.expect("another endpoint answers");
    cluster.leader(&client).await;
    client.put("/k", "v", None).await.unwrap();
    assert_eq!(client.get_one("/k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert!(client.status(&dead).await.is_err());

    // Nothing reachable: the write was never sent, so it is retried until the budget runs out,
    // then reported with the last error.
    let quick = ClientOptions { deadline: Duration::from_secs(2), max_attempts: 4, ..ClientOptions::default() };
    let lonely = KeelClient::new(vec![dead.clone()], quick.clone()).unwrap();
    match lonely.put("/k", "v", None).await.unwrap_err() {
        ClientError::GaveUp { attempts, last, .. } => {
            assert!(matches!(*last, ClientError::Unreachable { .. }), "{last}");
            assert!(attempts <= 4);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(matches!(KeelClient::connect(vec![dead], quick).await, Err(ClientError::Unreachable { .. })));
    cluster.stop().await;
}
