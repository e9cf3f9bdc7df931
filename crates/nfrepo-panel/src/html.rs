//! Server-rendered HTML: escaping and the page frame. No scripts; a
//! viewport meta and a narrow-first stylesheet make it readable on a phone.

use std::fmt::Write;

/// `text` with `& < > " '` escaped, for element content and quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded for a query value.
pub(crate) fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:0 .8em 2em;max-width:70em}\
nav{display:flex;flex-wrap:wrap;gap:.8em;align-items:center;padding:.6em 0;border-bottom:1px solid #ccc}\
nav form{margin-left:auto}table{border-collapse:collapse;width:100%;margin:.6em 0}\
td,th{border-bottom:1px solid #ddd;padding:.35em;text-align:left;vertical-align:top}\
.wide{overflow-x:auto}.green{background:#c8f0c8}.amber{background:#ffe0a0}.red{background:#f8b4b4}\
.unwatched{background:#eee}.flash{padding:.5em;border:1px solid #999;background:#ffd}\
input,select,button{font-size:1em;padding:.3em;margin:.15em 0}label{display:block;margin:.3em 0}\
.code{width:6em}@media(max-width:40em){td,th{font-size:.9em}}";

/// A whole page. With `csrf`, the page is a logged-in one: the navigation
/// and a logout form carry the token.
pub(crate) fn page(title: &str, user: Option<(&str, &str)>, body: &str) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · nfrepo</title><style>{STYLE}</style></head><body>",
        esc(title)
    );
    if let Some((name, csrf)) = user {
        let _ = write!(
            out,
            "<nav><a href=\"/\">Sources</a><a href=\"/alerts\">Alerts</a><a href=\"/snapshots\">Snapshots</a><a href=\"/browse\">Browse</a>\
             <a href=\"/restores\">Restores</a><a href=\"/replication\">Replication</a><a href=\"/drills\">Drills</a>\
             <a href=\"/audit\">Audit</a><form method=\"post\" action=\"/logout\">{}\
             <button type=\"submit\">Log out {}</button></form></nav>",
            csrf_field(csrf),
            esc(name)
        );
    }
    let _ = write!(out, "<h1>{}</h1>{body}</body></html>", esc(title));
    out
}

/// The hidden CSRF field every form of a logged-in page carries.
pub(crate) fn csrf_field(csrf: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(csrf))
}

/// A TOTP code input.
pub(crate) fn code_field(id: &str) -> String {
    format!(
        "<label>Fresh TOTP code <input class=\"code\" id=\"{id}\" name=\"code\" inputmode=\"numeric\" \
         autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\" required></label>"
    )
}

/// A time as `2026-12-02 15:04 UTC`.
pub(crate) fn time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M UTC")
        .to_string()
}

/// An age in seconds as `3d 4h`, `2h 5m`, `45s`.
pub(crate) fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Bytes with a binary unit.
pub(crate) fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_encodes_urls() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url("a b/c&d"), "a%20b/c%26d");
        assert_eq!(age(3 * 86_400 + 4 * 3600), "3d 4h");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
