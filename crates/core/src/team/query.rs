//! A team metric's PromQL query with placeholders: `{service}`, `{version}` and `{rollout}`
//! stand for the service's name, the version being read and the rollout's id.
//!
//! PromQL uses braces itself (`checkouts_total{version="{version}"}`), so a placeholder is only
//! a brace pair around one bare name; every other brace is PromQL and left alone. A bare name
//! in braces is never valid PromQL (a matcher needs an operator), so one that is not a known
//! placeholder is a typo and refused when the query is read.
//!
//! The values go into the query as the body of a double-quoted PromQL string (a label value):
//! backslashes, double quotes and line breaks are escaped, so no value can end the string and
//! add a matcher of its own. Names are checked to letters, digits, `.`, `_` and `-` before they
//! get here; the escaping holds for anything. Inside a regex matcher (`=~"{version}"`) a `.` of a
//! version still matches any character: use `=` for exact versions.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest query accepted, in bytes.
pub const MAX_QUERY: usize = 4096;

/// The placeholders a query may use.
pub const PLACEHOLDERS: [&str; 3] = ["service", "version", "rollout"];

/// What the placeholders stand for when a query is sent.
#[derive(Debug, Clone, Copy)]
pub struct Placeholders<'a> {
    /// The service's name.
    pub service: &'a str,
    /// The version being read (the canary's or stable's name).
    pub version: &'a str,
    /// The rollout's id.
    pub rollout: &'a str,
}

impl Placeholders<'_> {
    fn value(&self, name: &str) -> &str {
        match name {
            "service" => self.service,
            "version" => self.version,
            _ => self.rollout,
        }
    }
}

/// One piece of a parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Placeholder(&'static str),
}

/// A PromQL query with placeholders, checked when it is read: known placeholders only, and
/// `{version}` at least once (each version must get its own answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromQuery {
    text: String,
    pieces: Vec<Piece>,
}

impl TryFrom<String> for PromQuery {
    type Error = String;
    fn try_from(text: String) -> Result<PromQuery, String> {
        if text.trim().is_empty() {
            return Err("a query must not be empty".into());
        }
        if text.len() > MAX_QUERY {
            return Err(format!("a query must be at most {MAX_QUERY} bytes"));
        }
        let pieces = parse(&text)?;
        if !pieces.contains(&Piece::Placeholder("version")) {
            return Err(format!(
                "query {text:?} must use {{version}}, so that the canary and stable each get their own answer"
            ));
        }
        Ok(PromQuery { text, pieces })
    }
}

impl From<PromQuery> for String {
    fn from(query: PromQuery) -> String {
        query.text
    }
}

impl fmt::Display for PromQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PromQuery {
    /// The query as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The query to send, with every placeholder replaced by its escaped value.
    pub fn render(&self, values: &Placeholders<'_>) -> String {
        let mut out = String::with_capacity(self.text.len() + 32);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder(name) => out.push_str(&escape_label_value(values.value(name))),
            }
        }
        out
    }
}

/// `value` as the body of a double-quoted PromQL string.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// Splits `text` into text and placeholders; a bare name in braces that is not a placeholder
/// is an error.
fn parse(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut plain = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        plain.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
        let name = &after[..name_len];
        let is_bare_name = name_len > 0 && after[name_len..].starts_with('}');
        if !is_bare_name {
            plain.push('{');
            rest = after;
            continue;
        }
        let Some(known) = PLACEHOLDERS.iter().find(|p| **p == name) else {
            return Err(format!(
                "unknown placeholder {{{name}}} in {text:?}: use {{service}}, {{version}} or {{rollout}}"
            ));
        };
        if !plain.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut plain)));
        }
        pieces.push(Piece::Placeholder(known));
        rest = &after[name_len + 1..];
    }
    plain.push_str(rest);
    if !plain.is_empty() {
        pieces.push(Piece::Text(plain));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Placeholders<'static> = Placeholders { service: "checkout", version: "v2.1", rollout: "checkout-19a" };

    fn query(text: &str) -> PromQuery {
        PromQuery::try_from(text.to_owned()).unwrap()
    }

    #[test]
    fn placeholders_are_replaced_and_promql_braces_kept() {
        let q = query(r#"sum(shop_checkouts_total{service="{service}",version="{version}",outcome="failed"})"#);
        assert_eq!(q.render(&AT), r#"sum(shop_checkouts_total{service="checkout",version="v2.1",outcome="failed"})"#);
        let q = query(r#"max(app_p99{version="{version}"}) / on() group_left rollouts{id="{rollout}"}"#);
        assert_eq!(q.render(&AT), r#"max(app_p99{version="v2.1"}) / on() group_left rollouts{id="checkout-19a"}"#);
        assert_eq!(q.as_str(), r#"max(app_p99{version="{version}"}) / on() group_left rollouts{id="{rollout}"}"#);
    }

    #[test]
    fn values_cannot_leave_their_label_string() {
        let q = query(r#"up{version="{version}"}"#);
        let hostile = Placeholders { version: "v2\"} or vector(1) or up{x=\"\\", ..AT };
        assert_eq!(q.render(&hostile), r#"up{version="v2\"} or vector(1) or up{x=\"\\"}"#);
        assert_eq!(escape_label_value("a\nb\tc"), "a\\nb\\tc");
    }

    #[test]
    fn bad_queries_are_refused_with_the_reason() {
        let err = |text: &str| PromQuery::try_from(text.to_owned()).unwrap_err();
        assert!(err(r#"up{version="{verison}"}"#).contains("unknown placeholder {verison}"));
        assert!(err(r#"up{service="{service}"}"#).contains("must use {version}"));
        assert!(err("  ").contains("empty"));
        assert!(err(&format!("up{{version=\"{{version}}\"}} {}", "x".repeat(MAX_QUERY))).contains("at most"));
    }

    #[test]
    fn a_query_reads_and_writes_as_its_text() {
        let q: PromQuery = serde_json::from_str(r#""rate(x{version=\"{version}\"}[5m])""#).unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), r#""rate(x{version=\"{version}\"}[5m])""#);
        assert_eq!(q.to_string(), r#"rate(x{version="{version}"}[5m])"#);
    }
}
