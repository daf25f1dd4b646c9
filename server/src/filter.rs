//! OData filters over connections (spec §5.2): the `filter` of REST and gRPC sends and of
//! `addToGroups` / `removeFromGroups`.
//!
//! A filter is parsed and type-checked once ([`Filter::parse`]) and then evaluated against
//! each candidate connection ([`Filter::matches`]). The grammar is Azure's:
//!
//! ```text
//! filter      := or
//! or          := and ('or' and)*
//! and         := compare ('and' compare)*
//! compare     := unary (('eq'|'ne'|'gt'|'ge'|'lt'|'le') unary | 'in' in_list)?
//! unary       := 'not' unary | primary
//! primary     := literal | identifier | function '(' args ')' | '(' or ')'
//! in_list     := 'groups' | '(' or (',' or)* ')'
//! literal     := 'string' (with '' for a quote) | [+-]digits | true | false | null
//! identifier  := userId | connectionId | groups | protocol      (case-insensitive)
//! ```
//!
//! Precedence, highest first: `not`, comparisons (and `in`), `and`, `or`. So
//! `not length(userId) gt 5` is a type error (`not` applies to `length(userId)`), and must be
//! written `not (length(userId) gt 5)`. Keywords, identifiers and function names are
//! ASCII case-insensitive; string comparisons are case-sensitive.
//!
//! Functions: `indexof(s, s)`, `concat(s, s)`, `contains(s, s)`, `endswith(s, s)`,
//! `startswith(s, s)`, `substring(s, start[, length])`, `tolower(s)`, `toupper(s)`, `trim(s)`,
//! `length(s | groups)`. Positions and lengths count characters, not bytes.
//!
//! Null semantics (as Azure's emulator): `eq`/`ne` compare values exactly, so
//! `userId eq null` selects anonymous connections; `gt`/`ge`/`lt`/`le` take integers and are
//! false when either side is null; a string function given null returns null, except the
//! predicates (`contains`, `startswith`, `endswith`), which are false, and `indexof`, which
//! is -1.
//!
//! Limits: at most [`MAX_CLAUSES`] clauses (comparisons, `in` tests, boolean function calls
//! and boolean literals) and [`MAX_DEPTH`] levels of nesting. Every error names the
//! 0-based character position where the problem is.

mod eval;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::error::{Classify, ErrorCode};

/// The most clauses a filter may have (Azure: about 100).
pub const MAX_CLAUSES: usize = 100;

/// The deepest nesting of parentheses, `not` and function calls a filter may have; keeps the
/// recursive parser's stack bounded whatever the input.
pub const MAX_DEPTH: usize = 32;

/// What a filter is evaluated against: one connection's identity and groups.
pub trait Subject {
    /// The connection id.
    fn connection_id(&self) -> &str;
    /// The user id; `None` for anonymous connections.
    fn user_id(&self) -> Option<&str>;
    /// The negotiated subprotocol; `None` for simple WebSocket clients.
    fn protocol(&self) -> Option<&str>;
    /// The groups the connection is in now.
    fn groups(&self) -> Vec<std::sync::Arc<str>>;
}

impl Subject for crate::router::Connection {
    fn connection_id(&self) -> &str {
        self.id().as_str()
    }

    fn user_id(&self) -> Option<&str> {
        crate::router::Connection::user_id(self).map(|u| &**u)
    }

    fn protocol(&self) -> Option<&str> {
        self.subprotocol()
    }

    fn groups(&self) -> Vec<std::sync::Arc<str>> {
        crate::router::Connection::groups(self)
    }
}

/// A parsed, type-checked OData filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: parser::Expr,
}

impl Filter {
    /// Parses and type-checks `text`.
    ///
    /// # Errors
    /// [`FilterError`] naming the position of the first problem: a syntax error, a type
    /// error (e.g. `userId gt 1`), an unknown identifier or function, or a limit exceeded.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        parser::parse(text).map(|expr| Self { expr })
    }

    /// Parses `text`, treating an empty or all-whitespace filter as "no filter".
    ///
    /// # Errors
    /// As [`Filter::parse`].
    pub fn parse_optional(text: &str) -> Result<Option<Self>, FilterError> {
        if text.trim().is_empty() {
            Ok(None)
        } else {
            Self::parse(text).map(Some)
        }
    }

    /// Whether `subject` satisfies the filter.
    pub fn matches<S: Subject + ?Sized>(&self, subject: &S) -> bool {
        eval::matches(&self.expr, subject)
    }
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// 0-based character position of the problem in the filter text.
    pub position: usize,
    /// What is wrong there.
    pub message: String,
}

impl FilterError {
    pub(crate) fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid filter at position {}: {}",
            self.position, self.message
        )
    }
}

impl std::error::Error for FilterError {}

impl Classify for FilterError {
    fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}
