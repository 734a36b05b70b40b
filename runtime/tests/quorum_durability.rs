//! Node drivers in one process, over storage whose syncs can be held back: a write is
//! acknowledged only once a quorum has synced it (the leader's own sync is not enough), and the
//! leader compacts the key-value history down to the configured retention through the log.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use keel_core::kv::KvCommand;
use keel_core::{HardState, LogId, LogWrite, Message, NodeId, Role, Snapshot};
use keel_runtime::clock::SystemClock;
use keel_runtime::node::{ClientError, MessageSink, Node, NodeConfig, NodeHandle};
use keel_runtime::storage::{LoadedState, MemoryStorage, Storage, StorageError};
use tokio::sync::mpsc;

/// Upper bound on any wait; the tests normally finish far sooner.
const WAIT: Duration = Duration::from_secs(20);

/// Shared between a [`GatedStorage`] and the test: whether syncs may proceed, and what the
/// storage has seen.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    /// Highest log index appended (synced or not).
    appended: u64,
    /// Highest log index synced.
    synced: u64,
    /// A sync is waiting at the closed gate.
    waiting: bool,
}

impl Gate {
    fn set_closed(&self, closed: bool) {
        self.state.lock().unwrap().closed = closed;
        self.changed.notify_all();
    }

    fn snapshot(&self) -> (u64, u64, bool) {
        let state = self.state.lock().unwrap();
        (state.appended, state.synced, state.waiting)
    }
}

/// Memory storage whose `sync` blocks (on the storage worker's thread) while its gate is closed.
struct GatedStorage {
    inner: MemoryStorage,
    gate: Arc<Gate>,
}

impl Storage for GatedStorage {
    fn load(&mut self) -> Result<LoadedState, StorageError> {
        self.inner.load()
    }
    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.inner.save_hard_state(hard_state)
    }
    fn append(&mut self, write: &LogWrite) -> Result<(), StorageError> {
        self.inner.append(write)?;
        let last = self.inner.last_log_id().index;
        self.gate.state.lock().unwrap().appended = last;
        Ok(())
    }
    fn sync(&mut self) -> Result<LogId, StorageError> {
        let mut state = self.gate.state.lock().unwrap();
        while state.closed {
            state.waiting = true;
            state = self.gate.changed.wait(state).unwrap();
        }
        state.waiting = false;
        drop(state);
        let synced = self.inner.sync()?;
        self.gate.state.lock().unwrap().synced = synced.index;
        Ok(synced)
    }
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.inner.install_snapshot(snapshot)
    }
    fn compact(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.inner.compact(snapshot)
    }
    fn last_log_id(&self) -> LogId {
        self.inner.last_log_id()
    }
    fn has_unsynced_writes(&self) -> bool {
        self.inner.has_unsynced_writes()
    }
}

type Routes = Arc<Mutex<BTreeMap<NodeId, mpsc::Sender<Vec<Message>>>>>;

struct ChannelSink {
    routes: Routes,
}

impl MessageSink for ChannelSink {
    fn send(&mut self, message: Message) {
        let route = self.routes.lock().unwrap().get(&message.to).cloned();
        if let Some(route) = route {
            let _ = route.try_send(vec![message]);
        }
    }

    fn set_peers(&mut self, _peers: BTreeMap<NodeId, String>) {}
}

/// `size` nodes on gated storage; `tweak` adjusts each configuration.
fn start(size: NodeId, tweak: impl Fn(&mut NodeConfig)) -> (BTreeMap<NodeId, Node>, BTreeMap<NodeId, Arc<Gate>>) {
    let members: BTreeMap<NodeId, String> = (1..=size).map(|id| (id, format!("node-{id}"))).collect();
    let routes = Routes::default();
    let (mut nodes, mut gates) = (BTreeMap::new(), BTreeMap::new());
    for id in 1..=size {
        let mut config = NodeConfig::new(id, members.clone());
        // Long election timeouts: a follower held at its gate cannot save a new term, so no
        // election may start during a test, however loaded the machine is.
        config.raft.heartbeat_interval_ms = 20;
        config.raft.election_timeout_ms_min = 1_000;
        config.raft.election_timeout_ms_max = 2_000;
        tweak(&mut config);
        let gate = Arc::new(Gate::default());
        let storage = Box::new(GatedStorage { inner: MemoryStorage::new(), gate: Arc::clone(&gate) });
        let sink = Box::new(ChannelSink { routes: routes.clone() });
        let node = Node::start(config, storage, SystemClock::new(), sink).expect("node starts");
        routes.lock().unwrap().insert(id, node.inbound());
        nodes.insert(id, node);
        gates.insert(id, gate);
    }
    (nodes, gates)
}

fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put { key: Bytes::from(key.to_owned()), value: Bytes::from(value.to_owned()), ttl_ms: None }
}

async fn leader(nodes: &BTreeMap<NodeId, Node>) -> (NodeId, NodeHandle) {
    wait_for("a leader", || async {
        for (id, node) in nodes {
            let handle = node.handle();
            if handle.write(put("/ready", "yes")).await.is_ok() && handle.status().await.ok()?.role == Role::Leader {
                return Some((*id, handle));
            }
        }
        None
    })
    .await
}

async fn wait_for<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_acknowledged_only_once_a_quorum_has_synced_it() {
    let (nodes, gates) = start(3, |_| {});
    let (leader_id, handle) = leader(&nodes).await;
    let followers: Vec<NodeId> = nodes.keys().copied().filter(|id| *id != leader_id).collect();
    // Every disk first catches up, so that no follower is left behind the gate with an older
    // entry (its later appends would queue behind that sync).
    wait_for("every follower synced the leader's log", || {
        let (appended, _, _) = gates[&leader_id].snapshot();
        std::future::ready(followers.iter().all(|id| gates[id].snapshot().1 >= appended).then_some(()))
    })
    .await;
    for id in &followers {
        gates[id].set_closed(true);
    }
    let before = gates[&leader_id].snapshot().0;
    let mut write = Box::pin(handle.write(put("/k", "v")));
    assert!((&mut write).now_or_never().is_none());
    // Both followers have the entry and are stuck syncing it; the leader has synced it.
    let entry = wait_for("the entry on every disk, synced only by the leader", || {
        let (appended, synced, _) = gates[&leader_id].snapshot();
        let followers_ready = followers.iter().all(|id| {
            let (follower_appended, _, waiting) = gates[id].snapshot();
            follower_appended >= appended && waiting
        });
        // The leader's own append of the new entry may land after the followers' (it replicates
        // while it writes): wait for it too.
        std::future::ready((synced >= appended && appended > before && followers_ready).then_some(appended))
    })
    .await;
    for id in &followers {
        let (_, synced, _) = gates[id].snapshot();
        assert!(synced < entry, "follower {id} cannot have synced entry {entry} behind a closed gate");
    }
    assert!((&mut write).now_or_never().is_none(), "acknowledged before any follower synced");
    // One follower's sync completes: with the leader's, a quorum of 2 of 3.
    gates[&followers[0]].set_closed(false);
    let result = tokio::time::timeout(WAIT, write).await.expect("answered once a quorum synced");
    assert!(result.is_ok(), "{result:?}");
    gates[&followers[1]].set_closed(false);
    for node in nodes.into_values() {
        node.stop().await.expect("stops cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_the_history_down_to_the_retention() {
    let (nodes, _gates) = start(1, |config| {
        config.history_retention_revisions = 5;
        config.expire_interval_ms = 10;
    });
    let (_, handle) = leader(&nodes).await;
    for round in 0..30 {
        handle.write(put("/h", &round.to_string())).await.expect("write");
    }
    let compacted = wait_for("the history compaction", || async {
        match handle.history(0, 100).await {
            Err(ClientError::Compacted { compacted, .. }) => Some(compacted),
            _ => None,
        }
    })
    .await;
    let current = handle.status().await.expect("status").revision;
    assert!(compacted + 5 <= current, "the latest 5 revisions are kept: {compacted} vs {current}");
    let recent = handle.history(current - 5, 100).await.expect("the retained history is readable");
    assert_eq!(recent.len(), 5);
    for node in nodes.into_values() {
        node.stop().await.expect("stops cleanly");
    }
}
