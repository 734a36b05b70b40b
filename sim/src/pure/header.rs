//! The first line of a trace file: the trace format, the simulator's version and the whole
//! scenario (seed, cluster size, workload, every fault switch and rate), so that `keel-sim replay`
//! can rebuild the run from the file alone, whatever command-line overrides or shrinking produced
//! it. Reading a trace file (header, event lines, their line numbers) also lives here, with typed
//! errors that name the line.
//!
//! Data flow: `keel-sim run --trace` and `sweep` write [`TraceHeader::line`] then the event lines;
//! [`TraceFile::parse`] reads them back for `replay` and `render`.

use serde::{Deserialize, Serialize};

use super::node::node_config;
use super::scenario::Scenario;

/// The trace format written by this simulator; other formats are refused.
pub const TRACE_FORMAT: u64 = 1;

/// The simulator's version, written in every header.
pub const SIMULATOR_VERSION: &str = concat!("keel-sim ", env!("CARGO_PKG_VERSION"));

/// The header line of a trace file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// The trace format ([`TRACE_FORMAT`]).
    pub keel_trace: u64,
    /// The simulator that wrote it ([`SIMULATOR_VERSION`]).
    pub simulator: String,
    /// The run's seed (also in the scenario; here for people and tools that only want it).
    pub seed: u64,
    /// Everything the run did, drawn from the seed and then overridden.
    pub scenario: Scenario,
}

impl TraceHeader {
    /// The header of a run of `scenario` by this simulator.
    pub fn new(scenario: &Scenario) -> Self {
        Self {
            keel_trace: TRACE_FORMAT,
            simulator: SIMULATOR_VERSION.to_string(),
            seed: scenario.seed,
            scenario: scenario.clone(),
        }
    }

    /// The header as one JSON line.
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("a header always serializes")
    }
}

/// Why a trace file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceFileError {
    /// The file is empty.
    #[error("the trace is empty: its first line must be the header written by `keel-sim run --trace`")]
    Empty,
    /// The first line is not a header.
    #[error("line 1: not a trace header ({0})")]
    BadHeader(String),
    /// The header's format is not this simulator's.
    #[error("line 1: trace format {found}, this keel-sim reads format {TRACE_FORMAT}")]
    Format {
        /// The format found.
        found: u64,
    },
    /// The header's scenario is one the simulator cannot run (an edited or foreign header).
    #[error("line 1: the scenario cannot be run: {0}")]
    BadScenario(String),
    /// An event line is not a JSON object with a time and an event name.
    #[error("line {line}: {why}")]
    BadLine {
        /// The line (1-based).
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// The file has no `end` line: it was cut short.
    #[error("line {line}: the trace ends without its `end` line (truncated?)")]
    Truncated {
        /// The line after the last one.
        line: usize,
    },
}

/// One parsed event line.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceLine {
    /// Its line number in the file (1-based).
    pub number: usize,
    /// The true time of the event, in milliseconds.
    pub time_ms: u64,
    /// The event name (`send`, `deliver`, ..., `end`).
    pub event: String,
    /// The whole object.
    pub value: serde_json::Value,
    /// The line as written.
    pub text: String,
}

impl TraceLine {
    /// A numeric field, or 0 when absent.
    pub fn num(&self, name: &str) -> u64 {
        self.value.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0)
    }

    /// A text field, or "" when absent.
    pub fn text_field(&self, name: &str) -> &str {
        self.value.get(name).and_then(serde_json::Value::as_str).unwrap_or("")
    }
}

/// A whole trace file: its header and its event lines (the last being `end`).
#[derive(Clone, Debug)]
pub struct TraceFile {
    /// The header.
    pub header: TraceHeader,
    /// The event lines, `end` included, in file order.
    pub lines: Vec<TraceLine>,
}

impl TraceFile {
    /// Parses a trace file's text: a header, event lines each a JSON object with `t` and
    /// `event`, and a final `end` line. Blank lines are refused like any malformed line.
    pub fn parse(text: &str) -> Result<Self, TraceFileError> {
        let mut raw = text.lines();
        let first = raw.next().filter(|l| !l.trim().is_empty()).ok_or(TraceFileError::Empty)?;
        let header = parse_header(first)?;
        let mut lines: Vec<TraceLine> = Vec::new();
        for (offset, text) in raw.enumerate() {
            let line = parse_line(offset + 2, text)?;
            if lines.last().is_some_and(|l| l.event == "end") {
                return Err(bad(line.number, "an event after the `end` line"));
            }
            lines.push(line);
        }
        if lines.last().is_none_or(|l| l.event != "end") {
            return Err(TraceFileError::Truncated { line: lines.len() + 2 });
        }
        Ok(Self { header, lines })
    }
}

fn bad(line: usize, why: impl Into<String>) -> TraceFileError {
    TraceFileError::BadLine { line, why: why.into() }
}

fn parse_header(text: &str) -> Result<TraceHeader, TraceFileError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| TraceFileError::BadHeader(format!("not JSON: {e}")))?;
    let format = value.get("keel_trace").and_then(serde_json::Value::as_u64);
    match format {
        None => return Err(TraceFileError::BadHeader("no `keel_trace` format field".into())),
        Some(found) if found != TRACE_FORMAT => return Err(TraceFileError::Format { found }),
        Some(_) => {}
    }
    let header: TraceHeader = serde_json::from_value(value).map_err(|e| TraceFileError::BadHeader(e.to_string()))?;
    check_scenario(&header.scenario).map_err(TraceFileError::BadScenario)?;
    Ok(header)
}

/// Refuses a scenario the simulator cannot run, so that replaying an edited header is answered
/// with an error rather than a panic or a run without end: sizes and times within what the
/// simulator was built for, chances at most one in one, and a node configuration keel-core
/// accepts.
fn check_scenario(scenario: &Scenario) -> Result<(), String> {
    let (network, disk) = (&scenario.network, &scenario.disk);
    let ranges = [
        ("node_count", u64::from(scenario.node_count), 1, 7),
        ("client_count", u64::from(scenario.client_count), 1, 64),
        ("key_count", u64::from(scenario.key_count), 1, 10_000),
        ("operation_count", scenario.operation_count, 0, 1_000_000),
        ("tick_interval_ms", scenario.tick_interval_ms, 1, 10_000),
        ("operation_timeout_ms", scenario.operation_timeout_ms, 1, 10_000_000),
        ("liveness_bound_ms", scenario.liveness_bound_ms, 1, 10_000_000),
        ("snapshot_interval_entries", scenario.snapshot_interval_entries, 1, 10_000_000),
        ("network.delay_ms_max", network.delay_ms_max, 0, 100_000),
        ("network.reorder_delay_ms_max", network.reorder_delay_ms_max, 0, 100_000),
        ("network.loss_per_million", network.loss_per_million, 0, 1_000_000),
        ("network.duplicate_per_million", network.duplicate_per_million, 0, 1_000_000),
        ("network.reorder_per_million", network.reorder_per_million, 0, 1_000_000),
        ("disk.sync_delay_ms_max", disk.sync_delay_ms_max, 0, 100_000),
        ("disk.slow_sync_delay_ms", disk.slow_sync_delay_ms, 0, 100_000),
        ("disk.slow_sync_per_million", disk.slow_sync_per_million, 0, 1_000_000),
        ("disk.torn_write_per_million", disk.torn_write_per_million, 0, 1_000_000),
        ("clock.offset_ms_max", scenario.clock.offset_ms_max, 0, 10_000_000),
        ("clock.drift_ppm_max", scenario.clock.drift_ppm_max, 0, 500_000),
    ];
    if let Some((name, value, low, high)) = ranges.iter().find(|(_, value, low, high)| !(low..=high).contains(&value)) {
        return Err(format!("scenario.{name} is {value}, outside {low}..={high}"));
    }
    node_config(scenario, 1).validate().map_err(|error| format!("its node configuration: {error}"))
}

fn parse_line(number: usize, text: &str) -> Result<TraceLine, TraceFileError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(number, format!("not JSON: {e}")))?;
    let time_ms = value.get("t").and_then(serde_json::Value::as_u64).ok_or_else(|| bad(number, "no time `t`"))?;
    let event = value
        .get("event")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad(number, "no `event` name"))?
        .to_string();
    Ok(TraceLine { number, time_ms, event, value, text: text.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> String {
        TraceHeader::new(&Scenario::from_seed(9)).line()
    }

    #[test]
    fn a_header_round_trips_the_whole_scenario() {
        let mut scenario = Scenario::standard(4);
        scenario.operation_count = 17;
        let file =
            TraceFile::parse(&format!("{}\n{{\"t\":3,\"event\":\"end\"}}\n", TraceHeader::new(&scenario).line()))
                .expect("a valid trace");
        assert_eq!(file.header.scenario, scenario);
        assert_eq!(file.lines.len(), 1);
    }

    #[test]
    fn malformed_files_name_the_line() {
        assert_eq!(TraceFile::parse("").unwrap_err(), TraceFileError::Empty);
        assert!(matches!(TraceFile::parse("{}").unwrap_err(), TraceFileError::BadHeader(_)));
        let other_format = header().replace("\"keel_trace\":1", "\"keel_trace\":99");
        assert_eq!(TraceFile::parse(&other_format).unwrap_err(), TraceFileError::Format { found: 99 });
        let text = format!("{}\n{{\"t\":1,\"event\":\"tick\"}}\n{{\"t\":2,\"event\n", header());
        let error = TraceFile::parse(&text).unwrap_err();
        assert!(matches!(error, TraceFileError::BadLine { line: 3, .. }), "{error}");
        let text = format!("{}\n{{\"t\":1,\"event\":\"tick\"}}\n", header());
        assert_eq!(TraceFile::parse(&text).unwrap_err(), TraceFileError::Truncated { line: 3 });
    }

    #[test]
    fn a_scenario_the_simulator_cannot_run_is_refused() {
        let end = "\n{\"t\":3,\"event\":\"end\"}\n";
        let mut scenario = Scenario::from_seed(2);
        scenario.key_count = 0;
        let error = TraceFile::parse(&(TraceHeader::new(&scenario).line() + end)).unwrap_err();
        assert_eq!(error.to_string(), "line 1: the scenario cannot be run: scenario.key_count is 0, outside 1..=10000");
        let mut scenario = Scenario::from_seed(2);
        scenario.heartbeat_interval_ms = 10 * scenario.election_timeout_ms_min;
        let error = TraceFile::parse(&(TraceHeader::new(&scenario).line() + end)).unwrap_err();
        assert!(matches!(&error, TraceFileError::BadScenario(why) if why.contains("node configuration")), "{error}");
    }
}
