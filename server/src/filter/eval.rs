//! Evaluating a type-checked expression against one connection.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::Arc;

use super::Subject;
use super::parser::{CmpOp, Expr, Field, Func, Lit};

/// A runtime value. The parser guarantees operand types, so mismatches only happen with
/// `Null`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Str(Cow<'a, str>),
    /// The connection's groups (only ever consumed by `in groups` and `length`).
    Groups,
}

/// One evaluation: the subject, and its groups loaded at most once.
struct Ctx<'s, S: ?Sized> {
    subject: &'s S,
    groups: OnceCell<Vec<Arc<str>>>,
}

pub(super) fn matches<S: Subject + ?Sized>(expr: &Expr, subject: &S) -> bool {
    let ctx = Ctx {
        subject,
        groups: OnceCell::new(),
    };
    ctx.eval(expr) == V::Bool(true)
}

impl<'s, S: Subject + ?Sized> Ctx<'s, S> {
    fn groups(&self) -> &[Arc<str>] {
        self.groups.get_or_init(|| self.subject.groups())
    }

    fn eval<'e>(&'e self, expr: &'e Expr) -> V<'e> {
        match expr {
            Expr::Lit(Lit::Null) => V::Null,
            Expr::Lit(Lit::Bool(b)) => V::Bool(*b),
            Expr::Lit(Lit::Int(n)) => V::Int(*n),
            Expr::Lit(Lit::Str(s)) => V::Str(Cow::Borrowed(s)),
            Expr::Field(Field::ConnectionId) => V::Str(Cow::Borrowed(self.subject.connection_id())),
            Expr::Field(Field::UserId) => opt_str(self.subject.user_id()),
            Expr::Field(Field::Protocol) => opt_str(self.subject.protocol()),
            Expr::Field(Field::Groups) => V::Groups,
            Expr::Not(inner) => V::Bool(!self.truth(inner)),
            // Short-circuit: `groups` is only loaded when a clause needs it.
            Expr::And(a, b) => V::Bool(self.truth(a) && self.truth(b)),
            Expr::Or(a, b) => V::Bool(self.truth(a) || self.truth(b)),
            Expr::Cmp(op, a, b) => V::Bool(compare(*op, &self.eval(a), &self.eval(b))),
            Expr::InGroups(item) => V::Bool(match self.eval(item) {
                V::Str(s) => self.groups().iter().any(|g| **g == *s),
                _ => false,
            }),
            Expr::InList(item, list) => {
                let item = self.eval(item);
                V::Bool(list.iter().any(|e| self.eval(e) == item))
            }
            Expr::Call(func, args) => {
                let args: Vec<V<'e>> = args.iter().map(|a| self.eval(a)).collect();
                self.call(*func, args)
            }
        }
    }

    fn truth(&self, expr: &Expr) -> bool {
        self.eval(expr) == V::Bool(true)
    }

    fn call<'e>(&'e self, func: Func, args: Vec<V<'e>>) -> V<'e> {
        let arity = args.len();
        let mut args = args.into_iter();
        let mut next = || args.next().unwrap_or(V::Null);
        match func {
            Func::Length => match next() {
                V::Str(s) => V::Int(count(&s)),
                V::Groups => V::Int(i64::try_from(self.groups().len()).unwrap_or(i64::MAX)),
                _ => V::Null,
            },
            Func::ToLower => map_str(next(), |s| s.to_lowercase()),
            Func::ToUpper => map_str(next(), |s| s.to_uppercase()),
            Func::Trim => map_str(next(), |s| s.trim().to_owned()),
            Func::Concat => match (next(), next()) {
                (V::Str(a), V::Str(b)) => V::Str(Cow::Owned(format!("{a}{b}"))),
                _ => V::Null,
            },
            Func::Contains | Func::StartsWith | Func::EndsWith => V::Bool(match (next(), next()) {
                (V::Str(a), V::Str(b)) => match func {
                    Func::Contains => a.contains(&*b),
                    Func::StartsWith => a.starts_with(&*b),
                    _ => a.ends_with(&*b),
                },
                _ => false,
            }),
            Func::IndexOf => V::Int(match (next(), next()) {
                (V::Str(a), V::Str(b)) => a.find(&*b).map_or(-1, |at| count(&a[..at])),
                _ => -1,
            }),
            Func::Substring => {
                let (s, start) = (next(), next());
                let length = next();
                match (s, start) {
                    (V::Str(s), V::Int(start)) => {
                        let start = usize::try_from(start.max(0)).unwrap_or(usize::MAX);
                        let taken: String = match length {
                            V::Int(n) => s
                                .chars()
                                .skip(start)
                                .take(usize::try_from(n.max(0)).unwrap_or(usize::MAX))
                                .collect(),
                            // `substring(s, i, null)` is null, like any function given null.
                            V::Null if arity == 3 => return V::Null,
                            _ => s.chars().skip(start).collect(),
                        };
                        V::Str(Cow::Owned(taken))
                    }
                    _ => V::Null,
                }
            }
        }
    }
}

fn opt_str(s: Option<&str>) -> V<'_> {
    s.map_or(V::Null, |s| V::Str(Cow::Borrowed(s)))
}

fn map_str<'e>(v: V<'e>, f: impl FnOnce(&str) -> String) -> V<'e> {
    match v {
        V::Str(s) => V::Str(Cow::Owned(f(&s))),
        _ => V::Null,
    }
}

fn count(s: &str) -> i64 {
    i64::try_from(s.chars().count()).unwrap_or(i64::MAX)
}

fn compare(op: CmpOp, a: &V<'_>, b: &V<'_>) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le => match (a, b) {
            (V::Int(a), V::Int(b)) => match op {
                CmpOp::Gt => a > b,
                CmpOp::Ge => a >= b,
                CmpOp::Lt => a < b,
                _ => a <= b,
            },
            _ => false,
        },
    }
}
