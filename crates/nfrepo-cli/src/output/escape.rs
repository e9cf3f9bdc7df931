//! Making names safe to print: the one escaping function of the binary.
//!
//! File names, symlink targets, source names and tags come from the backed-up
//! system or from whoever wrote the repository, so they may hold terminal
//! control sequences (`ESC [ 2 J`, a title change, a fake prompt) or bytes that
//! are not UTF-8. Human output, on a terminal or a pipe (a pipe is displayed
//! too, by `less` or a log viewer), shows them escaped by [`bytes()`] /
//! [`text`]; tables escape every cell. The escaping is lossless: every
//! distinct name prints differently, and the original can be rebuilt.
//!
//! | in the name | printed as |
//! |---|---|
//! | `\` | `\\` |
//! | newline, tab, carriage return | `\n`, `\t`, `\r` |
//! | other C0 controls and DEL (`0x00`–`0x1f`, `0x7f`) | `\xNN` |
//! | C1 controls (U+0080–U+009F) and bidirectional overrides/isolates/marks | `\u{NNNN}` |
//! | a byte that is not part of valid UTF-8 | `\xNN` (always ≥ `\x80`, so never confused with a control) |
//!
//! JSON output is not escaped here: JSON escapes controls itself, so a valid
//! UTF-8 name is emitted exactly. A name that is not valid UTF-8 is emitted
//! by [`json_bytes`] as its lossy text (invalid bytes become U+FFFD) under
//! the usual key, plus the exact bytes in hex under `<key>_hex`.

use std::borrow::Cow;
use std::fmt::Write;

/// A name (bytes as stored) escaped for human output.
pub fn bytes(name: &[u8]) -> Cow<'_, str> {
    if let Ok(valid) = std::str::from_utf8(name) {
        return text(valid);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for chunk in name.utf8_chunks() {
        push_escaped(&mut out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// A UTF-8 name escaped for human output; borrowed when nothing needs escaping.
pub fn text(name: &str) -> Cow<'_, str> {
    if !name.chars().any(needs_escape) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    push_escaped(&mut out, name);
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control() || is_bidi_control(c)
}

/// Characters that reorder the text around them on display.
const fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() || is_bidi_control(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// Sets `key` of the JSON object `object` to `name`: the exact string when
/// it is UTF-8, else the lossy text plus `<key>_hex` with the exact bytes.
pub fn json_bytes(object: &mut serde_json::Value, key: &str, name: &[u8]) {
    match std::str::from_utf8(name) {
        Ok(valid) => object[key] = valid.into(),
        Err(_) => {
            object[key] = String::from_utf8_lossy(name).into_owned().into();
            object[format!("{key}_hex")] = hex::encode(name).into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 9, bug 8: names reached the terminal raw.
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(bytes(b"plain name.txt"), "plain name.txt");
        assert_eq!(bytes(b"a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(bytes(b"line\nbreak\ttab\rcr\x7f"), "line\\nbreak\\ttab\\rcr\\x7f");
        assert_eq!(text("back\\slash"), "back\\\\slash");
        assert_eq!(text("c1\u{9b}31m"), "c1\\u{009b}31m");
        assert_eq!(text("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(text("grüße"), "grüße");
    }

    #[test]
    fn invalid_utf8_is_escaped_losslessly() {
        assert_eq!(bytes(b"caf\xe9"), "caf\\xe9");
        assert_eq!(bytes(b"\xff\xfe\x01ok"), "\\xff\\xfe\\x01ok");
        // Distinct names never print the same.
        assert_ne!(bytes(b"a\\xe9"), bytes(b"a\xe9"));
        assert_ne!(bytes(b"\x01"), bytes(b"\\x01"));
    }

    #[test]
    fn json_keeps_exact_bytes() {
        let mut v = serde_json::json!({});
        json_bytes(&mut v, "path", b"a\x1bb");
        assert_eq!(v, serde_json::json!({"path": "a\u{1b}b"}));
        let mut v = serde_json::json!({});
        json_bytes(&mut v, "path", b"caf\xe9");
        assert_eq!(v, serde_json::json!({"path": "caf\u{fffd}", "path_hex": "636166e9"}));
    }
}
