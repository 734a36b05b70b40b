//! The sequential specification of one key of the KV map, on interned values.
//!
//! The search runs on one key at a time (see `partition`), so the model is a single register whose
//! state is the key's current value. Values are interned to small integers per key
//! ([`ValueTable`]) so that a state is a `u32`, cheap to hash, copy and compare; id 0 is the
//! absent key.

use std::collections::BTreeMap;

use crate::history::{EventType, Function, HistoryEvent};

/// An interned value of one key: [`ABSENT`] or an index into the key's [`ValueTable`].
pub(crate) type ValueId = u32;

/// The value id of an absent key (never written, or deleted).
pub(crate) const ABSENT: ValueId = 0;

/// Maps the string values seen on one key to dense ids, so that states are plain integers.
#[derive(Debug, Default)]
pub(crate) struct ValueTable {
    ids: BTreeMap<String, ValueId>,
}

impl ValueTable {
    /// The id of `value`, allocating a new one for a value not seen before (`None` is [`ABSENT`]).
    pub(crate) fn intern(&mut self, value: Option<&str>) -> ValueId {
        let Some(text) = value else { return ABSENT };
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        // Ids start at 1; a key has fewer distinct values than events, which the caller bounds.
        let id = ValueId::try_from(self.ids.len() + 1).unwrap_or(ValueId::MAX);
        self.ids.insert(text.to_owned(), id);
        id
    }
}

/// One operation as the model sees it: the function, its arguments and what it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    /// A read that returned `value`: legal only when the key holds `value`.
    Read {
        /// The value the read returned.
        value: ValueId,
    },
    /// A write (or delete, when `value` is [`ABSENT`]), acknowledged or of unknown outcome.
    Write {
        /// The value written.
        value: ValueId,
    },
    /// A CAS that succeeded: legal only when the key holds `expected`; it then holds `new`.
    CasSucceeded {
        /// The value the key had to hold.
        expected: ValueId,
        /// The value it holds afterwards.
        new: ValueId,
    },
    /// A CAS that was evaluated and failed: legal only when the key does not hold `expected`.
    CasFailed {
        /// The value the key did not hold.
        expected: ValueId,
    },
    /// A CAS of unknown outcome, linearized here: it swaps if the key holds `expected`.
    CasUnknown {
        /// The value the key had to hold for the swap.
        expected: ValueId,
        /// The value the key holds afterwards if it did.
        new: ValueId,
    },
}

impl Step {
    /// The key's value after this step runs on `state`, or `None` when the step is impossible
    /// there (its recorded result contradicts the state).
    pub(crate) fn apply(self, state: ValueId) -> Option<ValueId> {
        match self {
            Step::Read { value } => (state == value).then_some(state),
            Step::Write { value } => Some(value),
            Step::CasSucceeded { expected, new } => (state == expected).then_some(new),
            Step::CasFailed { expected } => (state != expected).then_some(state),
            Step::CasUnknown { expected, new } => Some(if state == expected { new } else { state }),
        }
    }
}

/// What an operation contributes to the search, given how it completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Contribution {
    /// The model step it takes when linearized.
    pub(crate) step: Step,
    /// Whether it returned (`ok`, or a CAS's `fail`): it must then be linearized before its
    /// completion. Otherwise (`info`, or no completion) it stays pending to the end and may take
    /// effect at any point after its invocation, or never.
    pub(crate) returned: bool,
}

/// The contribution of the operation invoked by `invocation` and completed by `completion`
/// (`None`: never completed), or `None` when it cannot affect any other operation: a read or write
/// that failed (did not happen) and a read whose result is unknown.
pub(crate) fn contribution(
    invocation: &HistoryEvent,
    completion: Option<&HistoryEvent>,
    values: &mut ValueTable,
) -> Option<Contribution> {
    let outcome = completion.map_or(EventType::Info, |event| event.event_type);
    let returned = matches!(outcome, EventType::Ok | EventType::Fail);
    let step = match (&invocation.function, outcome) {
        (Function::Read, EventType::Ok) => {
            let read = completion.and_then(|event| event.read_value.as_deref());
            Step::Read { value: values.intern(read) }
        }
        (Function::Read, _) | (Function::Write(_), EventType::Fail) => return None,
        (Function::Write(value), _) => Step::Write { value: values.intern(value.as_deref()) },
        (Function::Cas { expected, new }, outcome) => {
            let expected = values.intern(expected.as_deref());
            let new = values.intern(Some(new));
            match outcome {
                EventType::Ok => Step::CasSucceeded { expected, new },
                EventType::Fail => Step::CasFailed { expected },
                EventType::Invoke | EventType::Info => Step::CasUnknown { expected, new },
            }
        }
    };
    Some(Contribution { step, returned })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: EventType, function: Function, read_value: Option<&str>) -> HistoryEvent {
        let read_value = read_value.map(str::to_owned);
        HistoryEvent { process: 1, event_type, function, key: "x".to_owned(), read_value, time_ns: None }
    }

    #[test]
    fn failed_reads_and_writes_and_unknown_reads_contribute_nothing() {
        let mut values = ValueTable::default();
        let write = Function::Write(Some("1".to_owned()));
        let invoke_write = event(EventType::Invoke, write.clone(), None);
        let failed_write = event(EventType::Fail, write, None);
        assert_eq!(contribution(&invoke_write, Some(&failed_write), &mut values), None);
        let invoke_read = event(EventType::Invoke, Function::Read, None);
        for outcome in [EventType::Fail, EventType::Info] {
            let completion = event(outcome, Function::Read, None);
            assert_eq!(contribution(&invoke_read, Some(&completion), &mut values), None);
        }
        assert_eq!(contribution(&invoke_read, None, &mut values), None);
    }

    #[test]
    fn outcomes_map_to_steps_that_return_or_stay_pending() {
        let mut values = ValueTable::default();
        let cas = Function::Cas { expected: None, new: "2".to_owned() };
        let invoke = event(EventType::Invoke, cas.clone(), None);
        let two = values.intern(Some("2"));
        let failed = contribution(&invoke, Some(&event(EventType::Fail, cas.clone(), None)), &mut values);
        assert_eq!(failed, Some(Contribution { step: Step::CasFailed { expected: ABSENT }, returned: true }));
        let unknown = contribution(&invoke, Some(&event(EventType::Info, cas, None)), &mut values);
        let step = Step::CasUnknown { expected: ABSENT, new: two };
        assert_eq!(unknown, Some(Contribution { step, returned: false }));
        let read = event(EventType::Invoke, Function::Read, None);
        let absent = contribution(&read, Some(&event(EventType::Ok, Function::Read, None)), &mut values);
        assert_eq!(absent, Some(Contribution { step: Step::Read { value: ABSENT }, returned: true }));
        let pending_write = event(EventType::Invoke, Function::Write(None), None);
        let delete = contribution(&pending_write, None, &mut values);
        assert_eq!(delete, Some(Contribution { step: Step::Write { value: ABSENT }, returned: false }));
    }

    #[test]
    fn interning_gives_absent_zero_and_stable_distinct_ids() {
        let mut table = ValueTable::default();
        assert_eq!(table.intern(None), ABSENT);
        let one = table.intern(Some("1"));
        let two = table.intern(Some("2"));
        assert_ne!(one, ABSENT);
        assert_ne!(one, two);
        assert_eq!(table.intern(Some("1")), one);
    }

    #[test]
    fn read_is_legal_only_on_the_value_it_returned() {
        assert_eq!(Step::Read { value: 3 }.apply(3), Some(3));
        assert_eq!(Step::Read { value: 3 }.apply(4), None);
        assert_eq!(Step::Read { value: ABSENT }.apply(ABSENT), Some(ABSENT));
        assert_eq!(Step::Read { value: ABSENT }.apply(1), None);
    }

    #[test]
    fn write_always_applies_and_absent_deletes() {
        assert_eq!(Step::Write { value: 5 }.apply(ABSENT), Some(5));
        assert_eq!(Step::Write { value: ABSENT }.apply(5), Some(ABSENT));
    }

    #[test]
    fn cas_semantics_for_each_outcome() {
        let succeeded = Step::CasSucceeded { expected: 1, new: 2 };
        assert_eq!(succeeded.apply(1), Some(2));
        assert_eq!(succeeded.apply(3), None);
        let on_absent = Step::CasSucceeded { expected: ABSENT, new: 2 };
        assert_eq!(on_absent.apply(ABSENT), Some(2));
        assert_eq!(on_absent.apply(1), None);
        let failed = Step::CasFailed { expected: 1 };
        assert_eq!(failed.apply(1), None);
        assert_eq!(failed.apply(7), Some(7));
        let unknown = Step::CasUnknown { expected: 1, new: 2 };
        assert_eq!(unknown.apply(1), Some(2));
        assert_eq!(unknown.apply(7), Some(7));
    }
}
