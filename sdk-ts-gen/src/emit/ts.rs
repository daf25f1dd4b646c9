//! Small helpers for writing TypeScript source: an indenting line writer, doc comments,
//! string literals, property access and name conversions.

use std::fmt::Write as _;

/// Accumulates lines of TypeScript with two-space indentation.
#[derive(Debug, Default)]
pub(crate) struct Code {
    out: String,
    level: usize,
}

impl Code {
    /// Writes one line at the current indentation (an empty `text` writes an empty line).
    pub(crate) fn line(&mut self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if !text.is_empty() {
            for _ in 0..self.level {
                self.out.push_str("  ");
            }
            self.out.push_str(text);
        }
        self.out.push('\n');
    }

    /// Writes `text` and indents the lines after it.
    pub(crate) fn open(&mut self, text: impl AsRef<str>) {
        self.line(text);
        self.level += 1;
    }

    /// Dedents without writing.
    pub(crate) fn dedent(&mut self) {
        self.level = self.level.saturating_sub(1);
    }

    /// Dedents, then writes `text`.
    pub(crate) fn close(&mut self, text: impl AsRef<str>) {
        self.level = self.level.saturating_sub(1);
        self.line(text);
    }

    /// Writes `text` as a JSDoc comment (nothing if it is empty).
    pub(crate) fn doc(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let text = text.replace("*/", "*\\/");
        let lines: Vec<&str> = text.lines().collect();
        if let [only] = lines.as_slice() {
            self.line(format!("/** {only} */"));
            return;
        }
        self.line("/**");
        for line in lines {
            if line.is_empty() {
                self.line(" *");
            } else {
                self.line(format!(" * {line}"));
            }
        }
        self.line(" */");
    }

    /// The text written so far.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// A JavaScript string literal for `s` (double-quoted, JSON escaping).
pub(crate) fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `s` can be written as a bare identifier / property name.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// `obj.key` or `obj["key"]`.
pub(crate) fn member(object: &str, key: &str) -> String {
    if is_identifier(key) {
        format!("{object}.{key}")
    } else {
        format!("{object}[{}]", string_literal(key))
    }
}

/// A property name for an object literal or interface: bare if possible, else quoted.
pub(crate) fn property(key: &str) -> String {
    if is_identifier(key) {
        key.to_owned()
    } else {
        string_literal(key)
    }
}

/// `lowerCamelCase` of a `snake_case` name (protobuf's JSON name rule).
pub(crate) fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `PascalCase` of an `UPPER_SNAKE` name: `GOING_AWAY` -> `GoingAway`.
pub(crate) fn pascal_from_upper_snake(name: &str) -> String {
    name.split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let lower = part.to_ascii_lowercase();
            let mut chars = lower.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// `UPPER_SNAKE` of a `PascalCase` name: `CloseCode` -> `CLOSE_CODE`.
pub(crate) fn upper_snake(pascal: &str) -> String {
    let mut out = String::with_capacity(pascal.len() + 4);
    for (i, c) in pascal.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_convert() {
        assert_eq!(lower_camel("ack_id"), "ackId");
        assert_eq!(lower_camel("send_to_group_message"), "sendToGroupMessage");
        assert_eq!(pascal_from_upper_snake("GOING_AWAY"), "GoingAway");
        assert_eq!(pascal_from_upper_snake("NORMAL"), "Normal");
        assert_eq!(upper_snake("CloseCode"), "CLOSE_CODE");
        assert_eq!(upper_snake("AckErrorName"), "ACK_ERROR_NAME");
    }

    #[test]
    fn literals_and_members_are_escaped() {
        assert_eq!(string_literal("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(member("o", "ackId"), "o.ackId");
        assert_eq!(member("o", "a-b"), r#"o["a-b"]"#);
        assert!(!is_identifier("1a"));
    }

    #[test]
    fn docs_escape_comment_ends() {
        let mut code = Code::default();
        code.doc("one line */ here");
        code.doc("two\n\nlines");
        assert_eq!(
            code.finish(),
            "/** one line *\\/ here */\n/**\n * two\n *\n * lines\n */\n"
        );
    }
}
