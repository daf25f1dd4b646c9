//! Tokens → a type-checked expression tree (recursive descent, one function per precedence
//! level; see the grammar in the module docs of [`super`]).

use super::lexer::{Tok, Token, lex};
use super::{FilterError, MAX_CLAUSES, MAX_DEPTH};

/// A literal value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
}

/// A property of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    UserId,
    ConnectionId,
    Protocol,
    Groups,
}

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
    IndexOf,
    Concat,
    Contains,
    EndsWith,
    StartsWith,
    Substring,
    ToLower,
    ToUpper,
    Trim,
    Length,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A type-checked expression.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    Lit(Lit),
    Field(Field),
    Call(Func, Vec<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `x in groups`.
    InGroups(Box<Expr>),
    /// `x in (a, b, ...)`.
    InList(Box<Expr>, Vec<Expr>),
}

/// Static types. `Null` is the type of the `null` literal, which fits any scalar slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Int,
    Str,
    Null,
    Groups,
}

impl Ty {
    fn describe(self) -> &'static str {
        match self {
            Ty::Bool => "a boolean",
            Ty::Int => "an integer",
            Ty::Str => "a string",
            Ty::Null => "null",
            Ty::Groups => "the groups collection",
        }
    }

    /// Whether a value of this type may stand where `want` is expected.
    fn fits(self, want: Ty) -> bool {
        self == want || (self == Ty::Null && want != Ty::Groups)
    }
}

/// A parsed sub-expression with its type and source span (characters `start..end`).
struct Typed {
    expr: Expr,
    ty: Ty,
    start: usize,
    end: usize,
}

/// Parses and type-checks a whole filter.
pub(super) fn parse(text: &str) -> Result<Expr, FilterError> {
    let tokens = lex(text)?;
    let chars: Vec<char> = text.chars().collect();
    let mut parser = Parser {
        tokens,
        next: 0,
        chars,
        depth: 0,
        clauses: 0,
    };
    let expr = parser.or()?;
    if let Some(token) = parser.peek() {
        return Err(FilterError::new(
            token.pos,
            format!(
                "unexpected {} (expected 'and', 'or' or the end of the filter)",
                token.tok.describe()
            ),
        ));
    }
    parser.expect_type(&expr, Ty::Bool, "the filter")?;
    Ok(expr.expr)
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    chars: Vec<char>,
    depth: usize,
    clauses: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    /// Where the end of input is, for "found end of filter" errors.
    fn end_pos(&self) -> usize {
        self.chars.len()
    }

    /// The end of the last consumed token.
    fn last_end(&self) -> usize {
        self.next
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
            .map_or(0, |t| t.end)
    }

    fn snippet(&self, typed: &Typed) -> String {
        let text: String = self.chars[typed.start..typed.end.min(self.chars.len())]
            .iter()
            .collect();
        if text.chars().count() > 40 {
            format!("{}…", text.chars().take(40).collect::<String>())
        } else {
            text
        }
    }

    fn expect_type(&self, typed: &Typed, want: Ty, context: &str) -> Result<(), FilterError> {
        if typed.ty.fits(want) {
            Ok(())
        } else {
            Err(FilterError::new(
                typed.start,
                format!(
                    "'{}' is {}, but {context} needs {}",
                    self.snippet(typed),
                    typed.ty.describe(),
                    want.describe()
                ),
            ))
        }
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<Token, FilterError> {
        match self.bump() {
            Some(token) if &token.tok == want => Ok(token),
            Some(token) => Err(FilterError::new(
                token.pos,
                format!("expected {what}, found {}", token.tok.describe()),
            )),
            None => Err(FilterError::new(
                self.end_pos(),
                format!("expected {what}, found the end of the filter"),
            )),
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::new(
                pos,
                format!("the filter is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn clause(&mut self, pos: usize) -> Result<(), FilterError> {
        self.clauses += 1;
        if self.clauses > MAX_CLAUSES {
            return Err(FilterError::new(
                pos,
                format!("the filter has more than {MAX_CLAUSES} clauses"),
            ));
        }
        Ok(())
    }

    /// `or := and ('or' and)*`
    fn or(&mut self) -> Result<Typed, FilterError> {
        let mut left = self.and()?;
        while self.peek().is_some_and(|t| t.tok.is_word("or")) {
            self.bump();
            let right = self.and()?;
            self.expect_type(&left, Ty::Bool, "'or'")?;
            self.expect_type(&right, Ty::Bool, "'or'")?;
            left = Typed {
                start: left.start,
                end: right.end,
                expr: Expr::Or(Box::new(left.expr), Box::new(right.expr)),
                ty: Ty::Bool,
            };
        }
        Ok(left)
    }

    /// `and := compare ('and' compare)*`
    fn and(&mut self) -> Result<Typed, FilterError> {
        let mut left = self.compare()?;
        while self.peek().is_some_and(|t| t.tok.is_word("and")) {
            self.bump();
            let right = self.compare()?;
            self.expect_type(&left, Ty::Bool, "'and'")?;
            self.expect_type(&right, Ty::Bool, "'and'")?;
            left = Typed {
                start: left.start,
                end: right.end,
                expr: Expr::And(Box::new(left.expr), Box::new(right.expr)),
                ty: Ty::Bool,
            };
        }
        Ok(left)
    }

    /// `compare := unary (op unary | 'in' in_list)?`
    fn compare(&mut self) -> Result<Typed, FilterError> {
        let left = self.unary()?;
        let Some(token) = self.peek() else {
            return Ok(left);
        };
        let op_pos = token.pos;
        let op = match &token.tok {
            Tok::Word(w) => match w.to_ascii_lowercase().as_str() {
                "eq" => Some(CmpOp::Eq),
                "ne" => Some(CmpOp::Ne),
                "gt" => Some(CmpOp::Gt),
                "ge" => Some(CmpOp::Ge),
                "lt" => Some(CmpOp::Lt),
                "le" => Some(CmpOp::Le),
                "in" => None,
                _ => return Ok(left),
            },
            _ => return Ok(left),
        };
        let op_name = token.tok.describe();
        self.bump();
        self.clause(op_pos)?;
        match op {
            Some(op) => {
                let right = self.unary()?;
                self.check_comparison(op, &op_name, &left, &right)?;
                Ok(Typed {
                    start: left.start,
                    end: right.end,
                    expr: Expr::Cmp(op, Box::new(left.expr), Box::new(right.expr)),
                    ty: Ty::Bool,
                })
            }
            None => self.in_list(left),
        }
    }

    fn check_comparison(
        &self,
        op: CmpOp,
        op_name: &str,
        left: &Typed,
        right: &Typed,
    ) -> Result<(), FilterError> {
        let context = format!("the comparison {op_name}");
        for side in [left, right] {
            if matches!(side.ty, Ty::Groups) {
                return Err(FilterError::new(
                    side.start,
                    "'groups' is a collection and cannot be compared; use 'g' in groups or length(groups)",
                ));
            }
        }
        match op {
            CmpOp::Eq | CmpOp::Ne => {
                if left.ty == Ty::Null || right.ty == Ty::Null || left.ty == right.ty {
                    Ok(())
                } else {
                    Err(FilterError::new(
                        right.start,
                        format!(
                            "cannot compare {} ('{}') with {} ('{}')",
                            left.ty.describe(),
                            self.snippet(left),
                            right.ty.describe(),
                            self.snippet(right)
                        ),
                    ))
                }
            }
            CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le => {
                self.expect_type(left, Ty::Int, &context)?;
                self.expect_type(right, Ty::Int, &context)
            }
        }
    }

    /// After `left in`: `groups`, `(groups)` or `(a, b, ...)`.
    fn in_list(&mut self, left: Typed) -> Result<Typed, FilterError> {
        if matches!(left.ty, Ty::Groups | Ty::Bool) {
            return Err(FilterError::new(
                left.start,
                format!(
                    "'{}' is {}; 'in' needs a string or an integer on its left",
                    self.snippet(&left),
                    left.ty.describe()
                ),
            ));
        }
        let Some(token) = self.peek().cloned() else {
            return Err(FilterError::new(
                self.end_pos(),
                "expected 'groups' or a parenthesized list after 'in', found the end of the filter",
            ));
        };
        let items = match &token.tok {
            Tok::Word(w) if w.eq_ignore_ascii_case("groups") => {
                self.bump();
                None
            }
            Tok::LParen => {
                self.bump();
                self.enter(token.pos)?;
                let mut items = vec![self.or()?];
                while self.peek().is_some_and(|t| t.tok == Tok::Comma) {
                    self.bump();
                    items.push(self.or()?);
                }
                self.expect(&Tok::RParen, "',' or ')' to close the list after 'in'")?;
                self.leave();
                if items.len() == 1 && items[0].ty == Ty::Groups {
                    None
                } else {
                    Some(items)
                }
            }
            other => {
                return Err(FilterError::new(
                    token.pos,
                    format!(
                        "expected 'groups' or a parenthesized list after 'in', found {}",
                        other.describe()
                    ),
                ));
            }
        };
        let end = self.last_end();
        let expr = match items {
            None => {
                self.expect_type(&left, Ty::Str, "'in groups'")?;
                Expr::InGroups(Box::new(left.expr))
            }
            Some(items) => {
                for item in &items {
                    let compatible = item.ty != Ty::Groups
                        && (item.ty == Ty::Null || left.ty == Ty::Null || item.ty == left.ty);
                    if !compatible {
                        return Err(FilterError::new(
                            item.start,
                            format!(
                                "'{}' is {}, but the list is compared with {} ('{}')",
                                self.snippet(item),
                                item.ty.describe(),
                                left.ty.describe(),
                                self.snippet(&left)
                            ),
                        ));
                    }
                }
                Expr::InList(
                    Box::new(left.expr),
                    items.into_iter().map(|i| i.expr).collect(),
                )
            }
        };
        Ok(Typed {
            start: left.start,
            end,
            expr,
            ty: Ty::Bool,
        })
    }

    /// `unary := 'not' unary | primary`
    fn unary(&mut self) -> Result<Typed, FilterError> {
        if let Some(token) = self.peek().filter(|t| t.tok.is_word("not")).cloned() {
            self.bump();
            self.enter(token.pos)?;
            let operand = self.unary()?;
            self.leave();
            if operand.ty != Ty::Bool {
                return Err(FilterError::new(
                    token.pos,
                    format!(
                        "'not {}' is invalid: '{}' is {}, but 'not' needs a boolean \
                         (not binds tighter than comparisons: write 'not (...)')",
                        self.snippet(&operand),
                        self.snippet(&operand),
                        operand.ty.describe()
                    ),
                ));
            }
            return Ok(Typed {
                start: token.pos,
                end: operand.end,
                expr: Expr::Not(Box::new(operand.expr)),
                ty: Ty::Bool,
            });
        }
        self.primary()
    }

    /// Literals, identifiers, function calls and parenthesized expressions.
    fn primary(&mut self) -> Result<Typed, FilterError> {
        let Some(token) = self.bump() else {
            return Err(FilterError::new(
                self.end_pos(),
                "expected an expression, found the end of the filter",
            ));
        };
        let (pos, end) = (token.pos, token.end);
        let typed = |expr, ty| Typed {
            expr,
            ty,
            start: pos,
            end,
        };
        match token.tok {
            Tok::Str(s) => Ok(typed(Expr::Lit(Lit::Str(s)), Ty::Str)),
            Tok::Int(n) => Ok(typed(Expr::Lit(Lit::Int(n)), Ty::Int)),
            Tok::LParen => {
                self.enter(pos)?;
                let inner = self.or()?;
                self.expect(&Tok::RParen, "')'")?;
                self.leave();
                Ok(Typed {
                    start: pos,
                    end: self.last_end(),
                    ..inner
                })
            }
            Tok::RParen | Tok::Comma => Err(FilterError::new(
                pos,
                format!("expected an expression, found {}", token.tok.describe()),
            )),
            Tok::Word(word) => {
                if self.peek().is_some_and(|t| t.tok == Tok::LParen) {
                    return self.call(&word, pos);
                }
                let lower = word.to_ascii_lowercase();
                match lower.as_str() {
                    "true" | "false" => {
                        self.clause(pos)?;
                        Ok(typed(Expr::Lit(Lit::Bool(lower == "true")), Ty::Bool))
                    }
                    "null" => Ok(typed(Expr::Lit(Lit::Null), Ty::Null)),
                    "userid" => Ok(typed(Expr::Field(Field::UserId), Ty::Str)),
                    "connectionid" => Ok(typed(Expr::Field(Field::ConnectionId), Ty::Str)),
                    "protocol" => Ok(typed(Expr::Field(Field::Protocol), Ty::Str)),
                    "groups" => Ok(typed(Expr::Field(Field::Groups), Ty::Groups)),
                    "and" | "or" | "not" | "eq" | "ne" | "gt" | "ge" | "lt" | "le" | "in" => {
                        Err(FilterError::new(
                            pos,
                            format!("expected an expression, found the keyword '{word}'"),
                        ))
                    }
                    _ => Err(FilterError::new(
                        pos,
                        format!(
                            "unknown identifier '{word}' (expected userId, connectionId, groups, \
                             protocol, a literal or a function call)"
                        ),
                    )),
                }
            }
        }
    }

    /// `name '(' args ')'`; the name has been consumed, `(` is next.
    fn call(&mut self, name: &str, pos: usize) -> Result<Typed, FilterError> {
        use Ty::{Bool, Int, Str};
        let (func, params, ret): (Func, &[&[Ty]], Ty) = match name.to_ascii_lowercase().as_str() {
            "indexof" => (Func::IndexOf, &[&[Str, Str]], Int),
            "concat" => (Func::Concat, &[&[Str, Str]], Str),
            "contains" => (Func::Contains, &[&[Str, Str]], Bool),
            "endswith" => (Func::EndsWith, &[&[Str, Str]], Bool),
            "startswith" => (Func::StartsWith, &[&[Str, Str]], Bool),
            "substring" => (Func::Substring, &[&[Str, Int], &[Str, Int, Int]], Str),
            "tolower" => (Func::ToLower, &[&[Str]], Str),
            "toupper" => (Func::ToUpper, &[&[Str]], Str),
            "trim" => (Func::Trim, &[&[Str]], Str),
            "length" => (Func::Length, &[&[Str], &[Ty::Groups]], Int),
            _ => {
                return Err(FilterError::new(
                    pos,
                    format!(
                        "unknown function '{name}' (known: indexof, concat, contains, endswith, \
                         startswith, substring, tolower, toupper, trim, length)"
                    ),
                ));
            }
        };
        self.bump(); // `(`
        self.enter(pos)?;
        let mut args = Vec::new();
        if self.peek().is_some_and(|t| t.tok == Tok::RParen) {
            self.bump();
        } else {
            args.push(self.or()?);
            while self.peek().is_some_and(|t| t.tok == Tok::Comma) {
                self.bump();
                args.push(self.or()?);
            }
            self.expect(&Tok::RParen, &format!("',' or ')' to close {name}(...)"))?;
        }
        self.leave();
        let end = self.last_end();
        let Some(signature) = params.iter().find(|p| p.len() == args.len()) else {
            let counts: Vec<String> = params.iter().map(|p| p.len().to_string()).collect();
            return Err(FilterError::new(
                pos,
                format!(
                    "{name}() takes {} argument(s), but {} were given",
                    counts.join(" or "),
                    args.len()
                ),
            ));
        };
        // `length` takes a string or the groups collection: pick the signature by type.
        let signature = if func == Func::Length && args[0].ty == Ty::Groups {
            &[Ty::Groups][..]
        } else if func == Func::Length {
            &[Ty::Str][..]
        } else {
            signature
        };
        for (i, (arg, want)) in args.iter().zip(signature.iter()).enumerate() {
            let context = format!("argument {} of {name}()", i + 1);
            self.expect_type(arg, *want, &context)?;
        }
        if ret == Bool {
            self.clause(pos)?;
        }
        Ok(Typed {
            expr: Expr::Call(func, args.into_iter().map(|a| a.expr).collect()),
            ty: ret,
            start: pos,
            end,
        })
    }
}
