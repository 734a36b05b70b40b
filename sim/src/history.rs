//! Client-visible histories: what the linearizability checker reads and what the simulators write.
//!
//! A history is a time-ordered list of [`HistoryEvent`]s. Each operation of a client process
//! appears as an `Invoke` followed (later, possibly never) by exactly one completion: `Ok`, `Fail`
//! or `Info` (outcome unknown: the operation may or may not have taken effect, and stays pending
//! to the end of the history). A process has at most one operation pending at a time.
//!
//! The model is a map from string keys to string values (absent = `None`), with three functions:
//! - `Read`: the completion's value is the value read (`None` for an absent key);
//! - `Write`: sets the key to the value; `None` deletes the key;
//! - `Cas { expected, new }`: sets the key to `new` if its value equals `expected` (`None` =
//!   the key must be absent). A `Fail` completion of a CAS means it was evaluated and found a
//!   different value; a `Fail` completion of a read or write means it did not happen.
//!
//! The JSON-lines form (one object a line, see `keel-sim check`) is
//! `{"process": 3, "type": "invoke", "f": "write", "key": "x", "value": "5", "time": 1200}`;
//! a CAS carries `["expected", "new"]` as its value, and `time` (nanoseconds) is optional.

/// Identifies one client process: operations of one process never overlap.
pub type ProcessId = u64;

/// Whether an event starts an operation or completes it, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// The operation was sent.
    Invoke,
    /// It completed and took effect (for a CAS: it was evaluated; see [`Function::Cas`]).
    Ok,
    /// It definitely did not take effect (a CAS: evaluated, expected value did not match).
    Fail,
    /// Outcome unknown (timeout, lost connection): may or may not have taken effect.
    Info,
}

/// The operation a client performed, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Function {
    /// Read one key.
    Read,
    /// Set one key; `None` deletes it.
    Write(Option<String>),
    /// Compare-and-swap: set to `new` if the current value equals `expected` (`None` = absent).
    Cas {
        /// The value the key must have (`None`: the key must not exist).
        expected: Option<String>,
        /// The value it gets when the comparison holds.
        new: String,
    },
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEvent {
    /// The client process; its operations never overlap.
    pub process: ProcessId,
    /// Invocation or kind of completion.
    pub event_type: EventType,
    /// The operation, repeated on its completion (arguments as invoked).
    pub function: Function,
    /// The key it touches.
    pub key: String,
    /// On a read's `Ok`: the value read (`None` = absent). Otherwise `None`.
    pub read_value: Option<String>,
    /// When it happened, in nanoseconds, if known; histories are in time order regardless.
    pub time_ns: Option<u64>,
}

/// A whole history, in the order the events happened.
pub type History = Vec<HistoryEvent>;
