//! Splitting a history by key, and turning one key's operations into the search's input.
//!
//! Every operation touches exactly one key and the keys of the model are independent registers,
//! so a history is linearizable exactly when each key's sub-history is (linearizability is
//! local). Checking keys one at a time keeps each search, and its cache, small.

use std::collections::BTreeMap;

use super::model::{contribution, ValueTable};
use super::pairing::PairedOperation;
use super::search::SearchOperation;
use crate::history::HistoryEvent;

/// The operations of each key, in invocation order; keys in lexicographic order so that the first
/// failing key reported is always the same one.
pub(crate) fn split_by_key<'history>(
    events: &'history [HistoryEvent],
    operations: &[PairedOperation],
) -> BTreeMap<&'history str, Vec<PairedOperation>> {
    let mut keys: BTreeMap<&str, Vec<PairedOperation>> = BTreeMap::new();
    for operation in operations {
        keys.entry(events[operation.invoke].key.as_str()).or_default().push(*operation);
    }
    keys
}

/// The search input for `operations` (all on one key), leaving out those that cannot affect any
/// other (failed reads and writes, reads of unknown outcome). Values are interned afresh, so the
/// ids are dense for this key.
pub(crate) fn search_operations(events: &[HistoryEvent], operations: &[PairedOperation]) -> Vec<SearchOperation> {
    let mut values = ValueTable::default();
    operations
        .iter()
        .filter_map(|operation| {
            let completion = operation.completion.map(|index| &events[index]);
            let contribution = contribution(&events[operation.invoke], completion, &mut values)?;
            let returned_at = if contribution.returned { operation.completion } else { None };
            Some(SearchOperation { contribution, invoke: operation.invoke, returned_at })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, Function};

    fn event(process: u64, event_type: EventType, key: &str) -> HistoryEvent {
        let function = Function::Write(Some("1".to_owned()));
        HistoryEvent { process, event_type, function, key: key.to_owned(), read_value: None, time_ns: None }
    }

    #[test]
    fn groups_operations_by_key_in_key_order() {
        let events = vec![event(1, EventType::Invoke, "y"), event(2, EventType::Invoke, "x")];
        let operations =
            [PairedOperation { invoke: 0, completion: None }, PairedOperation { invoke: 1, completion: None }];
        let keys = split_by_key(&events, &operations);
        assert_eq!(keys.keys().copied().collect::<Vec<_>>(), vec!["x", "y"]);
        assert_eq!(keys["x"], vec![operations[1]]);
    }

    #[test]
    fn failed_writes_are_left_out_and_unknown_ones_never_return() {
        let events = vec![
            event(1, EventType::Invoke, "x"),
            event(2, EventType::Invoke, "x"),
            event(1, EventType::Fail, "x"),
            event(2, EventType::Info, "x"),
        ];
        let operations =
            [PairedOperation { invoke: 0, completion: Some(2) }, PairedOperation { invoke: 1, completion: Some(3) }];
        let input = search_operations(&events, &operations);
        assert_eq!(input.len(), 1);
        assert_eq!(input[0].invoke, 1);
        assert_eq!(input[0].returned_at, None);
    }
}
