//! Seeded random histories of a real, linearizable key-value map, for the checker's tests and
//! benchmarks.
//!
//! Concurrent clients invoke reads, writes, deletes and CASes on a few keys. Each operation takes
//! effect on a real map at one instant strictly inside its interval (a later step than its
//! invocation, an earlier one than its completion), so every generated history is linearizable by
//! construction. Some operations fail before taking effect (reads and writes) and some end with
//! `info`: those took effect, or never will, or take effect later, after their `info`, like a
//! request stuck in a network queue. Everything is drawn from one seed.

use std::collections::BTreeMap;

use keel_core::Rng;

use crate::history::{EventType, Function, History, HistoryEvent, ProcessId};

/// The shape of a generated history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Everything random is drawn from this seed.
    pub seed: u64,
    /// Concurrent client processes (at least 1).
    pub clients: usize,
    /// Operations invoked in total.
    pub operations: usize,
    /// Keys the operations spread over (at least 1).
    pub keys: usize,
    /// Distinct values written per key (at least 1): fewer values make the search harder.
    pub values: usize,
    /// Percentage of completions reported as `info` (outcome unknown).
    pub info_percent: u32,
    /// Percentage of reads and writes that fail without taking effect.
    pub fail_percent: u32,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig { seed: 0, clients: 10, operations: 1000, keys: 4, values: 5, info_percent: 2, fail_percent: 2 }
    }
}

/// The seeded generator (keel-core's SplitMix64) with the two draws the generator needs.
struct Random(Rng);

impl Random {
    /// Uniform in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: usize) -> usize {
        self.0.range(0, bound as u64) as usize
    }

    fn percent(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }
}

/// Where one client is in its current operation.
#[derive(Clone, Debug)]
enum ClientState {
    Idle,
    /// Invoked, not yet taken effect.
    Invoked(HistoryEvent),
    /// Took effect; the completion to report (`Ok`, or `Fail` for a CAS that did not match).
    Applied(HistoryEvent, HistoryEvent),
}

/// The generator's running state.
struct Generator {
    config: GeneratorConfig,
    random: Random,
    store: BTreeMap<String, String>,
    history: History,
    /// Operations that ended with `info` before taking effect: they may still take effect.
    lingering: Vec<HistoryEvent>,
    step_count: u64,
}

/// A linearizable history shaped by `config`.
pub fn generate(config: &GeneratorConfig) -> History {
    let mut generator = Generator {
        config: config.clone(),
        random: Random(Rng::new(config.seed)),
        store: BTreeMap::new(),
        history: Vec::new(),
        lingering: Vec::new(),
        step_count: 0,
    };
    let mut clients = vec![ClientState::Idle; config.clients.max(1)];
    let mut invoked = 0;
    while invoked < config.operations || clients.iter().any(|client| !matches!(client, ClientState::Idle)) {
        generator.step_count += 1;
        if !generator.lingering.is_empty() && generator.random.below(8) == 0 {
            let late = generator.lingering.swap_remove(generator.random.below(generator.lingering.len()));
            if generator.random.below(2) == 0 {
                generator.apply(&late);
            }
        }
        let client = generator.random.below(clients.len());
        let state = std::mem::replace(&mut clients[client], ClientState::Idle);
        clients[client] = match state {
            ClientState::Idle if invoked < config.operations => {
                invoked += 1;
                let invocation = generator.invocation(client as ProcessId);
                generator.record(&invocation, EventType::Invoke, None);
                ClientState::Invoked(invocation)
            }
            ClientState::Idle => ClientState::Idle,
            ClientState::Invoked(invocation) => generator.take_effect_or_end(invocation),
            ClientState::Applied(invocation, completion) => {
                if generator.random.percent(config.info_percent / 2) {
                    generator.record(&invocation, EventType::Info, None);
                } else {
                    generator.history.push(HistoryEvent { time_ns: generator.now_ns(), ..completion });
                }
                ClientState::Idle
            }
        };
    }
    generator.history
}

impl Generator {
    fn now_ns(&self) -> Option<u64> {
        Some(self.step_count * 1000)
    }

    /// Appends an event for `invocation`'s operation.
    fn record(&mut self, invocation: &HistoryEvent, event_type: EventType, read_value: Option<String>) {
        let time_ns = self.now_ns();
        self.history.push(HistoryEvent { event_type, read_value, time_ns, ..invocation.clone() });
    }

    /// A random operation's invocation by `process`.
    fn invocation(&mut self, process: ProcessId) -> HistoryEvent {
        let key = format!("k{}", self.random.below(self.config.keys.max(1)));
        let value = format!("v{}", self.random.below(self.config.values.max(1)));
        let function = match self.random.below(10) {
            0..=4 => Function::Read,
            5 => Function::Write(None),
            6..=7 => Function::Write(Some(value)),
            _ => {
                // Half the CASes expect the current value, so that many succeed.
                let expected = match self.random.below(2) {
                    0 => self.store.get(&key).cloned(),
                    _ => Some(format!("v{}", self.random.below(self.config.values.max(1)))),
                };
                Function::Cas { expected, new: value }
            }
        };
        HistoryEvent { process, event_type: EventType::Invoke, function, key, read_value: None, time_ns: None }
    }

    /// The next step of an invoked operation: it takes effect, or ends without taking effect yet.
    fn take_effect_or_end(&mut self, invocation: HistoryEvent) -> ClientState {
        let can_fail = !matches!(invocation.function, Function::Cas { .. });
        if can_fail && self.random.percent(self.config.fail_percent) {
            self.record(&invocation, EventType::Fail, None);
            return ClientState::Idle;
        }
        if self.random.percent(self.config.info_percent / 2) {
            self.record(&invocation, EventType::Info, None);
            if invocation.function != Function::Read {
                self.lingering.push(invocation);
            }
            return ClientState::Idle;
        }
        let completion = self.apply(&invocation);
        ClientState::Applied(invocation, completion)
    }

    /// Applies the operation to the real map now; returns its completion (time filled in later).
    fn apply(&mut self, invocation: &HistoryEvent) -> HistoryEvent {
        let current = self.store.get(&invocation.key).cloned();
        let (event_type, read_value) = match &invocation.function {
            Function::Read => (EventType::Ok, current),
            Function::Write(value) => {
                self.set(&invocation.key, value.clone());
                (EventType::Ok, None)
            }
            Function::Cas { expected, new } if *expected == current => {
                self.set(&invocation.key, Some(new.clone()));
                (EventType::Ok, None)
            }
            Function::Cas { .. } => (EventType::Fail, None),
        };
        HistoryEvent { event_type, read_value, ..invocation.clone() }
    }

    fn set(&mut self, key: &str, value: Option<String>) {
        match value {
            Some(value) => self.store.insert(key.to_owned(), value),
            None => self.store.remove(key),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_history_and_another_seed_another() {
        let config = GeneratorConfig { operations: 200, ..GeneratorConfig::default() };
        assert_eq!(generate(&config), generate(&config));
        assert_ne!(generate(&config), generate(&GeneratorConfig { seed: 1, ..config }));
    }

    #[test]
    fn invokes_every_operation_and_completes_each_at_most_once() {
        let config =
            GeneratorConfig { operations: 500, info_percent: 20, fail_percent: 10, ..GeneratorConfig::default() };
        let history = generate(&config);
        let invocations = history.iter().filter(|event| event.event_type == EventType::Invoke).count();
        assert_eq!(invocations, 500);
        assert_eq!(history.len(), 1000);
        for outcome in [EventType::Ok, EventType::Fail, EventType::Info] {
            assert!(history.iter().any(|event| event.event_type == outcome), "no {outcome:?}");
        }
    }
}
