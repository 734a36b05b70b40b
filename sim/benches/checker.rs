//! Checker throughput on seeded generated histories: 10 clients, 10,000 operations (the
//! Porcupine-comparable size), over a few keys and on a single key (the worst case: no
//! partitioning helps). Prints time per history and operations per second; asserts nothing about
//! time. Run with `cargo bench -p keel-sim --bench checker` (optional arguments: a history count
//! per scenario, default 5).

use std::time::{Duration, Instant};

use keel_sim::check::generate::{generate, GeneratorConfig};
use keel_sim::check::{check_history, Verdict};

/// The allocator of the `keel-sim` binary, so that the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One benchmark scenario.
struct Scenario {
    name: &'static str,
    config: GeneratorConfig,
}

fn scenarios() -> Vec<Scenario> {
    let base = GeneratorConfig {
        seed: 0,
        clients: 10,
        operations: 10_000,
        keys: 8,
        values: 5,
        info_percent: 0,
        fail_percent: 2,
    };
    vec![
        Scenario { name: "8 keys, no info", config: base.clone() },
        Scenario { name: "8 keys, 2% info", config: GeneratorConfig { info_percent: 2, ..base.clone() } },
        Scenario { name: "1 key, no info", config: GeneratorConfig { keys: 1, ..base.clone() } },
        Scenario { name: "1 key, 1% info", config: GeneratorConfig { keys: 1, info_percent: 1, ..base.clone() } },
        Scenario { name: "1 key, 2 values, no info", config: GeneratorConfig { keys: 1, values: 2, ..base } },
    ]
}

fn main() {
    let histories: u64 = std::env::args().skip(1).find_map(|argument| argument.parse().ok()).unwrap_or(5);
    println!("{:<28} {:>10} {:>14} {:>14}", "scenario", "histories", "ms/history", "ops/s");
    for scenario in scenarios() {
        let mut total = Duration::ZERO;
        let mut operations = 0;
        for seed in 0..histories {
            let history = generate(&GeneratorConfig { seed, ..scenario.config.clone() });
            operations += scenario.config.operations;
            let started = Instant::now();
            let verdict = check_history(&history);
            total += started.elapsed();
            // Generated histories are linearizable by construction: anything else is a checker bug.
            assert!(matches!(verdict, Ok(Verdict::Linearizable)), "{}, seed {seed}: {verdict:?}", scenario.name);
        }
        let seconds = total.as_secs_f64();
        println!(
            "{:<28} {:>10} {:>14.2} {:>14.0}",
            scenario.name,
            histories,
            seconds * 1000.0 / histories as f64,
            operations as f64 / seconds
        );
    }
}
