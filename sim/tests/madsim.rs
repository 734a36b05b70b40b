//! The madsim simulation of the real runtime: real Keel nodes (gRPC services, peer transport,
//! node driver, storage) on simulated machines, network and time, under faults drawn from the
//! seed, checked for linearizability and acknowledged-write durability.
//!
//! Only in `--cfg madsim` builds (see the README, "Simulating the real runtime (madsim)"):
//!
//! ```sh
//! CARGO_TARGET_DIR=target/madsim RUSTFLAGS="--cfg madsim" RUSTDOCFLAGS="--cfg madsim" \
//!     MADSIM_TEST_SEED=7 MADSIM_TEST_NUM=20 cargo test -p keel-sim --test madsim
//! ```
//!
//! A failing seed is printed by madsim (`MADSIM_TEST_SEED=<seed>` reproduces it) together with
//! the problems found and, for a linearizability failure, the smallest sub-history that shows it.
#![cfg(madsim)]

use std::time::Duration;

use keel_core::Rng;
use keel_sim::madsim::clients::client_options;
use keel_sim::madsim::cluster::SimCluster;
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

/// The same seed gives the same trace: faults, clock skews and the whole client history with
/// its virtual times (madsim's own determinism check only compares its random draws).
#[test]
fn the_same_seed_gives_the_same_trace() {
    let seed = std::env::var("MADSIM_TEST_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(1);
    let once = || {
        let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(async move { run(seed, &Scenario::standard()).await })
    };
    let (first, second) = (once(), once());
    eprintln!("{}\n{}", first.summary(), second.summary());
    assert!(first.problems.is_empty(), "seed {seed} failed:\n{}", first.problems.join("\n"));
    assert_eq!(first.faults, second.faults, "seed {seed}: different faults");
    assert_eq!(first.history, second.history, "seed {seed}: different histories");
    assert_eq!(first.trace_hash, second.trace_hash);
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
