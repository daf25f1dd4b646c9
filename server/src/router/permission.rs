//! Per-connection group permissions derived from Azure Web PubSub roles (spec §4.3).
//!
//! A connection starts with the roles of its access token (or of the `connect` event
//! response, which replaces them) and can be granted or revoked permissions at runtime
//! through REST or gRPC. Everything here is pure data: no I/O, no locking.
//!
//! Role strings:
//!
//! | Role | Grants |
//! | --- | --- |
//! | `webpubsub.joinLeaveGroup` | join/leave any group |
//! | `webpubsub.sendToGroup` | publish to any group |
//! | `webpubsub.joinLeaveGroup.<group>` | join/leave exactly `<group>` (which may contain dots) |
//! | `webpubsub.sendToGroup.<group>` | publish to exactly `<group>` |
//! | `webpubsub.joinLeaveGroups.<pattern>` | join/leave groups matching a [`GroupPattern`] |
//! | `webpubsub.sendToGroups.<pattern>` | publish to groups matching a [`GroupPattern`] |

use std::collections::HashSet;
use std::fmt;

/// The most `*` characters a [`GroupPattern`] may contain; `**` counts as two.
///
/// Azure documents "at most 5 `*`" without saying how `**` counts; counting characters is
/// the stricter reading, so every pattern we accept is also accepted by the real service.
pub const MAX_PATTERN_STARS: usize = 5;

/// A permission a connection can hold for one group, a pattern of groups, or all groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Publish messages to a group (`sendToGroup` in REST/gRPC, `webpubsub.sendToGroup*` roles).
    SendToGroup,
    /// Join and leave a group from the client (`joinLeaveGroup`, `webpubsub.joinLeaveGroup*`).
    JoinLeaveGroup,
}

impl Permission {
    /// Parses the REST/gRPC name, `sendToGroup` or `joinLeaveGroup` (ASCII case-insensitive).
    ///
    /// Returns `None` for anything else so the edge can answer 400 with its own message.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("sendToGroup") {
            Some(Self::SendToGroup)
        } else if s.eq_ignore_ascii_case("joinLeaveGroup") {
            Some(Self::JoinLeaveGroup)
        } else {
            None
        }
    }

    /// The canonical REST/gRPC name (`sendToGroup` or `joinLeaveGroup`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendToGroup => "sendToGroup",
            Self::JoinLeaveGroup => "joinLeaveGroup",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Permissions ===

/// What one connection may do with groups beyond sending `event` messages.
///
/// Built from role strings with [`Permissions::from_roles`] and changed at runtime with
/// [`grant`](Permissions::grant) and [`revoke`](Permissions::revoke). The default value holds
/// no permission at all (a token without roles).
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    /// Grants for [`Permission::SendToGroup`].
    send: Grants,
    /// Grants for [`Permission::JoinLeaveGroup`].
    join_leave: Grants,
}

/// The grants of one [`Permission`]: all groups, exact groups, and wildcard patterns.
#[derive(Debug, Clone, Default)]
struct Grants {
    /// Holds the permission for every group (`webpubsub.sendToGroup`, or a grant without target).
    all: bool,
    /// Exact group names (case-sensitive, like group names everywhere).
    exact: HashSet<String>,
    /// Compiled wildcard patterns, without duplicates; usually zero to a handful.
    patterns: Vec<GroupPattern>,
}

impl Grants {
    fn allows(&self, group: &str) -> bool {
        self.all || self.exact.contains(group) || self.patterns.iter().any(|p| p.matches(group))
    }

    fn add_pattern(&mut self, pattern: GroupPattern) {
        if !self.patterns.contains(&pattern) {
            self.patterns.push(pattern);
        }
    }
}

/// Which grant a role string asks for, before its pattern (if any) is compiled.
enum RoleGrant<'a> {
    All,
    Exact(&'a str),
    Pattern(&'a str),
}

impl Permissions {
    /// Builds the permissions of a connection from its role strings (the token `role` claim,
    /// or the `roles` of a `connect` event response).
    ///
    /// Role names are matched ASCII case-insensitively; the group or pattern after them is
    /// case-sensitive. Unknown roles, roles with an empty group (`webpubsub.sendToGroup.`)
    /// and roles with an invalid pattern are skipped and returned as the second element so
    /// the caller can log them: one bad role must not refuse the whole connection.
    pub fn from_roles<S: AsRef<str>>(roles: &[S]) -> (Self, Vec<String>) {
        let mut permissions = Self::default();
        let mut rejected = Vec::new();
        for role in roles {
            let role = role.as_ref();
            if !permissions.add_role(role) {
                rejected.push(role.to_owned());
            }
        }
        (permissions, rejected)
    }

    /// Adds one role; returns false if it is unknown or invalid (and then changes nothing).
    fn add_role(&mut self, role: &str) -> bool {
        let Some((permission, grant)) = parse_role(role) else {
            return false;
        };
        let grants = self.grants_mut(permission);
        match grant {
            RoleGrant::All => grants.all = true,
            RoleGrant::Exact(group) => {
                grants.exact.insert(group.to_owned());
            }
            RoleGrant::Pattern(pattern) => match GroupPattern::parse(pattern) {
                Ok(pattern) => grants.add_pattern(pattern),
                Err(_) => return false,
            },
        }
        true
    }

    /// Whether the connection may do `permission` on `group`: it holds the all-groups grant,
    /// an exact grant for `group`, or a pattern that matches `group`.
    pub fn allows(&self, permission: Permission, group: &str) -> bool {
        self.grants(permission).allows(group)
    }

    /// Grants `permission` at runtime (REST/gRPC "grant permission").
    ///
    /// `None` grants it for all groups; `Some(group)` for exactly `group`. Granting twice is
    /// a no-op.
    pub fn grant(&mut self, permission: Permission, target: Option<&str>) {
        let grants = self.grants_mut(permission);
        match target {
            None => grants.all = true,
            Some(group) => {
                grants.exact.insert(group.to_owned());
            }
        }
    }

    /// Revokes `permission` at runtime (REST/gRPC "revoke permission").
    ///
    /// - `None` removes every grant of that permission: the all-groups grant, every exact
    ///   group and every pattern. Afterwards [`allows`](Self::allows) is false for any group.
    /// - `Some(group)` removes only the exact grant for `group`. It does not carve an exception
    ///   out of an all-groups grant or a matching pattern: if one of those is held, the
    ///   connection still has the permission on `group`.
    ///
    /// Revoking something that is not held is a no-op.
    pub fn revoke(&mut self, permission: Permission, target: Option<&str>) {
        let grants = self.grants_mut(permission);
        match target {
            None => *grants = Grants::default(),
            Some(group) => {
                grants.exact.remove(group);
            }
        }
    }

    /// The REST "check permission" answer.
    ///
    /// `None` asks whether the connection holds the all-groups grant (an exact grant or a
    /// pattern is not enough); `Some(group)` is [`allows`](Self::allows)`(permission, group)`.
    pub fn check(&self, permission: Permission, target: Option<&str>) -> bool {
        match target {
            None => self.grants(permission).all,
            Some(group) => self.allows(permission, group),
        }
    }

    fn grants(&self, permission: Permission) -> &Grants {
        match permission {
            Permission::SendToGroup => &self.send,
            Permission::JoinLeaveGroup => &self.join_leave,
        }
    }

    fn grants_mut(&mut self, permission: Permission) -> &mut Grants {
        match permission {
            Permission::SendToGroup => &mut self.send,
            Permission::JoinLeaveGroup => &mut self.join_leave,
        }
    }
}

/// Splits a role string into its permission and what it applies to.
fn parse_role(role: &str) -> Option<(Permission, RoleGrant<'_>)> {
    const ROLES: [(&str, Permission); 2] = [
        ("webpubsub.sendToGroup", Permission::SendToGroup),
        ("webpubsub.joinLeaveGroup", Permission::JoinLeaveGroup),
    ];
    for (name, permission) in ROLES {
        let Some(rest) = strip_prefix_ignore_ascii_case(role, name) else {
            continue;
        };
        if rest.is_empty() {
            return Some((permission, RoleGrant::All));
        }
        if let Some(group) = rest.strip_prefix('.') {
            return (!group.is_empty()).then_some((permission, RoleGrant::Exact(group)));
        }
        // `s.` is ASCII, so slicing after it stays on a char boundary.
        if rest.len() > 2 && rest.as_bytes()[..2].eq_ignore_ascii_case(b"s.") {
            return Some((permission, RoleGrant::Pattern(&rest[2..])));
        }
        return None;
    }
    None
}

fn strip_prefix_ignore_ascii_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `prefix` is ASCII, so if the bytes match, `prefix.len()` is a char boundary of `s`.
    let head = s.as_bytes().get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix.as_bytes())
        .then(|| &s[prefix.len()..])
}

// === impl GroupPattern ===

/// Why a wildcard group pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is the empty string.
    #[error("group pattern is empty")]
    Empty,
    /// The pattern ends with a lone `\`.
    #[error("group pattern ends with an unfinished escape `\\`")]
    TrailingBackslash,
    /// A `\` is followed by something other than `\`, `*` or `?`.
    #[error(
        "invalid escape `\\{escaped}` at character {index} of the group pattern: only `\\\\`, `\\*` and `\\?` are allowed"
    )]
    InvalidEscape {
        /// The character after the backslash.
        escaped: char,
        /// Zero-based char index of the backslash in the pattern.
        index: usize,
    },
    /// More than [`MAX_PATTERN_STARS`] unescaped `*` characters.
    #[error(
        "group pattern has {count} `*` characters; at most {MAX_PATTERN_STARS} are allowed (`**` counts as 2)"
    )]
    TooManyStars {
        /// How many unescaped `*` characters the pattern has.
        count: usize,
    },
}

/// A compiled wildcard group pattern (spec §4.3), as used by
/// `webpubsub.sendToGroups.<pattern>` and `webpubsub.joinLeaveGroups.<pattern>`.
///
/// Syntax: `?` matches exactly one character except `.`; `*` matches zero or more
/// characters except `.`; `**` matches zero or more characters including `.`; `\` escapes
/// `\`, `*` and `?`; every other character, `.` included, matches itself. Matching is
/// case-sensitive and works on chars, not bytes. At most [`MAX_PATTERN_STARS`] `*` are
/// allowed.
///
/// Matching simulates the pattern as a small automaton, one pass over the group name:
/// O(group chars × pattern tokens) time, no backtracking, whatever the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPattern {
    /// The pattern as written, for logs and for spotting duplicates.
    source: String,
    /// The compiled pattern; never empty.
    tokens: Vec<Token>,
}

/// One element of a compiled [`GroupPattern`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// A literal character (including `.` and escaped `\`, `*`, `?`).
    Char(char),
    /// `?`: exactly one character except `.`.
    One,
    /// `*`: zero or more characters except `.`.
    Star,
    /// `**`: zero or more characters including `.`.
    DoubleStar,
}

impl Token {
    /// Whether the token can match the empty string.
    fn is_star(self) -> bool {
        matches!(self, Self::Star | Self::DoubleStar)
    }
}

impl GroupPattern {
    /// Compiles a pattern.
    ///
    /// # Errors
    ///
    /// [`PatternError`] if the pattern is empty, has an invalid or unfinished escape, or has
    /// more than [`MAX_PATTERN_STARS`] `*` characters.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut stars = 0;
        let mut chars = pattern.chars().enumerate().peekable();
        while let Some((index, c)) = chars.next() {
            let token = match c {
                '\\' => match chars.next() {
                    Some((_, escaped @ ('\\' | '*' | '?'))) => Token::Char(escaped),
                    Some((_, escaped)) => {
                        return Err(PatternError::InvalidEscape { escaped, index });
                    }
                    None => return Err(PatternError::TrailingBackslash),
                },
                '?' => Token::One,
                '*' if chars.next_if(|&(_, next)| next == '*').is_some() => {
                    stars += 2;
                    Token::DoubleStar
                }
                '*' => {
                    stars += 1;
                    Token::Star
                }
                c => Token::Char(c),
            };
            tokens.push(token);
        }
        if stars > MAX_PATTERN_STARS {
            return Err(PatternError::TooManyStars { count: stars });
        }
        Ok(Self {
            source: pattern.to_owned(),
            tokens,
        })
    }

    /// The pattern as it was written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `group` matches the whole pattern (case-sensitive).
    pub fn matches(&self, group: &str) -> bool {
        let tokens = &self.tokens;
        // `current[i]`: the first `i` tokens can match the group chars read so far.
        let mut current = vec![false; tokens.len() + 1];
        let mut next = vec![false; tokens.len() + 1];
        current[0] = true;
        close_over_stars(tokens, &mut current);
        for c in group.chars() {
            next.fill(false);
            let mut any = false;
            for (i, &token) in tokens.iter().enumerate() {
                if !current[i] {
                    continue;
                }
                match token {
                    Token::Char(expected) if expected == c => next[i + 1] = true,
                    Token::One if c != '.' => next[i + 1] = true,
                    // A star consumes the char and stays ready for more.
                    Token::Star if c != '.' => next[i] = true,
                    Token::DoubleStar => next[i] = true,
                    _ => continue,
                }
                any = true;
            }
            if !any {
                return false;
            }
            close_over_stars(tokens, &mut next);
            std::mem::swap(&mut current, &mut next);
        }
        current[tokens.len()]
    }
}

/// Adds the states reachable by letting stars match nothing (one forward pass suffices,
/// since such moves only go from token `i` to `i + 1`).
fn close_over_stars(tokens: &[Token], states: &mut [bool]) {
    for (i, token) in tokens.iter().enumerate() {
        if states[i] && token.is_star() {
            states[i + 1] = true;
        }
    }
}

impl fmt::Display for GroupPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::{JoinLeaveGroup as Join, SendToGroup as SendTo};

    fn perms(roles: &[&str]) -> Permissions {
        let (permissions, rejected) = Permissions::from_roles(roles);
        assert!(
            rejected.is_empty(),
            "unexpected rejected roles: {rejected:?}"
        );
        permissions
    }

    fn pattern(p: &str) -> GroupPattern {
        GroupPattern::parse(p).expect("valid pattern")
    }

    #[test]
    fn permission_names() {
        assert_eq!(Permission::parse("sendToGroup"), Some(SendTo));
        assert_eq!(Permission::parse("SENDTOGROUP"), Some(SendTo));
        assert_eq!(Permission::parse("joinleavegroup"), Some(Join));
        assert_eq!(Permission::parse("joinLeaveGroups"), None);
        assert_eq!(Permission::parse(""), None);
        assert_eq!(SendTo.as_str(), "sendToGroup");
        assert_eq!(Join.to_string(), "joinLeaveGroup");
    }

    #[test]
    fn no_roles_no_permissions() {
        let p = perms(&[]);
        assert!(!p.allows(SendTo, "room1"));
        assert!(!p.allows(Join, "room1"));
        assert!(!p.check(SendTo, None));
    }

    #[test]
    fn global_roles() {
        let p = perms(&["webpubsub.joinLeaveGroup"]);
        assert!(p.allows(Join, "anything"));
        assert!(p.allows(Join, "a.b.c"));
        assert!(!p.allows(SendTo, "anything"));
        assert!(p.check(Join, None));

        let p = perms(&["webpubsub.sendToGroup"]);
        assert!(p.allows(SendTo, "anything"));
        assert!(!p.allows(Join, "anything"));
        assert!(p.check(SendTo, None));
        assert!(!p.check(Join, None));
    }

    #[test]
    fn exact_group_roles() {
        let p = perms(&[
            "webpubsub.sendToGroup.room1",
            "webpubsub.joinLeaveGroup.room2",
        ]);
        assert!(p.allows(SendTo, "room1"));
        assert!(!p.allows(SendTo, "room2"));
        assert!(!p.allows(SendTo, "Room1"), "group names are case-sensitive");
        assert!(!p.allows(SendTo, "room10"));
        assert!(p.allows(Join, "room2"));
        assert!(!p.allows(Join, "room1"));
        assert!(
            !p.check(SendTo, None),
            "an exact grant is not the all-groups grant"
        );
        assert!(p.check(SendTo, Some("room1")));
    }

    #[test]
    fn exact_group_containing_dots() {
        let p = perms(&[
            "webpubsub.sendToGroup.clientA.rooms.1",
            "webpubsub.joinLeaveGroup.a.b",
        ]);
        assert!(p.allows(SendTo, "clientA.rooms.1"));
        assert!(!p.allows(SendTo, "clientA"));
        assert!(!p.allows(SendTo, "clientA.rooms"));
        assert!(p.allows(Join, "a.b"));
        assert!(!p.allows(Join, "a"));
    }

    #[test]
    fn exact_group_that_looks_like_a_pattern_is_literal() {
        let p = perms(&["webpubsub.sendToGroup.chat-*"]);
        assert!(p.allows(SendTo, "chat-*"));
        assert!(!p.allows(SendTo, "chat-1"));
    }

    #[test]
    fn pattern_roles() {
        let p = perms(&[
            "webpubsub.sendToGroups.chat-*",
            "webpubsub.joinLeaveGroups.clientA.**",
        ]);
        assert!(p.allows(SendTo, "chat-1"));
        assert!(p.allows(SendTo, "chat-"));
        assert!(!p.allows(SendTo, "chat.1"));
        assert!(!p.allows(Join, "chat-1"));
        assert!(p.allows(Join, "clientA.alpha.room1"));
        assert!(!p.allows(Join, "clientB.alpha"));
        assert!(!p.allows(SendTo, "clientA.alpha"));
        assert!(
            !p.check(SendTo, None),
            "a pattern is not the all-groups grant"
        );
        assert!(p.check(Join, Some("clientA.x")));
    }

    #[test]
    fn role_names_are_case_insensitive() {
        let p = perms(&["WebPubSub.SendToGroup.Room", "WEBPUBSUB.JOINLEAVEGROUPS.a*"]);
        assert!(p.allows(SendTo, "Room"));
        assert!(!p.allows(SendTo, "room"));
        assert!(p.allows(Join, "abc"));
        assert!(!p.allows(Join, "Abc"));
    }

    #[test]
    fn unknown_and_invalid_roles_are_rejected() {
        let roles = [
            "webpubsub.sendToGroup.ok",
            "webpubsub.sendToGroup.",
            "webpubsub.sendToGroups.",
            "webpubsub.sendToGroups.a\\b",
            "webpubsub.joinLeaveGroups.******",
            "webpubsub.sendToGroupX",
            "webpubsub.publish",
            "admin",
            "",
        ];
        let (p, rejected) = Permissions::from_roles(&roles);
        assert_eq!(
            rejected,
            roles[1..].iter().map(|r| r.to_string()).collect::<Vec<_>>()
        );
        assert!(p.allows(SendTo, "ok"));
        assert!(!p.allows(SendTo, "a\\b"));
        assert!(!p.check(SendTo, None));
        assert!(!p.check(Join, None));
    }

    #[test]
    fn from_roles_accepts_owned_strings() {
        let roles = vec![String::from("webpubsub.sendToGroup")];
        let (p, rejected) = Permissions::from_roles(&roles);
        assert!(rejected.is_empty());
        assert!(p.check(SendTo, None));
    }

    #[test]
    fn grant_revoke_check() {
        let mut p = Permissions::default();
        p.grant(SendTo, Some("room1"));
        assert!(p.allows(SendTo, "room1"));
        assert!(p.check(SendTo, Some("room1")));
        assert!(!p.check(SendTo, None));
        assert!(!p.allows(Join, "room1"));

        p.grant(SendTo, None);
        assert!(p.check(SendTo, None));
        assert!(p.allows(SendTo, "other"));

        // Revoking one group does not carve an exception out of the all-groups grant.
        p.revoke(SendTo, Some("room1"));
        assert!(p.allows(SendTo, "room1"));

        p.revoke(SendTo, None);
        assert!(!p.check(SendTo, None));
        assert!(!p.allows(SendTo, "room1"));
        assert!(!p.allows(SendTo, "other"));

        p.grant(Join, Some("a"));
        p.grant(Join, Some("b"));
        p.revoke(Join, Some("a"));
        assert!(!p.allows(Join, "a"));
        assert!(p.allows(Join, "b"));
        p.revoke(Join, Some("not-held"));
        assert!(p.allows(Join, "b"));
    }

    #[test]
    fn revoke_all_removes_roles_and_patterns() {
        let mut p = perms(&[
            "webpubsub.sendToGroup",
            "webpubsub.sendToGroup.x",
            "webpubsub.sendToGroups.chat-*",
            "webpubsub.joinLeaveGroup",
        ]);
        p.revoke(SendTo, Some("chat-1"));
        assert!(p.allows(SendTo, "chat-1"));
        p.revoke(SendTo, None);
        assert!(!p.allows(SendTo, "x"));
        assert!(!p.allows(SendTo, "chat-1"));
        assert!(!p.check(SendTo, None));
        assert!(p.check(Join, None), "other permission untouched");
    }

    #[test]
    fn duplicate_patterns_are_stored_once() {
        let p = perms(&["webpubsub.sendToGroups.a*", "webpubsub.sendToGroups.a*"]);
        assert_eq!(p.send.patterns.len(), 1);
    }

    #[test]
    fn pattern_examples_from_the_spec() {
        let p = pattern("chat-*");
        assert!(p.matches("chat-1"));
        assert!(p.matches("chat-"));
        assert!(p.matches("chat-abc"));
        assert!(!p.matches("chat.1"));
        assert!(!p.matches("chat-1.x"));
        assert!(!p.matches("Chat-1"));

        let p = pattern("clientA.**");
        assert!(p.matches("clientA.alpha.room1"));
        assert!(p.matches("clientA."));
        assert!(p.matches("clientA.x"));
        assert!(!p.matches("clientA"));
        assert!(!p.matches("clientB.alpha"));

        let p = pattern("clientA.rooms.?1");
        assert!(p.matches("clientA.rooms.a1"));
        assert!(!p.matches("clientA.rooms.1"));
        assert!(!p.matches("clientA.rooms..1"));
        assert!(!p.matches("clientA.rooms.ab1"));

        let p = pattern("a\\*b");
        assert!(p.matches("a*b"));
        assert!(!p.matches("ab"));
        assert!(!p.matches("axb"));
        assert!(!p.matches("a\\*b"));
    }

    #[test]
    fn pattern_escapes() {
        let p = pattern("a\\?\\\\");
        assert!(p.matches("a?\\"));
        assert!(!p.matches("ab\\"));
        assert_eq!(p.as_str(), "a\\?\\\\");

        assert_eq!(
            GroupPattern::parse("a\\b"),
            Err(PatternError::InvalidEscape {
                escaped: 'b',
                index: 1
            })
        );
        assert_eq!(
            GroupPattern::parse("é\\."),
            Err(PatternError::InvalidEscape {
                escaped: '.',
                index: 1
            })
        );
        assert_eq!(
            GroupPattern::parse("abc\\"),
            Err(PatternError::TrailingBackslash)
        );
        assert_eq!(
            GroupPattern::parse("\\"),
            Err(PatternError::TrailingBackslash)
        );
        assert_eq!(GroupPattern::parse(""), Err(PatternError::Empty));
    }

    #[test]
    fn star_limit() {
        assert!(GroupPattern::parse("*.*.*.*.*").is_ok());
        assert!(GroupPattern::parse("**.**.*").is_ok());
        assert!(
            GroupPattern::parse("a\\*\\*\\*\\*\\*\\**").is_ok(),
            "escaped stars don't count"
        );
        assert_eq!(
            GroupPattern::parse("*.*.*.*.*.*"),
            Err(PatternError::TooManyStars { count: 6 })
        );
        assert_eq!(
            GroupPattern::parse("**.**.**"),
            Err(PatternError::TooManyStars { count: 6 })
        );
        let message = PatternError::TooManyStars { count: 6 }.to_string();
        assert!(message.contains("at most 5"), "{message}");
    }

    #[test]
    fn pattern_edge_cases() {
        assert!(pattern("**").matches(""));
        assert!(pattern("**").matches("a.b.c"));
        assert!(pattern("*").matches(""));
        assert!(pattern("*").matches("abc"));
        assert!(!pattern("*").matches("a.b"));
        assert!(pattern("*.*").matches("."));
        assert!(pattern("a**b").matches("ab"));
        assert!(pattern("a**b").matches("a.x.b"));
        assert!(!pattern("a**b").matches("a.x.c"));
        assert!(pattern("***").matches("a.b"), "`**` then `*`");
        assert!(pattern("?").matches("é"), "one char, not one byte");
        assert!(!pattern("?").matches(""));
        assert!(!pattern("?").matches("."));
        assert!(pattern("日本.*").matches("日本.語"));
        assert!(pattern("*a*b").matches("xaxb"));
        assert!(!pattern("*a*b").matches("xaxbx"));
        assert!(pattern("x").matches("x"));
        assert!(!pattern("x").matches("xx"));
        assert!(!pattern("x").matches(""));
    }

    #[test]
    fn pathological_pattern_is_linear() {
        let p = pattern("*a*a*a*a*a");
        let group = "a".repeat(10_000) + "b";
        assert!(!p.matches(&group));
        let group = "a".repeat(10_000);
        assert!(p.matches(&group));
        let p = pattern("**a**a*b");
        assert!(!p.matches(&"a.".repeat(5_000)));
    }
}
