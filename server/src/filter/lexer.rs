//! Filter text → tokens, each with its 0-based character position.

use super::FilterError;

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `,`
    Comma,
    /// A string literal, unescaped (`''` → `'`).
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A keyword, identifier or function name, as written.
    Word(String),
}

impl Tok {
    /// How the token reads in an error message.
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Str(s) => format!("string '{}'", s.replace('\'', "''")),
            Tok::Int(n) => format!("number {n}"),
            Tok::Word(w) => format!("'{w}'"),
        }
    }

    /// Whether the token is the keyword `kw` (ASCII case-insensitive).
    pub(super) fn is_word(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// A token and where it is: characters `pos..end` of the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) pos: usize,
    pub(super) end: usize,
}

/// Splits `text` into tokens.
pub(super) fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => {
                i += 1;
                tokens.push(Token {
                    tok: Tok::LParen,
                    pos: start,
                    end: i,
                });
            }
            ')' => {
                i += 1;
                tokens.push(Token {
                    tok: Tok::RParen,
                    pos: start,
                    end: i,
                });
            }
            ',' => {
                i += 1;
                tokens.push(Token {
                    tok: Tok::Comma,
                    pos: start,
                    end: i,
                });
            }
            '\'' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(FilterError::new(
                                start,
                                "unterminated string literal (a quote inside a string is written '')",
                            ));
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            value.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            value.push(other);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token {
                    tok: Tok::Str(value),
                    pos: start,
                    end: i,
                });
            }
            '+' | '-' | '0'..='9' => {
                if matches!(c, '+' | '-') && !chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                    return Err(FilterError::new(
                        start,
                        format!("unexpected '{c}': a sign must be followed by digits"),
                    ));
                }
                i += 1;
                while chars.get(i).is_some_and(char::is_ascii_digit) {
                    i += 1;
                }
                if chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    return Err(FilterError::new(
                        i,
                        format!("unexpected '{}' after a number", chars[i]),
                    ));
                }
                let literal: String = chars[start..i].iter().collect();
                let value = literal.parse::<i64>().map_err(|_| {
                    FilterError::new(
                        start,
                        format!("integer {literal} is out of range (64-bit signed)"),
                    )
                })?;
                tokens.push(Token {
                    tok: Tok::Int(value),
                    pos: start,
                    end: i,
                });
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                tokens.push(Token {
                    tok: Tok::Word(chars[start..i].iter().collect()),
                    pos: start,
                    end: i,
                });
            }
            other => {
                return Err(FilterError::new(
                    start,
                    format!("unexpected character '{other}'"),
                ));
            }
        }
    }
    Ok(tokens)
}
