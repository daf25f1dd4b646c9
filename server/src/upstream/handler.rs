//! Which events a handler or a listener takes: a user-event pattern and a set of system
//! events (spec §6.1), shared by webhook handlers and stream subscriptions.

use super::event::EventName;

/// The user events selected by a pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum UserEvents {
    /// None (no pattern, or an empty one).
    #[default]
    None,
    /// `*`.
    All,
    /// A name or a comma-separated list, lower-cased.
    Names(Vec<String>),
}

/// A selection of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selection {
    user: UserEvents,
    connect: bool,
    connected: bool,
    disconnected: bool,
    joined: bool,
    left: bool,
}

impl Selection {
    /// Parses a user-event pattern (`*`, a name, or `a,b,c`; case-insensitive; `None` or
    /// empty selects none) and system event names.
    ///
    /// # Errors
    /// An unknown system event name, or an empty name in the list.
    pub(crate) fn new<'a>(
        pattern: Option<&str>,
        system_events: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, String> {
        let pattern = pattern.map(str::trim).unwrap_or("");
        let user = if pattern.is_empty() {
            UserEvents::None
        } else if pattern == "*" {
            UserEvents::All
        } else {
            let names = pattern
                .split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .collect::<Vec<_>>();
            if names.iter().any(|n| n.is_empty() || n == "*") {
                return Err(format!(
                    "user_event_pattern '{pattern}' must be `*`, a name, or a comma-separated list of names"
                ));
            }
            UserEvents::Names(names)
        };
        let mut selection = Self {
            user,
            ..Self::default()
        };
        for name in system_events {
            match name.trim().to_ascii_lowercase().as_str() {
                "connect" => selection.connect = true,
                "connected" => selection.connected = true,
                "disconnected" => selection.disconnected = true,
                "joined" => selection.joined = true,
                "left" => selection.left = true,
                other => {
                    return Err(format!(
                        "unknown system event '{other}': expected connect, connected, disconnected, joined or left"
                    ));
                }
            }
        }
        Ok(selection)
    }

    /// Adds a system event (for stream subscriptions, whose kinds are already typed).
    pub(crate) fn with_system(mut self, event: EventName<'_>) -> Self {
        match event {
            EventName::Connect => self.connect = true,
            EventName::Connected => self.connected = true,
            EventName::Disconnected => self.disconnected = true,
            EventName::Joined => self.joined = true,
            EventName::Left => self.left = true,
            EventName::User(_) => {}
        }
        self
    }

    /// Whether the event is selected.
    pub(crate) fn selects(&self, event: &EventName<'_>) -> bool {
        match event {
            EventName::Connect => self.connect,
            EventName::Connected => self.connected,
            EventName::Disconnected => self.disconnected,
            EventName::Joined => self.joined,
            EventName::Left => self.left,
            EventName::User(name) => match &self.user {
                UserEvents::None => false,
                UserEvents::All => true,
                UserEvents::Names(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_select_case_insensitively() {
        let s = Selection::new(Some(" Chat , typing"), ["connect"]).expect("valid");
        assert!(s.selects(&EventName::User("chat")));
        assert!(s.selects(&EventName::User("TYPING")));
        assert!(!s.selects(&EventName::User("message")));
        assert!(s.selects(&EventName::Connect));
        assert!(!s.selects(&EventName::Connected));
        let all = Selection::new(Some("*"), []).expect("valid");
        assert!(all.selects(&EventName::User("anything")));
        assert!(!all.selects(&EventName::Disconnected));
        let none = Selection::new(None, ["disconnected"]).expect("valid");
        assert!(!none.selects(&EventName::User("message")));
        assert!(none.selects(&EventName::Disconnected));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Selection::new(Some("a,,b"), []).is_err());
        assert!(Selection::new(None, ["message"]).is_err());
    }

    #[test]
    fn group_presence_events_are_system_events() {
        let s = Selection::new(None, ["joined", "Left"]).expect("valid");
        assert!(s.selects(&EventName::Joined));
        assert!(s.selects(&EventName::Left));
        assert!(!s.selects(&EventName::Connected));
        assert_eq!(EventName::Joined.ce_type(), "azure.webpubsub.gp.joined");
        assert_eq!(EventName::Left.ce_type(), "azure.webpubsub.gp.left");
        assert!(!EventName::Left.is_blocking());
    }
}
