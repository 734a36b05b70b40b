//! Well-formedness of a history: each completion is matched with its process's pending invocation.
//!
//! Both entry points (`check_history` on events and `parse_jsonl` on text) run this, so a history
//! is refused for the same reasons, with the 1-based position (event number or file line) of the
//! offending event.

use std::collections::BTreeMap;

use super::HistoryError;
use crate::history::{EventType, Function, HistoryEvent, ProcessId};

/// One operation of the history: the position of its invocation and of its completion, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PairedOperation {
    /// Index of the `Invoke` event.
    pub(crate) invoke: usize,
    /// Index of the `Ok`, `Fail` or `Info` event; `None` when the history ends first.
    pub(crate) completion: Option<usize>,
}

/// Pairs every completion with its invocation, in invocation order, or says why the history is
/// malformed. `line_of(index)` is the 1-based position reported for the event at `index`.
pub(crate) fn pair_events(
    events: &[HistoryEvent],
    line_of: &dyn Fn(usize) -> usize,
) -> Result<Vec<PairedOperation>, HistoryError> {
    let mut operations: Vec<PairedOperation> = Vec::new();
    // For each process, the index in `operations` of its pending (not yet completed) operation.
    let mut pending: BTreeMap<ProcessId, usize> = BTreeMap::new();
    let mut last_time_ns: Option<u64> = None;
    for (index, event) in events.iter().enumerate() {
        let fail = |message: String| HistoryError { line: Some(line_of(index)), message };
        check_read_value(event).map_err(&fail)?;
        if let (Some(previous), Some(now)) = (last_time_ns, event.time_ns) {
            if now < previous {
                return Err(fail(format!("time goes backwards: {now} ns after {previous} ns")));
            }
        }
        last_time_ns = event.time_ns.or(last_time_ns);
        if event.event_type == EventType::Invoke {
            if let Some(&open) = pending.get(&event.process) {
                return Err(fail(format!(
                    "process {} invokes a second operation while its operation invoked on line {} is still pending",
                    event.process,
                    line_of(operations[open].invoke)
                )));
            }
            pending.insert(event.process, operations.len());
            operations.push(PairedOperation { invoke: index, completion: None });
            continue;
        }
        let Some(open) = pending.remove(&event.process) else {
            return Err(fail(format!(
                "completion without invocation: process {} has no pending operation",
                event.process
            )));
        };
        let invocation = &events[operations[open].invoke];
        check_same_operation(invocation, event, line_of(operations[open].invoke)).map_err(&fail)?;
        operations[open].completion = Some(index);
    }
    Ok(operations)
}

/// Only a read's `Ok` carries a value read.
fn check_read_value(event: &HistoryEvent) -> Result<(), String> {
    if event.read_value.is_none() {
        return Ok(());
    }
    match (&event.function, event.event_type) {
        (Function::Read, EventType::Ok) => Ok(()),
        (Function::Read, EventType::Invoke) => Err("a read invocation carries a value".to_owned()),
        (Function::Read, _) => Err("only a read's ok carries a value read".to_owned()),
        _ => Err("a value read on an operation that is not a read".to_owned()),
    }
}

/// A completion repeats its invocation's function, arguments and key.
fn check_same_operation(
    invocation: &HistoryEvent,
    completion: &HistoryEvent,
    invoke_line: usize,
) -> Result<(), String> {
    if invocation.key != completion.key {
        return Err(format!(
            "completion on key {:?} but its invocation on line {invoke_line} is on key {:?}",
            completion.key, invocation.key
        ));
    }
    if invocation.function != completion.function {
        return Err(format!(
            "completion is {} but its invocation on line {invoke_line} is {}",
            describe(&completion.function),
            describe(&invocation.function)
        ));
    }
    Ok(())
}

/// A short human description of a function and its arguments, for error messages.
pub(crate) fn describe(function: &Function) -> String {
    match function {
        Function::Read => "a read".to_owned(),
        Function::Write(Some(value)) => format!("a write of {value:?}"),
        Function::Write(None) => "a delete".to_owned(),
        Function::Cas { expected, new } => format!("a cas from {expected:?} to {new:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(process: ProcessId, event_type: EventType, function: Function) -> HistoryEvent {
        HistoryEvent { process, event_type, function, key: "x".to_owned(), read_value: None, time_ns: None }
    }

    fn pair(events: &[HistoryEvent]) -> Result<Vec<PairedOperation>, HistoryError> {
        pair_events(events, &|index| index + 1)
    }

    #[test]
    fn pairs_interleaved_operations_and_leaves_unfinished_ones_pending() {
        let write = Function::Write(Some("1".to_owned()));
        let events = vec![
            event(1, EventType::Invoke, write.clone()),
            event(2, EventType::Invoke, Function::Read),
            event(1, EventType::Ok, write),
        ];
        let operations = pair(&events).unwrap();
        assert_eq!(
            operations,
            vec![PairedOperation { invoke: 0, completion: Some(2) }, PairedOperation { invoke: 1, completion: None }]
        );
    }

    #[test]
    fn a_process_may_invoke_again_after_an_info() {
        let events = vec![
            event(1, EventType::Invoke, Function::Read),
            event(1, EventType::Info, Function::Read),
            event(1, EventType::Invoke, Function::Read),
        ];
        assert_eq!(pair(&events).unwrap().len(), 2);
    }

    #[test]
    fn refuses_a_completion_without_invocation_with_its_line() {
        let events = vec![event(1, EventType::Invoke, Function::Read), event(2, EventType::Ok, Function::Read)];
        let error = pair(&events).unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(error.message.contains("without invocation"), "{error}");
    }

    #[test]
    fn refuses_two_pending_operations_on_one_process() {
        let events = vec![event(1, EventType::Invoke, Function::Read), event(1, EventType::Invoke, Function::Read)];
        let error = pair(&events).unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(error.message.contains("still pending"), "{error}");
    }

    #[test]
    fn refuses_a_completion_of_another_function_or_key() {
        let mut events =
            vec![event(1, EventType::Invoke, Function::Read), event(1, EventType::Ok, Function::Write(None))];
        assert!(pair(&events).unwrap_err().message.contains("a delete but its invocation on line 1 is a read"));
        events[1] = event(1, EventType::Ok, Function::Read);
        events[1].key = "y".to_owned();
        assert!(pair(&events).unwrap_err().message.contains("on key \"y\""));
    }

    #[test]
    fn refuses_a_value_read_outside_a_read_ok() {
        let mut invoke = event(1, EventType::Invoke, Function::Read);
        invoke.read_value = Some("1".to_owned());
        let error = pair(&[invoke]).unwrap_err();
        assert!(error.message.contains("read invocation carries a value"), "{error}");
    }

    #[test]
    fn refuses_time_going_backwards() {
        let mut first = event(1, EventType::Invoke, Function::Read);
        first.time_ns = Some(10);
        let mut second = event(1, EventType::Ok, Function::Read);
        second.time_ns = Some(5);
        let error = pair(&[first, second]).unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(error.message.contains("backwards"), "{error}");
    }
}
