//! Matching a REST path to an operation (spec §5.1).
//!
//! The path after `/api/hubs/` is split on `/` while still percent-encoded, and only then is
//! each segment decoded: an encoded `/` (`%2F`) inside a group or user id stays part of that
//! segment. Literal segments (`:send`, `groups`, ...) are matched by position, so a group
//! named `:send` or `connections` is still just a group.

use warp::http::Method;

/// A data-plane operation and its path parameters (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    SendToAll,
    CloseAll,
    AddToGroups,
    RemoveFromGroups,
    GenerateToken,
    ConnectionExists(String),
    CloseConnection(String),
    SendToConnection(String),
    RemoveConnectionFromAllGroups(String),
    GroupExists(String),
    SendToGroup(String),
    CloseGroup(String),
    ListGroupConnections(String),
    AddConnectionToGroup {
        group: String,
        connection: String,
    },
    RemoveConnectionFromGroup {
        group: String,
        connection: String,
    },
    UserExists(String),
    SendToUser(String),
    CloseUser(String),
    RemoveUserFromAllGroups(String),
    AddUserToGroup {
        user: String,
        group: String,
    },
    RemoveUserFromGroup {
        user: String,
        group: String,
    },
    GrantPermission {
        permission: String,
        connection: String,
    },
    RevokePermission {
        permission: String,
        connection: String,
    },
    CheckPermission {
        permission: String,
        connection: String,
    },
}

impl Route {
    /// The operation's name, for spans and the `operation` metric label (the same names the
    /// gRPC methods have, in Azure's camel case).
    pub(super) fn name(&self) -> &'static str {
        match self {
            Route::SendToAll => "sendToAll",
            Route::CloseAll => "closeAll",
            Route::AddToGroups => "addToGroups",
            Route::RemoveFromGroups => "removeFromGroups",
            Route::GenerateToken => "generateToken",
            Route::ConnectionExists(_) => "connectionExists",
            Route::CloseConnection(_) => "closeConnection",
            Route::SendToConnection(_) => "sendToConnection",
            Route::RemoveConnectionFromAllGroups(_) => "removeConnectionFromAllGroups",
            Route::GroupExists(_) => "groupExists",
            Route::SendToGroup(_) => "sendToGroup",
            Route::CloseGroup(_) => "closeGroup",
            Route::ListGroupConnections(_) => "listGroupConnections",
            Route::AddConnectionToGroup { .. } => "addConnectionToGroup",
            Route::RemoveConnectionFromGroup { .. } => "removeConnectionFromGroup",
            Route::UserExists(_) => "userExists",
            Route::SendToUser(_) => "sendToUser",
            Route::CloseUser(_) => "closeUser",
            Route::RemoveUserFromAllGroups(_) => "removeUserFromAllGroups",
            Route::AddUserToGroup { .. } => "addUserToGroup",
            Route::RemoveUserFromGroup { .. } => "removeUserFromGroup",
            Route::GrantPermission { .. } => "grantPermission",
            Route::RevokePermission { .. } => "revokePermission",
            Route::CheckPermission { .. } => "checkPermission",
        }
    }
}

/// Why a path did not name an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NoRoute {
    /// A segment is not valid percent-encoded UTF-8.
    BadEncoding,
    /// No operation has this path.
    NotFound,
    /// The path exists, but not with this method; the methods it takes.
    Method(&'static [&'static str]),
}

/// The hub and the operation of `rest` (the raw path after `/api/hubs/`).
pub(super) fn route(method: &Method, rest: &str) -> Result<(String, Route), NoRoute> {
    // The same split as service-token audiences: a `%2F` stays inside its segment.
    let segments = hubcast_auth::path_segments(rest).ok_or(NoRoute::BadEncoding)?;
    let Some((hub, tail)) = segments.split_first() else {
        return Err(NoRoute::NotFound);
    };
    if hub.is_empty() {
        return Err(NoRoute::NotFound);
    }
    let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
    let m = |allowed: &'static [&'static str]| {
        allowed
            .iter()
            .any(|a| method.as_str() == *a)
            .then_some(())
            .ok_or(NoRoute::Method(allowed))
    };
    const POST: &[&str] = &["POST"];
    const HEAD_DELETE: &[&str] = &["HEAD", "DELETE"];
    const PUT_DELETE: &[&str] = &["PUT", "DELETE"];
    const DELETE: &[&str] = &["DELETE"];
    const HEAD: &[&str] = &["HEAD"];
    const GET: &[&str] = &["GET"];
    const PERMISSION: &[&str] = &["PUT", "DELETE", "HEAD"];
    let s = |x: &str| x.to_owned();
    let route = match tail.as_slice() {
        [":send"] => m(POST).map(|()| Route::SendToAll)?,
        [":closeConnections"] => m(POST).map(|()| Route::CloseAll)?,
        [":addToGroups"] => m(POST).map(|()| Route::AddToGroups)?,
        [":removeFromGroups"] => m(POST).map(|()| Route::RemoveFromGroups)?,
        [":generateToken"] => m(POST).map(|()| Route::GenerateToken)?,
        ["connections", id] => {
            m(HEAD_DELETE)?;
            if method == Method::HEAD {
                Route::ConnectionExists(s(id))
            } else {
                Route::CloseConnection(s(id))
            }
        }
        ["connections", id, ":send"] => m(POST).map(|()| Route::SendToConnection(s(id)))?,
        ["connections", id, "groups"] => {
            m(DELETE).map(|()| Route::RemoveConnectionFromAllGroups(s(id)))?
        }
        ["groups", group] => m(HEAD).map(|()| Route::GroupExists(s(group)))?,
        ["groups", group, ":send"] => m(POST).map(|()| Route::SendToGroup(s(group)))?,
        ["groups", group, ":closeConnections"] => m(POST).map(|()| Route::CloseGroup(s(group)))?,
        ["groups", group, "connections"] => {
            m(GET).map(|()| Route::ListGroupConnections(s(group)))?
        }
        ["groups", group, "connections", id] => {
            m(PUT_DELETE)?;
            let (group, connection) = (s(group), s(id));
            if method == Method::PUT {
                Route::AddConnectionToGroup { group, connection }
            } else {
                Route::RemoveConnectionFromGroup { group, connection }
            }
        }
        ["users", user] => m(HEAD).map(|()| Route::UserExists(s(user)))?,
        ["users", user, ":send"] => m(POST).map(|()| Route::SendToUser(s(user)))?,
        ["users", user, ":closeConnections"] => m(POST).map(|()| Route::CloseUser(s(user)))?,
        ["users", user, "groups"] => m(DELETE).map(|()| Route::RemoveUserFromAllGroups(s(user)))?,
        ["users", user, "groups", group] => {
            m(PUT_DELETE)?;
            let (user, group) = (s(user), s(group));
            if method == Method::PUT {
                Route::AddUserToGroup { user, group }
            } else {
                Route::RemoveUserFromGroup { user, group }
            }
        }
        ["permissions", permission, "connections", id] => {
            m(PERMISSION)?;
            let (permission, connection) = (s(permission), s(id));
            match *method {
                Method::PUT => Route::GrantPermission {
                    permission,
                    connection,
                },
                Method::DELETE => Route::RevokePermission {
                    permission,
                    connection,
                },
                _ => Route::CheckPermission {
                    permission,
                    connection,
                },
            }
        }
        _ => return Err(NoRoute::NotFound),
    };
    Ok((hub.clone(), route))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_first_then_decodes_segments() {
        assert_eq!(
            route(&Method::POST, "chat/groups/a%20b%2Fc/:send"),
            Ok(("chat".into(), Route::SendToGroup("a b/c".into())))
        );
        assert_eq!(
            route(&Method::PUT, "chat/users/u%2F1/groups/%3Asend"),
            Ok((
                "chat".into(),
                Route::AddUserToGroup {
                    user: "u/1".into(),
                    group: ":send".into()
                }
            ))
        );
        assert_eq!(
            route(&Method::HEAD, "chat/groups/connections"),
            Ok(("chat".into(), Route::GroupExists("connections".into())))
        );
        assert_eq!(
            route(&Method::HEAD, "chat/permissions/sendToGroup/connections/c1"),
            Ok((
                "chat".into(),
                Route::CheckPermission {
                    permission: "sendToGroup".into(),
                    connection: "c1".into()
                }
            ))
        );
        assert_eq!(
            route(&Method::POST, "chat/:send/"),
            Ok(("chat".into(), Route::SendToAll))
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(route(&Method::POST, "chat/:nope"), Err(NoRoute::NotFound));
        assert_eq!(route(&Method::POST, ""), Err(NoRoute::NotFound));
        assert_eq!(
            route(&Method::POST, "chat/groups/a/b/c/d"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(
            route(&Method::GET, "chat/:send"),
            Err(NoRoute::Method(&["POST"]))
        );
        assert_eq!(
            route(&Method::GET, "chat/groups/%FF"),
            Err(NoRoute::BadEncoding)
        );
    }
}
