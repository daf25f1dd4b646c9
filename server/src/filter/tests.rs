use std::sync::Arc;

use super::*;

/// A connection as the filter sees it.
struct Conn {
    id: &'static str,
    user: Option<&'static str>,
    protocol: Option<&'static str>,
    groups: Vec<&'static str>,
}

impl Subject for Conn {
    fn connection_id(&self) -> &str {
        self.id
    }
    fn user_id(&self) -> Option<&str> {
        self.user
    }
    fn protocol(&self) -> Option<&str> {
        self.protocol
    }
    fn groups(&self) -> Vec<Arc<str>> {
        self.groups.iter().map(|g| Arc::from(*g)).collect()
    }
}

fn alice() -> Conn {
    Conn {
        id: "c1",
        user: Some("alice"),
        protocol: Some("json.webpubsub.azure.v1"),
        groups: vec!["group1", "room.a"],
    }
}

fn anonymous() -> Conn {
    Conn {
        id: "c2",
        user: None,
        protocol: None,
        groups: vec![],
    }
}

fn eval(filter: &str, conn: &Conn) -> bool {
    Filter::parse(filter)
        .unwrap_or_else(|e| panic!("{filter:?} should parse: {e}"))
        .matches(conn)
}

fn error(filter: &str) -> FilterError {
    match Filter::parse(filter) {
        Ok(f) => panic!("{filter:?} should be refused, parsed as {f:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_documented_examples() {
    let a = alice();
    assert!(eval("'group1' in groups or 'group2' in groups", &a));
    assert!(eval(
        "userId in ('user1', 'alice') and 'group1' in groups",
        &a
    ));
    assert!(eval("userId eq 'alice' and connectionId ne '123'", &a));
    assert!(!eval(
        "userId eq 'alice' and (not ('group1' in groups))",
        &a
    ));
    assert!(eval("not ('group2' in groups)", &a));
    // As the JS SDK documents it: no space after `not`.
    assert!(!eval("not('group1' in groups)", &a));
    assert!(eval("userId ne 'user1' and userId ne 'user2'", &a));
    assert!(eval("protocol eq 'json.webpubsub.azure.v1'", &a));
    assert!(!eval("protocol eq 'json.webpubsub.azure.v1'", &anonymous()));
}

#[test]
fn quotes_are_escaped_by_doubling() {
    let c = Conn {
        user: Some("user'1"),
        ..alice()
    };
    assert!(eval("userId eq 'user''1'", &c));
    assert!(!eval("userId eq 'user1'", &c));
    assert!(eval("'''' eq concat('''', '')", &c));
    let e = error("userId eq 'user'1'");
    assert_eq!(e.position, 17, "{e}"); // the quote that opens an unterminated string
    let e = error("userId eq 'open");
    assert_eq!(e.position, 10, "{e}");
    assert!(e.message.contains("unterminated"), "{e}");
}

#[test]
fn precedence_not_then_comparison_then_and_then_or() {
    let a = alice();
    // `and` binds tighter than `or`: true or (false and false).
    assert!(eval(
        "userId eq 'alice' or userId eq 'x' and userId eq 'y'",
        &a
    ));
    // Parentheses change it: (true or false) and false.
    assert!(!eval(
        "(userId eq 'alice' or userId eq 'x') and userId eq 'y'",
        &a
    ));
    // `not` applies to the next operand only.
    assert!(
        error("not userId eq 'bob'")
            .message
            .contains("'not' needs a boolean")
    );
    assert!(eval("not false and true", &a));
    assert!(!eval("not (false or true)", &a));
    // `not` binds tighter than comparisons, so this is a type error (spec §5.2).
    let e = error("not length(userId) gt 5");
    assert_eq!(e.position, 0, "{e}");
    assert!(e.message.contains("'not length(userId)'"), "{e}");
    assert!(e.message.contains("an integer"), "{e}");
    assert!(eval("not (length(userId) gt 5)", &a));
}

#[test]
fn keywords_and_identifiers_are_case_insensitive_values_are_not() {
    let a = alice();
    assert!(eval("USERID EQ 'alice' AND 'group1' IN GROUPS", &a));
    assert!(eval("UserId Eq 'alice'", &a));
    assert!(!eval("userId eq 'Alice'", &a));
    assert!(eval("ToUpper(userId) eq 'ALICE'", &a));
}

#[test]
fn null_handling() {
    let anon = anonymous();
    let a = alice();
    assert!(eval("userId eq null", &anon));
    assert!(!eval("userId ne null", &anon));
    assert!(!eval("userId eq null", &a));
    assert!(eval("null eq null", &a));
    // Ordering comparisons are false when a side is null.
    assert!(!eval("length(userId) gt 0", &anon));
    assert!(!eval("length(userId) le 0", &anon));
    assert!(!eval("null lt 1", &a));
    // String functions propagate null; predicates are false; indexof is -1.
    assert!(eval("tolower(userId) eq null", &anon));
    assert!(eval("concat(userId, 'x') eq null", &anon));
    assert!(eval("substring(userId, 1) eq null", &anon));
    assert!(eval("substring('abc', 1, null) eq null", &a));
    assert!(!eval("contains(userId, 'a')", &anon));
    assert!(!eval("startswith(userId, '')", &anon));
    assert!(!eval("endswith(null, '')", &a));
    assert!(eval("indexof(userId, 'a') eq -1", &anon));
    // `in` with null.
    assert!(eval("userId in ('a', null)", &anon));
    assert!(!eval("userId in ('a', 'b')", &anon));
    assert!(!eval("null in groups", &a));
    // A protocol-less (simple) client.
    assert!(eval("protocol eq null", &anon));
}

#[test]
fn every_function() {
    let a = alice();
    assert!(eval("indexof(userId, 'ice') eq 2", &a));
    assert!(eval("indexof(userId, 'zz') eq -1", &a));
    assert!(eval("concat(userId, '!') eq 'alice!'", &a));
    assert!(eval("contains(userId, 'lic')", &a));
    assert!(eval("endswith(userId, 'ce')", &a));
    assert!(eval("startswith(connectionId, 'c')", &a));
    assert!(eval("substring(userId, 1) eq 'lice'", &a));
    assert!(eval("substring(userId, 1, 2) eq 'li'", &a));
    assert!(eval("substring(userId, 10) eq ''", &a));
    assert!(eval("substring(userId, -3, 2) eq 'al'", &a));
    assert!(eval("tolower('ÀB') eq 'àb'", &a));
    assert!(eval("toupper(userId) eq 'ALICE'", &a));
    assert!(eval("trim('  x ') eq 'x'", &a));
    assert!(eval("length(userId) eq 5", &a));
    assert!(eval("length('héllo') eq 5", &a), "characters, not bytes");
    assert!(eval("length(groups) eq 2", &a));
    assert!(eval("length(groups) eq 0", &anonymous()));
    assert!(eval("length((groups)) ge 1", &a));
    assert!(eval("'room.a' in (groups)", &a));
    assert!(eval("indexof('héllo', 'l') eq 2", &a), "character index");
}

#[test]
fn integers_and_booleans() {
    let a = alice();
    assert!(eval("1 lt 2 and 2 le 2 and 3 gt -1 and +4 ge 4", &a));
    assert!(eval("1 eq 1 and 1 ne 2", &a));
    assert!(eval("true", &a));
    assert!(!eval("false", &a));
    assert!(eval("true eq true", &a));
    assert!(eval("length(userId) in (4, 5)", &a));
    let e = error("99999999999999999999 eq 1");
    assert_eq!(e.position, 0);
    assert!(e.message.contains("out of range"), "{e}");
}

#[test]
fn type_errors_point_at_the_operand() {
    for (filter, position, needle) in [
        ("userId gt 1", 0, "an integer"),
        ("userId eq 1", 10, "cannot compare a string"),
        ("userId", 0, "the filter needs a boolean"),
        ("groups eq 'a'", 0, "collection"),
        ("1 in groups", 0, "a string"),
        ("userId in ('a', 1)", 16, "the list"),
        ("userId eq 'a' and 'b'", 18, "'and' needs a boolean"),
        ("'a' or true", 0, "'or' needs a boolean"),
        ("contains(userId, 1)", 17, "argument 2 of contains()"),
        ("length(1) eq 1", 7, "argument 1 of length()"),
        ("substring(userId) eq 'a'", 0, "takes 2 or 3 argument(s)"),
        ("tolower(groups) eq 'a'", 8, "argument 1 of tolower()"),
        ("not 'a'", 0, "'not' needs a boolean"),
    ] {
        let e = error(filter);
        assert_eq!(e.position, position, "{filter}: {e}");
        assert!(e.message.contains(needle), "{filter}: {e}");
    }
}

#[test]
fn syntax_errors_point_at_the_problem() {
    for (filter, position, needle) in [
        ("", 0, "end of the filter"),
        ("userId eq", 9, "end of the filter"),
        ("userId eq 'a' 'b'", 14, "unexpected string 'b'"),
        ("userId eq 'a' and", 17, "end of the filter"),
        ("(userId eq 'a'", 14, "expected ')'"),
        ("userId eq 'a')", 13, "unexpected ')'"),
        ("userId eq 'a' & true", 14, "unexpected character '&'"),
        (
            "userid eq 'a' and nickname eq 'b'",
            18,
            "unknown identifier 'nickname'",
        ),
        ("frobnicate(userId)", 0, "unknown function 'frobnicate'"),
        ("userId in 'a'", 10, "after 'in'"),
        ("userId in ('a' 'b')", 15, "to close the list"),
        ("userId eq and", 10, "keyword 'and'"),
        ("userId eq 'a' eq 'b'", 14, "unexpected 'eq'"),
        (
            "length(userId,) eq 1",
            14,
            "expected an expression, found ')'",
        ),
        ("12ab eq 1", 2, "after a number"),
        ("- 1 eq 1", 0, "sign"),
        ("userId eq 'é' and x", 18, "unknown identifier 'x'"),
    ] {
        let e = error(filter);
        assert_eq!(e.position, position, "{filter}: {e}");
        assert!(e.message.contains(needle), "{filter}: {e}");
    }
    assert_eq!(
        error("userId eq").to_string(),
        "invalid filter at position 9: expected an expression, found the end of the filter"
    );
}

#[test]
fn clause_and_depth_limits() {
    let within = vec!["userId eq 'a'"; MAX_CLAUSES].join(" or ");
    assert!(Filter::parse(&within).is_ok());
    let over = vec!["userId eq 'a'"; MAX_CLAUSES + 1].join(" or ");
    let e = error(&over);
    assert!(e.message.contains("more than 100 clauses"), "{e}");
    assert_eq!(e.position, MAX_CLAUSES * "userId eq 'a' or ".len() + 7);

    let deep = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(Filter::parse(&deep).is_ok());
    let too_deep = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
    let e = error(&too_deep);
    assert!(e.message.contains("nested more than"), "{e}");
    assert_eq!(e.position, MAX_DEPTH);
    let nots = format!("{}true", "not ".repeat(10_000));
    assert!(error(&nots).message.contains("nested more than"));
}

#[test]
fn empty_filter_means_no_filter() {
    assert_eq!(Filter::parse_optional("   "), Ok(None));
    assert!(Filter::parse_optional("true").expect("valid").is_some());
    assert!(Filter::parse_optional("userId eq").is_err());
}

#[test]
fn groups_are_loaded_only_when_needed() {
    struct Counting(std::cell::Cell<usize>);
    impl Subject for Counting {
        fn connection_id(&self) -> &str {
            "c"
        }
        fn user_id(&self) -> Option<&str> {
            Some("u")
        }
        fn protocol(&self) -> Option<&str> {
            None
        }
        fn groups(&self) -> Vec<Arc<str>> {
            self.0.set(self.0.get() + 1);
            vec![Arc::from("g")]
        }
    }
    let subject = Counting(std::cell::Cell::new(0));
    let f = Filter::parse("userId eq 'x' and 'g' in groups").expect("valid");
    assert!(!f.matches(&subject));
    assert_eq!(subject.0.get(), 0, "short-circuited");
    let f = Filter::parse("'g' in groups and length(groups) eq 1 and not ('h' in groups)")
        .expect("valid");
    assert!(f.matches(&subject));
    assert_eq!(subject.0.get(), 1, "loaded once per evaluation");
}
