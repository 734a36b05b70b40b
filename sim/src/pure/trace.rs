//! The run's trace: a running 64-bit hash of every event (message deliveries, applied entries,
//! client invocations and completions, faults) for the determinism self-check, and optionally the
//! events themselves as JSON lines for people and for a future `replay`.
//!
//! Data flow: the simulator calls [`Trace::record`] with a short event name, the true time and the
//! event's numbers. The hash mixes only the numbers (cheap); a line is formatted only when the
//! trace keeps lines. Two runs of one seed must end with the same [`Trace::hash`].

/// The trace of one run.
#[derive(Debug, Default)]
pub struct Trace {
    hash: u64,
    events: u64,
    lines: Option<Vec<String>>,
}

/// Mixes `value` into `hash` (SplitMix64's finalizer over the xor).
fn mix(hash: u64, value: u64) -> u64 {
    let mut z = (hash ^ value).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Trace {
    /// A trace that keeps only the hash, or also every event as a JSON line.
    pub fn new(keep_lines: bool) -> Self {
        Self { hash: 0, events: 0, lines: keep_lines.then(Vec::new) }
    }

    /// Records one event: `name` and `fields` go into the hash; `detail` (formatted only when
    /// lines are kept) adds a human-readable description to the line.
    pub fn record(&mut self, name: &'static str, time_ms: u64, fields: &[u64], detail: impl FnOnce() -> String) {
        let mut hash = mix(self.hash, time_ms);
        for byte in name.bytes() {
            hash = mix(hash, u64::from(byte));
        }
        for field in fields {
            hash = mix(hash, *field);
        }
        self.hash = hash;
        self.events += 1;
        if let Some(lines) = self.lines.as_mut() {
            let detail = serde_json::to_string(&detail()).expect("a string always serializes");
            lines.push(format!(
                "{{\"t\":{time_ms},\"event\":\"{name}\",\"fields\":{fields:?},\"detail\":{detail},\"hash\":\"{hash:016x}\"}}"
            ));
        }
    }

    /// The running hash.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Events recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The JSON lines, if kept.
    pub fn lines(&self) -> Option<&[String]> {
        self.lines.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field_and_order() {
        let mut a = Trace::new(true);
        let mut b = Trace::new(false);
        a.record("x", 1, &[1, 2], || "d".into());
        b.record("x", 1, &[1, 2], || "ignored".into());
        assert_eq!(a.hash(), b.hash());
        let mut c = Trace::new(false);
        c.record("x", 1, &[2, 1], String::new);
        assert_ne!(a.hash(), c.hash());
        assert!(a.lines().unwrap()[0].contains("\"event\":\"x\""));
    }
}
