//! JSON written the way Nova's `jsonutils.dumps` writes it: Python's default
//! separators (`", "` and `": "`), non-ASCII escaped as `\uXXXX`
//! (`ensure_ascii`), object keys in insertion order, no trailing newline.
//! Byte-for-byte agreement matters to anyone diffing us against Nova.

use serde_json::Value;
use std::fmt::Write;

/// Serialise a value Python-style.
pub fn to_python_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

pub(crate) fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, key);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
        // Python prints floats with repr(): integral floats keep ".0".
        if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
            let _ = write!(out, "{f:.1}");
            return;
        }
    }
    let _ = write!(out, "{n}");
}

/// A JSON string literal with Python's `ensure_ascii` escaping.
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_separators_and_ascii_escapes() {
        let v = json!({"b": [1, 2.0, true, null], "a": "é\u{1F600}\"\n", "c": {}});
        assert_eq!(
            to_python_json(&v),
            r#"{"b": [1, 2.0, true, null], "a": "\u00e9\ud83d\ude00\"\n", "c": {}}"#
        );
    }

    #[test]
    fn del_is_escaped_like_python() {
        // Python's ensure_ascii escapes DEL (0x7f) but keeps `~` (0x7e).
        assert_eq!(to_python_json(&json!("\u{7f}~")), "\"\\u007f~\"");
    }
}
