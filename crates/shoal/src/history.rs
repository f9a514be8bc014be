//! Operation histories as JSON lines: written by `shoal bench kv --history`,
//! read by `shoal kv check-history`.
//!
//! One operation per line, one flat JSON object each:
//!
//! ```text
//! {"client": 3, "op": "put", "key": "key17", "value": "...", "output": "ok", "call": 1200, "return": 53400}
//! {"client": 4, "op": "get", "key": "key17", "output": null, "call": 1300, "return": 9100}
//! {"client": 5, "op": "cas", "key": "k", "expected": null, "value": "v", "output": true, "call": 1, "return": 2}
//! ```
//!
//! - `op`: `get`, `put`, `append`, `delete` or `cas`.
//! - `value`: the value sent (put, append; the new value for cas).
//! - `expected`: cas only: the value the key must hold, `null` for absent.
//! - `output`: a get's value (`null`: the key was absent), `"ok"` for put,
//!   append and delete, `true`/`false` for cas (whether it swapped).
//! - `call`, `return`: nanoseconds from one monotonic clock; `return: null`
//!   means the client never learned the outcome (error or timeout), and
//!   `output` is then ignored.
//!
//! Both directions are written by hand: the objects are flat, and the bench's
//! values are plain ASCII, so a JSON library would be more weight than help.
//! The reader still accepts any valid JSON string escapes.

use std::fmt::Write as _;

use shoal_sim::{KvInput, KvOperation, KvOutput, Operation};

/// What a history line records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub client: u64,
    pub input: KvInput,
    /// `None`: outcome unknown.
    pub output: Option<KvOutput>,
    pub call: u64,
    /// `None`: outcome unknown.
    pub ret: Option<u64>,
}

impl Record {
    /// The line for this record (without the newline).
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(96);
        let (op, key, value, expected) = match &self.input {
            KvInput::Get { key } => ("get", key, None, None),
            KvInput::Put { key, value } => ("put", key, Some(value), None),
            KvInput::Append { key, value } => ("append", key, Some(value), None),
            KvInput::Delete { key } => ("delete", key, None, None),
            KvInput::Cas { key, expected, new } => ("cas", key, Some(new), Some(expected)),
        };
        let _ = write!(s, "{{\"client\": {}, \"op\": \"{op}\", \"key\": ", self.client);
        push_str(&mut s, key);
        if let Some(v) = value {
            s.push_str(", \"value\": ");
            push_str(&mut s, v);
        }
        if let Some(e) = expected {
            s.push_str(", \"expected\": ");
            push_opt(&mut s, e.as_deref());
        }
        s.push_str(", \"output\": ");
        match (&self.ret, &self.output) {
            (Some(_), Some(KvOutput::Value(v))) => push_opt(&mut s, v.as_deref()),
            (Some(_), Some(KvOutput::Done)) => s.push_str("\"ok\""),
            (Some(_), Some(KvOutput::Swapped(b))) => s.push_str(if *b { "true" } else { "false" }),
            _ => s.push_str("null"),
        }
        let _ = write!(s, ", \"call\": {}, \"return\": ", self.call);
        match (self.ret, &self.output) {
            (Some(r), Some(_)) => {
                let _ = write!(s, "{r}");
            }
            _ => s.push_str("null"),
        }
        s.push('}');
        s
    }

    /// The checker's view of it.
    pub fn into_operation(self) -> KvOperation {
        match (self.output, self.ret) {
            (Some(output), Some(ret)) => Operation::new(self.client, self.input, output, self.call, ret),
            _ => Operation::unknown(self.client, self.input, self.call),
        }
    }
}

fn push_opt(s: &mut String, v: Option<&str>) {
    match v {
        Some(v) => push_str(s, v),
        None => s.push_str("null"),
    }
}

/// Appends `v` as a JSON string literal.
fn push_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// A JSON value as it may appear in a history line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Str(String),
    Num(u64),
    Bool(bool),
    Null,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Num(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
        }
    }
}

/// Parses every non-blank line of `text`; the error names the line.
pub fn parse(text: &str) -> Result<Vec<KvOperation>, String> {
    let mut ops = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_line(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        ops.push(record.into_operation());
    }
    Ok(ops)
}

/// Parses one line into a record.
pub fn parse_line(line: &str) -> Result<Record, String> {
    let fields = parse_object(line)?;
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let num = |name: &str| match get(name) {
        Some(Value::Num(n)) => Ok(*n),
        Some(v) => Err(format!("\"{name}\" must be a non-negative integer, not {}", v.kind())),
        None => Err(format!("missing \"{name}\"")),
    };
    let string = |name: &str| match get(name) {
        Some(Value::Str(s)) => Ok(s.clone()),
        Some(v) => Err(format!("\"{name}\" must be a string, not {}", v.kind())),
        None => Err(format!("missing \"{name}\"")),
    };
    let client = num("client")?;
    let call = num("call")?;
    let ret = match get("return") {
        Some(Value::Null) => None,
        Some(Value::Num(n)) if *n >= call => Some(*n),
        Some(Value::Num(n)) => return Err(format!("\"return\" {n} is before \"call\" {call}")),
        Some(v) => return Err(format!("\"return\" must be a number or null, not {}", v.kind())),
        None => return Err("missing \"return\" (null if the outcome is unknown)".into()),
    };
    let key = string("key")?;
    let op = string("op")?;
    let input = match op.as_str() {
        "get" => KvInput::Get { key },
        "put" => KvInput::Put { key, value: string("value")? },
        "append" => KvInput::Append { key, value: string("value")? },
        "delete" => KvInput::Delete { key },
        "cas" => {
            let expected = match get("expected") {
                Some(Value::Str(s)) => Some(s.clone()),
                Some(Value::Null) => None,
                Some(v) => return Err(format!("\"expected\" must be a string or null, not {}", v.kind())),
                None => return Err("cas needs \"expected\" (null: the key must be absent)".into()),
            };
            KvInput::Cas { key, expected, new: string("value")? }
        }
        other => return Err(format!("unknown \"op\" {other:?} (get, put, append, delete or cas)")),
    };
    // With the outcome unknown, whatever "output" says is ignored.
    let output = match ret {
        Some(_) => Some(parse_output(&input, get("output").unwrap_or(&Value::Null))?),
        None => None,
    };
    Ok(Record { client, input, output, call, ret })
}

fn parse_output(input: &KvInput, output: &Value) -> Result<KvOutput, String> {
    match (input, output) {
        (KvInput::Get { .. }, Value::Str(s)) => Ok(KvOutput::Value(Some(s.clone()))),
        (KvInput::Get { .. }, Value::Null) => Ok(KvOutput::Value(None)),
        (KvInput::Get { .. }, v) => {
            Err(format!("get's \"output\" must be a string or null, not {}", v.kind()))
        }
        (KvInput::Cas { .. }, Value::Bool(b)) => Ok(KvOutput::Swapped(*b)),
        (KvInput::Cas { .. }, v) => {
            Err(format!("cas's \"output\" must be true or false, not {}", describe(v)))
        }
        (_, Value::Null) => Ok(KvOutput::Done),
        (_, Value::Str(s)) if s == "ok" => Ok(KvOutput::Done),
        (_, v) => Err(format!("a write's \"output\" must be \"ok\", not {}", describe(v))),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        other => other.kind().to_string(),
    }
}

/// A flat JSON object: string keys; string, non-negative integer, boolean
/// or null values.
fn parse_object(line: &str) -> Result<Vec<(String, Value)>, String> {
    let mut p = Parser { s: line.as_bytes(), at: 0 };
    p.ws();
    p.expect(b'{')?;
    let mut fields: Vec<(String, Value)> = Vec::new();
    p.ws();
    if p.peek() == Some(b'}') {
        p.at += 1;
    } else {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let value = p.value()?;
            if fields.iter().any(|(k, _)| *k == key) {
                return Err(format!("field \"{key}\" appears twice"));
            }
            fields.push((key, value));
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(p.error("',' or '}'")),
            }
        }
    }
    p.ws();
    if p.at != p.s.len() {
        return Err(p.error("the end of the line after the object"));
    }
    Ok(fields)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn error(&self, wanted: &str) -> String {
        match self.peek() {
            Some(c) if c.is_ascii_graphic() => {
                format!("expected {wanted} at column {}, found '{}'", self.at + 1, c as char)
            }
            Some(c) => format!("expected {wanted} at column {}, found byte 0x{c:02x}", self.at + 1),
            None => format!("expected {wanted} at column {}, found the end of the line", self.at + 1),
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("'{}'", c as char)))
        }
    }

    fn literal(&mut self, word: &str) -> bool {
        if self.s[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'0'..=b'9') => self.number(),
            Some(b'n') if self.literal("null") => Ok(Value::Null),
            Some(b't') if self.literal("true") => Ok(Value::Bool(true)),
            Some(b'f') if self.literal("false") => Ok(Value::Bool(false)),
            _ => Err(self.error("a string, a non-negative integer, true, false or null")),
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return Err(format!("column {}: only non-negative integers are accepted", start + 1));
        }
        // Only ASCII digits were consumed.
        let digits = std::str::from_utf8(&self.s[start..self.at]).unwrap_or_default();
        digits
            .parse::<u64>()
            .map(Value::Num)
            .map_err(|_| format!("column {}: {digits} does not fit in 64 bits", start + 1))
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.next() {
                None => return Err("unterminated string".into()),
                Some(b'"') => break,
                Some(b'\\') => match self.next() {
                    Some(b'"') => out.push(b'"'),
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'/') => out.push(b'/'),
                    Some(b'b') => out.push(8),
                    Some(b'f') => out.push(12),
                    Some(b'n') => out.push(b'\n'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'u') => {
                        let c = self.unicode_escape()?;
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    _ => return Err(format!("bad escape in a string at column {}", self.at)),
                },
                Some(c) if c < 0x20 => {
                    return Err(format!("control character in a string at column {}", self.at))
                }
                Some(c) => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| "a string is not valid UTF-8".to_string())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.s.get(self.at..self.at + 4).ok_or("truncated \\u escape")?;
        let text = std::str::from_utf8(digits).map_err(|_| "bad \\u escape")?;
        let v = u32::from_str_radix(text, 16).map_err(|_| format!("bad \\u escape \\u{text}"))?;
        self.at += 4;
        Ok(v)
    }

    fn unicode_escape(&mut self) -> Result<char, String> {
        let hi = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&hi) {
            if !self.literal("\\u") {
                return Err("unpaired surrogate in a \\u escape".into());
            }
            let lo = self.hex4()?;
            if !(0xdc00..0xe000).contains(&lo) {
                return Err("unpaired surrogate in a \\u escape".into());
            }
            0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| format!("\\u escape {code:#x} is not a character"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn round_trips_every_kind() {
        let records = vec![
            Record {
                client: 1,
                input: KvInput::Put { key: s("k\"1"), value: s("a\\b\n") },
                output: Some(KvOutput::Done),
                call: 5,
                ret: Some(9),
            },
            Record {
                client: 2,
                input: KvInput::Get { key: s("k") },
                output: Some(KvOutput::Value(None)),
                call: 6,
                ret: Some(7),
            },
            Record {
                client: 2,
                input: KvInput::Get { key: s("k") },
                output: Some(KvOutput::Value(Some(s("x")))),
                call: 8,
                ret: Some(10),
            },
            Record {
                client: 3,
                input: KvInput::Cas { key: s("k"), expected: None, new: s("n") },
                output: Some(KvOutput::Swapped(true)),
                call: 1,
                ret: Some(2),
            },
            Record {
                client: 3,
                input: KvInput::Cas { key: s("k"), expected: Some(s("e")), new: s("n") },
                output: Some(KvOutput::Swapped(false)),
                call: 3,
                ret: Some(4),
            },
            Record {
                client: 4,
                input: KvInput::Append { key: s("k"), value: s("z") },
                output: None,
                call: 3,
                ret: None,
            },
            Record {
                client: 4,
                input: KvInput::Delete { key: s("k") },
                output: Some(KvOutput::Done),
                call: 30,
                ret: Some(40),
            },
        ];
        for r in records {
            let line = r.to_json();
            assert_eq!(parse_line(&line).unwrap(), r, "{line}");
        }
    }

    #[test]
    fn reads_the_documented_format() {
        let text = r#"
{"client": 3, "op": "put", "key": "key17", "value": "v1", "output": "ok", "call": 1200, "return": 53400}
{"client":4,"op":"get","key":"key17","output":"v1","call":60000,"return":61000}
{"client": 5, "op": "get", "key": "key17", "output": null, "call": 1, "return": null}
{"client": 6, "op": "cas", "key": "k", "expected": null, "value": "v", "output": true, "call": 1, "return": 2}
"#;
        let ops = parse(text).unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[1].output, Some(KvOutput::Value(Some(s("v1")))));
        assert!(ops[2].is_unknown());
        assert_eq!(ops[3].input, KvInput::Cas { key: s("k"), expected: None, new: s("v") });
        let escaped = r#"{"client": 1, "op": "put", "key": "\u00e9\ud83d\ude00", "value": "\t", "call": 1, "return": 2}"#;
        assert_eq!(parse_line(escaped).unwrap().input, KvInput::Put { key: s("é😀"), value: s("\t") });
    }

    #[test]
    fn rejects_bad_lines_with_a_reason() {
        let cases = [
            ("", "expected '{'"),
            ("{\"client\": 1", "expected ',' or '}'"),
            ("{\"client\": -1}", "non-negative integer"),
            ("{\"client\": 1.5}", "only non-negative integers"),
            (r#"{"client": 1, "op": "get", "key": "k", "call": 5, "return": 4}"#, "before \"call\""),
            (r#"{"client": 1, "op": "get", "key": "k", "call": 5}"#, "missing \"return\""),
            (r#"{"client": 1, "op": "inc", "key": "k", "call": 5, "return": 6}"#, "unknown \"op\""),
            (r#"{"client": 1, "op": "put", "key": "k", "call": 5, "return": 6}"#, "missing \"value\""),
            (
                r#"{"client": 1, "op": "put", "key": "k", "value": "v", "output": "v", "call": 5, "return": 6}"#,
                "must be \"ok\"",
            ),
            (r#"{"client": 1, "client": 2}"#, "appears twice"),
            (r#"{"client": 1} x"#, "end of the line"),
            (
                r#"{"client": 1, "op": "cas", "key": "k", "value": "v", "output": true, "call": 5, "return": 6}"#,
                "needs \"expected\"",
            ),
            (
                r#"{"client": 1, "op": "put", "key": "k\x", "value": "v", "call": 5, "return": 6}"#,
                "bad escape",
            ),
        ];
        for (line, want) in cases {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains(want), "{line:?}: {err:?} lacks {want:?}");
        }
        let err = parse("\n{\"client\": 1}\n").unwrap_err();
        assert!(err.starts_with("line 2: "), "{err}");
    }
}
