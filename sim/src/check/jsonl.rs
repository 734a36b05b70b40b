//! The JSON-lines form of a history: one object a line, in time order.
//!
//! ```text
//! {"process": 3, "type": "invoke", "f": "write", "key": "x", "value": "5", "time": 1200}
//! {"process": 3, "type": "ok", "f": "write", "key": "x", "value": "5", "time": 1900}
//! {"process": 1, "type": "invoke", "f": "cas", "key": "x", "value": ["5", "6"]}
//! {"process": 2, "type": "ok", "f": "read", "key": "x", "value": null}
//! ```
//!
//! `type` is invoke, ok, fail or info; `f` is read, write or cas; `value` is a string or null (a
//! write of null deletes; a read's ok carries the value read, null for an absent key; a read's
//! invocation carries none), and a cas carries `[expected, new]` (expected null: the key must be
//! absent). `time` (integer nanoseconds) is optional; other fields are ignored. Blank lines are
//! skipped. Errors carry the 1-based line number.

use serde_json::{Map, Value};

use super::pairing::pair_events;
use super::HistoryError;
use crate::history::{EventType, Function, History, HistoryEvent};

/// Parses a JSON-lines history and checks that it is well formed (every completion matches a
/// pending invocation of its process), so that a bad file is refused with its line number.
pub fn parse_jsonl(text: &str) -> Result<History, HistoryError> {
    parse_jsonl_with_line_numbers(text).map(|(history, _)| history)
}

/// Like [`parse_jsonl`], also returning the file line of each event (blank lines are skipped), so
/// that later messages (a counterexample's explanation) can name file lines.
pub fn parse_jsonl_with_line_numbers(text: &str) -> Result<(History, Vec<usize>), HistoryError> {
    let mut history = Vec::new();
    let mut line_numbers = Vec::new();
    for (offset, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = parse_line(line).map_err(|message| HistoryError { line: Some(offset + 1), message })?;
        history.push(event);
        line_numbers.push(offset + 1);
    }
    pair_events(&history, &|index| line_numbers[index])?;
    Ok((history, line_numbers))
}

/// One event from one line, or what is wrong with it.
fn parse_line(line: &str) -> Result<HistoryEvent, String> {
    let value: Value = serde_json::from_str(line).map_err(|error| format!("invalid JSON: {error}"))?;
    let Value::Object(object) = value else {
        return Err("expected a JSON object".to_owned());
    };
    let process = unsigned(&object, "process")?.ok_or("missing field \"process\"")?;
    let event_type = match required_string(&object, "type")? {
        "invoke" => EventType::Invoke,
        "ok" => EventType::Ok,
        "fail" => EventType::Fail,
        "info" => EventType::Info,
        other => return Err(format!("unknown type {other:?} (expected invoke, ok, fail or info)")),
    };
    let key = required_string(&object, "key")?.to_owned();
    let value = object.get("value").unwrap_or(&Value::Null);
    let (function, read_value) = match required_string(&object, "f")? {
        "read" => (Function::Read, read_value(event_type, value)?),
        "write" => (Function::Write(optional_string(value, "a write's value")?), None),
        "cas" => (cas(value)?, None),
        other => return Err(format!("unknown f {other:?} (expected read, write or cas)")),
    };
    let time_ns = unsigned(&object, "time")?;
    Ok(HistoryEvent { process, event_type, function, key, read_value, time_ns })
}

/// A read's value: the value read on `ok`, nothing on the other events.
fn read_value(event_type: EventType, value: &Value) -> Result<Option<String>, String> {
    match event_type {
        EventType::Ok => optional_string(value, "a read's value"),
        _ if value.is_null() => Ok(None),
        EventType::Invoke => Err("a read invocation carries a value (it must be null or absent)".to_owned()),
        _ => Err("only a read's ok carries a value read".to_owned()),
    }
}

/// A cas's `[expected, new]`.
fn cas(value: &Value) -> Result<Function, String> {
    let Some([expected, new]) = value.as_array().map(Vec::as_slice) else {
        return Err(format!("a cas's value must be a 2-element array [expected, new], not {value}"));
    };
    let expected = optional_string(expected, "a cas's expected value")?;
    let Value::String(new) = new else {
        return Err(format!("a cas's new value must be a string, not {new}"));
    };
    Ok(Function::Cas { expected, new: new.clone() })
}

fn optional_string(value: &Value, what: &str) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        other => Err(format!("{what} must be a string or null, not {other}")),
    }
}

fn required_string<'object>(object: &'object Map<String, Value>, field: &str) -> Result<&'object str, String> {
    match object.get(field) {
        None => Err(format!("missing field {field:?}")),
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(format!("field {field:?} must be a string, not {other}")),
    }
}

/// An optional non-negative integer field (`null` counts as absent).
fn unsigned(object: &Map<String, Value>, field: &str) -> Result<Option<u64>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("field {field:?} must be a non-negative integer, not {value}")),
    }
}

/// The JSON-lines form of a history, one line per event, each ending in a newline.
pub fn write_jsonl(history: &[HistoryEvent]) -> String {
    history.iter().map(|event| event_to_json_line(event) + "\n").collect()
}

/// One event as one line of JSON (no newline), with the fields in the documented order.
pub fn event_to_json_line(event: &HistoryEvent) -> String {
    let (event_type, function) = (type_name(event.event_type), function_name(&event.function));
    let value = match &event.function {
        Function::Read => string_or_null(event.read_value.as_deref()).to_string(),
        Function::Write(value) => string_or_null(value.as_deref()).to_string(),
        Function::Cas { expected, new } => {
            format!("[{}, {}]", string_or_null(expected.as_deref()), Value::from(new.as_str()))
        }
    };
    let mut line = format!(
        "{{\"process\": {}, \"type\": \"{event_type}\", \"f\": \"{function}\", \"key\": {}, \"value\": {value}",
        event.process,
        Value::from(event.key.as_str())
    );
    if let Some(time_ns) = event.time_ns {
        line.push_str(&format!(", \"time\": {time_ns}"));
    }
    line.push('}');
    line
}

fn string_or_null(value: Option<&str>) -> Value {
    value.map_or(Value::Null, Value::from)
}

/// The JSON name of an event type (also used in explanations).
pub(crate) fn type_name(event_type: EventType) -> &'static str {
    match event_type {
        EventType::Invoke => "invoke",
        EventType::Ok => "ok",
        EventType::Fail => "fail",
        EventType::Info => "info",
    }
}

fn function_name(function: &Function) -> &'static str {
    match function {
        Function::Read => "read",
        Function::Write(_) => "write",
        Function::Cas { .. } => "cas",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> HistoryError {
        match parse_jsonl(text) {
            Ok(history) => panic!("accepted {history:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn parses_every_function_and_outcome() {
        let text = r#"{"process": 3, "type": "invoke", "f": "write", "key": "x", "value": "5", "time": 1200}

{"process": 1, "type": "invoke", "f": "cas", "key": "x", "value": [null, "6"], "index": 7}
{"process": 3, "type": "ok", "f": "write", "key": "x", "value": "5", "time": 1900}
{"process": 1, "type": "fail", "f": "cas", "key": "x", "value": [null, "6"]}
{"process": 2, "type": "invoke", "f": "read", "key": "x", "value": null}
{"process": 2, "type": "ok", "f": "read", "key": "x", "value": "5"}
{"process": 4, "type": "invoke", "f": "write", "key": "y", "value": null}
{"process": 4, "type": "info", "f": "write", "key": "y"}
"#;
        let (history, lines) = parse_jsonl_with_line_numbers(text).unwrap();
        assert_eq!(history.len(), 8);
        assert_eq!(lines[..3], [1, 3, 4]);
        assert_eq!(history[0].time_ns, Some(1200));
        assert_eq!(history[1].function, Function::Cas { expected: None, new: "6".to_owned() });
        assert_eq!(history[3].event_type, EventType::Fail);
        assert_eq!(history[5].read_value.as_deref(), Some("5"));
        assert_eq!(history[6].function, Function::Write(None));
        assert_eq!(history[7].event_type, EventType::Info);
    }

    #[test]
    fn writing_and_parsing_round_trip() {
        let text = concat!(
            r#"{"process": 1, "type": "invoke", "f": "cas", "key": "k \"q\"", "value": [null, "6"], "time": 5}"#,
            "\n",
            r#"{"process": 1, "type": "ok", "f": "cas", "key": "k \"q\"", "value": [null, "6"]}"#,
            "\n",
            r#"{"process": 2, "type": "invoke", "f": "read", "key": "x", "value": null}"#,
            "\n",
            r#"{"process": 2, "type": "ok", "f": "read", "key": "x", "value": "é"}"#,
            "\n",
        );
        let history = parse_jsonl(text).unwrap();
        assert_eq!(write_jsonl(&history), text);
    }

    #[test]
    fn each_malformed_line_is_named_with_its_number_and_its_fault() {
        let read = r#"{"process": 1, "type": "invoke", "f": "read", "key": "x"}"#;
        let cases = [
            (r#"{"process": 1, "type": "begin", "f": "read", "key": "x"}"#, "unknown type \"begin\""),
            (r#"{"process": 1, "type": "invoke", "f": "append", "key": "x"}"#, "unknown f \"append\""),
            (r#"{"type": "invoke", "f": "read", "key": "x"}"#, "missing field \"process\""),
            (r#"{"process": 1, "type": "invoke", "f": "read"}"#, "missing field \"key\""),
            (r#"{"process": -1, "type": "invoke", "f": "read", "key": "x"}"#, "non-negative integer"),
            (r#"{"process": 1, "type": "invoke", "f": "cas", "key": "x", "value": "5"}"#, "2-element array"),
            (r#"{"process": 1, "type": "invoke", "f": "cas", "key": "x", "value": ["5", null]}"#, "new value"),
            (r#"{"process": 1, "type": "invoke", "f": "read", "key": "x", "value": "5"}"#, "read invocation carries"),
            (r#"{"process": 1, "type": "invoke", "f": "write", "key": "x", "value": 5}"#, "string or null"),
            (r#"{"process": 1, "type": "invoke", "f": "read", "key": "x", "time": "now"}"#, "\"time\""),
            (r#"{"process": 2, "type": "ok", "f": "read", "key": "x"}"#, "completion without invocation"),
            (read, "invoked on line 2 is still pending"),
            ("{\"process\": 1,", "invalid JSON"),
            ("[1, 2]", "expected a JSON object"),
        ];
        for (line, fault) in cases {
            let error = error_of(&format!("\n{read}\n{line}\n"));
            assert_eq!(error.line, Some(3), "{line}: {error}");
            assert!(error.message.contains(fault), "{line}: {error}");
            assert!(error.to_string().starts_with("line 3: "), "{error}");
        }
    }
}
