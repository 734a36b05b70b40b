//! Benchmark of the pure simulator (run with `cargo bench -p keel-sim --bench simulator`):
//!
//! - **throughput**: simulated messages delivered per second of wall time, over a sweep of seeds
//!   with their own fault mixes (the issue asks for at least 1,000,000);
//! - **standard scenario**: the wall time of one run of 5 nodes, 2,000 client operations and every
//!   fault switched on, including its final checks (the issue asks for at most 100 ms); reported
//!   as the median over several seeds.
//!
//! It prints figures and asserts nothing about time: machines differ.

use std::time::Instant;

use keel_sim::pure::{run, Scenario};

/// The allocator of the `keel-sim` binary, so that the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn throughput(seeds: std::ops::Range<u64>) {
    let started = Instant::now();
    let mut messages = 0;
    let mut steps = 0;
    for seed in seeds.clone() {
        let outcome = run(Scenario::from_seed(seed), false);
        assert!(outcome.passed(), "seed {seed} failed: {:?}", outcome.verdict);
        messages += outcome.messages_delivered;
        steps += outcome.steps;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "throughput: seeds {seeds:?}: {messages} messages, {steps} steps in {seconds:.2} s = {:.0} messages/s, {:.0} steps/s, {:.1} seeds/s",
        messages as f64 / seconds,
        steps as f64 / seconds,
        (seeds.end - seeds.start) as f64 / seconds
    );
}

fn standard_scenario(seeds: std::ops::Range<u64>) {
    let mut times_ms = Vec::new();
    let mut messages = 0;
    for seed in seeds.clone() {
        let started = Instant::now();
        let outcome = run(Scenario::standard(seed), false);
        times_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(outcome.passed(), "standard scenario of seed {seed} failed: {:?}", outcome.verdict);
        messages += outcome.messages_delivered;
    }
    times_ms.sort_by(f64::total_cmp);
    println!(
        "standard scenario (5 nodes, 2,000 ops, all faults), seeds {seeds:?}: median {:.1} ms, fastest {:.1} ms, slowest {:.1} ms; {:.0} messages per run",
        times_ms[times_ms.len() / 2],
        times_ms[0],
        times_ms[times_ms.len() - 1],
        messages as f64 / times_ms.len() as f64
    );
}

fn main() {
    throughput(1..101);
    standard_scenario(1..12);
}
