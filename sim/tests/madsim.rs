//! The madsim simulation of the real runtime: real Keel nodes (gRPC services, peer transport,
//! node driver, storage) on simulated machines, network and time, under faults drawn from the
//! seed, checked for linearizability and acknowledged-write durability.
//!
//! Only in `--cfg madsim` builds (see the README, "Simulating the real runtime (madsim)"):
//!
//! ```sh
//! CARGO_TARGET_DIR=target/madsim RUSTFLAGS="--cfg madsim" RUSTDOCFLAGS="--cfg madsim" \
//!     MADSIM_TEST_SEED=7 cargo test -p keel-sim --test madsim -- --exact three_nodes_under_faults_stay_linearizable
//! ```
//!
//! A failing seed is printed by madsim together with the problems found and, for a
//! linearizability failure, the smallest sub-history that shows it. The same command with
//! `MADSIM_TEST_SEED=<seed>` reproduces it when the seed was the first simulation of its process
//! (one seed per process, as CI runs them): see `the_same_seed_gives_the_same_trace`.
#![cfg(madsim)]

use std::time::Duration;

use keel::proto::health::health_check_response::ServingStatus;
use keel_core::{NodeId, Rng};
use keel_runtime::etcd::health::{self, HealthQuery};
use keel_sim::madsim::clients::client_options;
use keel_sim::madsim::cluster::{node_address, SimCluster};
use keel_sim::madsim::etcd_clients::grpc_health;
use keel_sim::madsim::{run, Report, Scenario};

fn assert_passed(report: &Report) {
    eprintln!("{}", report.summary());
    for line in &report.faults {
        eprintln!("  fault at {line}");
    }
    assert!(report.problems.is_empty(), "seed {} failed:\n{}", report.seed, report.problems.join("\n"));
    let [ok, _, _] = report.outcomes;
    // Faults may keep a quorum away for long stretches; the run must still have done something.
    assert!(ok >= 20, "seed {}: only {ok} operations succeeded; the workload barely ran", report.seed);
    // Every seed's history holds etcd API operations too (6 to 122 calls per seed in seeds 1..=60).
    let (calls, answered) = report.etcd_calls;
    assert!(answered >= 1, "seed {}: none of {calls} etcd API calls was answered", report.seed);
}

/// Three nodes, five clients, faults for 10 virtual seconds, then heal and check.
#[madsim::test]
async fn three_nodes_under_faults_stay_linearizable() {
    let seed = madsim::runtime::Handle::current().seed();
    assert_passed(&run(seed, &Scenario::standard()).await);
}

/// Five nodes: two may be down at once.
#[madsim::test]
async fn five_nodes_under_faults_stay_linearizable() {
    let seed = madsim::runtime::Handle::current().seed();
    assert_passed(&run(seed, &Scenario::five_nodes()).await);
}

/// The same seed gives the same trace (faults, clock skews and the whole client history with
/// its virtual times; madsim's own determinism check only compares its random draws), in two
/// fresh processes. Within one process a second run may differ: tokio's `select!` draws its
/// branch order from a thread-local generator seeded from a process-wide counter, so each seed
/// is reproducible only as the first simulation of a process (see the README).
#[test]
fn the_same_seed_gives_the_same_trace() {
    let seed = std::env::var("MADSIM_TEST_SEED").ok().and_then(|seed| seed.parse::<u64>().ok()).unwrap_or(1);
    let (first, second) = (trace_of_fresh_run(seed), trace_of_fresh_run(seed));
    assert_eq!(first, second, "seed {seed}: two runs in fresh processes gave different traces");
}

/// Runs the three-node scenario for `seed` in a new process (this test binary) and returns its
/// summary line, which ends with the trace hash.
fn trace_of_fresh_run(seed: u64) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = std::process::Command::new(exe)
        .args(["--exact", "three_nodes_under_faults_stay_linearizable", "--nocapture", "--test-threads", "1"])
        .env("MADSIM_TEST_SEED", seed.to_string())
        .env("MADSIM_TEST_NUM", "1")
        .env_remove("MADSIM_TEST_CHECK_DETERMINISM")
        .output()
        .expect("the test binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "seed {seed} failed in a fresh process:\n{stderr}");
    let prefix = format!("seed {seed}: ");
    let summary = stderr.lines().find(|line| line.starts_with(&prefix)).expect("the run prints its summary");
    assert!(summary.contains(" trace "), "no trace hash in {summary:?}");
    summary.to_owned()
}

/// A slow disk slows the node down: with every group of storage operations taking 300 ms, a
/// single node cannot acknowledge a write sooner (the write is durable only after its sync);
/// once the disk is fast again, writes are quick again.
#[madsim::test]
async fn a_slow_disk_delays_acknowledgements_until_it_is_fast_again() {
    let seed = madsim::runtime::Handle::current().seed();
    let mut cluster = SimCluster::start(1, seed, &mut Rng::new(seed));
    let client = keel::client::KeelClient::new(cluster.addresses(), client_options(1, false)).expect("valid endpoints");
    let machine = madsim::runtime::Handle::current().create_node().name("client").ip([10, 0, 1, 1].into()).build();
    let timed_put = move |client: std::sync::Arc<keel::client::KeelClient>, value: &'static str| {
        machine.spawn(async move {
            let started = tokio::time::Instant::now();
            client.put("/slow", value, None).await.expect("the write is acknowledged");
            started.elapsed()
        })
    };
    let client = std::sync::Arc::new(client);
    timed_put(client.clone(), "warm-up").await.expect("client task");
    cluster.slow_disk(1, 300);
    let slow = timed_put(client.clone(), "slow").await.expect("client task");
    assert!(slow >= Duration::from_millis(300), "a write on a 300 ms disk took {slow:?}");
    cluster.slow_disk(1, 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fast = timed_put(client, "fast").await.expect("client task");
    assert!(fast < Duration::from_millis(100), "a write on a fast disk took {fast:?}");
}

/// Waits until etcd's health check passes on every node of `ids`; panics with the last answers
/// after `within`.
async fn wait_healthy(cluster: &SimCluster, ids: &[NodeId], query: &HealthQuery, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut answers = Vec::new();
        for &id in ids {
            let answer = match cluster.handle(id) {
                Some(handle) => health::check(&handle, query).await,
                None => health::Health { healthy: false, reason: "not started".to_owned() },
            };
            answers.push((id, answer));
        }
        if answers.iter().all(|(_, answer)| answer.healthy) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not healthy after {within:?}: {answers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the gRPC health service of every node of `ids` answers `SERVING` to a client on
/// `machine`, through the simulated network; panics with the last answers after `within`.
async fn wait_grpc_serving(machine: &madsim::runtime::NodeHandle, ids: &[NodeId], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let addresses: Vec<(NodeId, String)> = ids.iter().map(|&id| (id, node_address(id))).collect();
        let answers = machine
            .spawn(async move {
                let mut answers = Vec::new();
                for (id, address) in addresses {
                    answers.push((id, grpc_health(&address).await));
                }
                answers
            })
            .await
            .expect("the client task");
        if answers.iter().all(|(_, answer)| *answer == Ok(ServingStatus::Serving as i32)) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not SERVING after {within:?}: {answers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// etcd's `/health` check (`keel_runtime::etcd::health::check`, what `GET /health` answers) on
/// real nodes under a partition: the leader, cut off from the other two, is never healthy from
/// that moment on (its reads cannot be confirmed by a quorum), while a serializable check, which
/// asks only whether the member itself serves reads, still passes; the other two are healthy
/// again once they have elected a leader, and the cut-off member once the network heals. The
/// gRPC health service, asked over the simulated network, agrees: every member `SERVING` at
/// first, the two that keep the quorum `SERVING` again, the cut-off one unreachable, and all
/// three once healed.
#[madsim::test]
async fn health_fails_on_a_member_cut_off_from_the_quorum_until_the_network_heals() {
    let seed = madsim::runtime::Handle::current().seed();
    let mut cluster = SimCluster::start(3, seed, &mut Rng::new(seed));
    let linearizable = HealthQuery::default();
    let serializable = HealthQuery { serializable: true, ..HealthQuery::default() };
    wait_healthy(&cluster, &[1, 2, 3], &linearizable, Duration::from_secs(10)).await;
    let machine = madsim::runtime::Handle::current().create_node().name("prober").ip([10, 0, 1, 2].into()).build();
    wait_grpc_serving(&machine, &[1, 2, 3], Duration::from_secs(10)).await;
    let status = cluster.handle(1).expect("node 1 started").status().await.expect("a status");
    let leader = status.leader.leader_id.expect("a healthy member knows the leader");
    let handle = cluster.handle(leader).expect("the leader started");
    cluster.isolate(leader);
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut reasons = std::collections::BTreeSet::new();
    while tokio::time::Instant::now() < until {
        let answer = health::check(&handle, &linearizable).await;
        assert!(!answer.healthy, "the cut-off leader {leader} reported itself healthy");
        reasons.insert(answer.reason);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // First its reads time out; once it has stepped down it knows no leader.
    assert!(reasons.contains("RAFT NO LEADER"), "reasons given: {reasons:?}");
    assert!(health::check(&handle, &serializable).await.healthy, "it still serves local reads");
    let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    wait_healthy(&cluster, &others, &linearizable, Duration::from_secs(10)).await;
    wait_grpc_serving(&machine, &others, Duration::from_secs(10)).await;
    let address = node_address(leader);
    let cut_off = machine.spawn(async move { grpc_health(&address).await }).await.expect("the client task");
    assert!(cut_off.is_err(), "the cut-off leader {leader} answered a prober: {cut_off:?}");
    cluster.heal();
    wait_healthy(&cluster, &[1, 2, 3], &linearizable, Duration::from_secs(10)).await;
    wait_grpc_serving(&machine, &[1, 2, 3], Duration::from_secs(10)).await;
}

/// etcd authentication under faults: a user writes a counter through every member in turn while
/// nodes are cut off, paused, killed and restarted (through the etcd and the native
/// API at once); `root` revokes the user's write permission
/// in the middle. No write sent after the revocation was acknowledged may succeed, and the value
/// left at the end must come from a write sent before it: a member whose auth table lags (a
/// follower cut off, a new leader that has not applied the revocation yet) must not let one
/// through, which the auth revision every write carries guarantees.
#[madsim::test]
async fn a_revoked_permission_lets_no_later_write_through_under_faults() {
    use keel_sim::madsim::etcd_auth::{read_as_root, revoke_everything, set_up, write_counter, Attempt};
    use keel_sim::madsim::faults::inject;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::time::{timeout, Instant};

    let seed = madsim::runtime::Handle::current().seed();
    let mut rng = Rng::new(seed);
    let mut cluster = SimCluster::start(3, seed, &mut rng);
    let addresses = cluster.addresses();
    let runtime = madsim::runtime::Handle::current();
    let machine = |name: &str, last: u8| runtime.create_node().name(name).ip([10, 0, 1, last].into()).build();
    let admin = machine("auth-admin", 3);
    let set = (admin.clone(), addresses.clone());
    let set = set.0.spawn(async move { set_up(&set.1).await });
    timeout(Duration::from_secs(20), set).await.expect("set up in time").expect("the task").expect("set up");
    let (stop, attempts) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::<Attempt>::new())));
    let writer = (addresses.clone(), Arc::clone(&stop), Arc::clone(&attempts));
    let writing =
        machine("writer", 4).spawn(async move { write_counter(writer.0, "/revoked/k", writer.1, writer.2).await });
    let start = Instant::now();
    let mut log = inject(&mut cluster, &mut rng, Duration::from_secs(3), start).await;
    // The revocation goes out while the faults go on; the writer keeps writing past it.
    let revoking = addresses.clone();
    let revoked = admin.spawn(async move {
        revoke_everything(&revoking).await;
        Instant::now()
    });
    log.extend(inject(&mut cluster, &mut rng, Duration::from_secs(4), start).await);
    cluster.heal();
    let acknowledged_at = timeout(Duration::from_secs(30), revoked).await.expect("revoked in time").expect("the task");
    log.push(format!("{} revocation acknowledged", acknowledged_at.duration_since(start).as_millis()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    timeout(Duration::from_secs(20), writing).await.expect("the writer stops").expect("the task");
    let read = machine("reader", 5).spawn(async move { read_as_root(addresses, "/revoked/k").await });
    let final_value = timeout(Duration::from_secs(20), read).await.expect("read in time").expect("the task");
    let attempts = attempts.lock().expect("not poisoned").clone();
    let context = format!("seed {seed}, faults {log:?}");
    let late: Vec<u64> =
        attempts.iter().filter(|a| a.acknowledged && a.sent >= acknowledged_at).map(|a| a.value).collect();
    assert!(late.is_empty(), "writes sent after the revocation succeeded: {late:?} ({context})");
    let before = attempts.iter().filter(|a| a.sent < acknowledged_at).map(|a| a.value).max().unwrap_or(0);
    let last: u64 = final_value.as_deref().map_or(0, |value| value.parse().expect("a counter"));
    assert!(
        last <= before,
        "the value {last} was written after the revocation (last sent before: {before}; {context})"
    );
    // Both APIs must have had writes through.
    let acknowledged = |native: bool| attempts.iter().filter(|a| a.acknowledged && a.native == native).count();
    let (etcd, native) = (acknowledged(false), acknowledged(true));
    assert!(etcd > 0 && native > 0, "etcd writes acknowledged: {etcd}, native ones: {native} ({context})");
    eprintln!(
        "seed {seed}: {} writes ({etcd} + {native} acknowledged), last value {last}, {} faults",
        attempts.len(),
        log.len()
    );
}
