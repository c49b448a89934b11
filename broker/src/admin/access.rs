//! The admin commands of access control: `acl.check`, `ban.add`,
//! `ban.remove`, `ban.list` and `reload` (docs/admin-protocol.md).

use super::backend::{AdminError, ErrorCode};
use ringmq_shard::access::acl::Access;
use ringmq_shard::access::bans::{Ban, Target};
use ringmq_shard::access::Shared;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// `acl.check`: the decision and the rule that made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AclCheck {
    pub allowed: bool,
    /// `FILE:LINE: rule` of the deciding rule, if one matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why, in words.
    pub reason: String,
}

/// One ban as `ban.list` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BanInfo {
    pub kind: String,
    pub value: String,
    /// Seconds left (absent: until removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    /// Set by repeated authentication failures.
    pub auto: bool,
}

/// One part of a reload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReloadPart {
    pub part: String,
    pub ok: bool,
    pub message: String,
}

fn bad(msg: impl Into<String>) -> AdminError {
    AdminError::new(ErrorCode::BadRequest, msg)
}

/// `acl.check USER CLIENT_ID TOPIC read|write` (`username` absent: anonymous).
pub fn acl_check(
    shared: &Shared,
    username: Option<&str>,
    client_id: &str,
    topic: &str,
    access: &str,
) -> Result<AclCheck, AdminError> {
    let access = match access {
        "read" => Access::Read,
        "write" => Access::Write,
        a => return Err(bad(format!("access \"{a}\" is not read or write"))),
    };
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err(bad(format!("\"{topic}\" is not a topic name")));
    }
    let Some(acl) = shared.acl() else {
        return Ok(AclCheck {
            allowed: true,
            rule: None,
            reason: "no ACL file: every client may do anything".into(),
        });
    };
    if access == Access::Write && topic.starts_with("$SYS") {
        return Ok(AclCheck {
            allowed: false,
            rule: None,
            reason: "no client publishes under $SYS".into(),
        });
    }
    let d = acl.check(username, client_id, topic, access);
    let reason = match (d.line, d.dangerous) {
        (Some(_), _) if d.allowed => "granted by the rule".to_string(),
        (Some(_), _) => "denied by the rule".to_string(),
        (None, true) => {
            "denied: + or # in the username or client id (patterns do not apply)".into()
        }
        (None, false) => "denied: no rule matched".into(),
    };
    Ok(AclCheck {
        allowed: d.allowed,
        rule: d
            .line
            .map(|l| format!("{}:{l}: {}", acl.file, acl.describe(l))),
        reason,
    })
}

fn info(b: &Ban) -> BanInfo {
    BanInfo {
        kind: b.target.kind().into(),
        value: b.target.value(),
        expires_in_secs: b.until.map(|u| {
            u.duration_since(SystemTime::now())
                .map_or(0, |d| d.as_secs())
        }),
        auto: b.auto,
    }
}

/// `ban.add KIND VALUE [duration_secs]`.
pub fn ban_add(
    shared: &Shared,
    kind: &str,
    value: &str,
    duration_secs: Option<u64>,
) -> Result<BanInfo, AdminError> {
    let t = Target::parse(kind, value).map_err(bad)?;
    if duration_secs == Some(0) {
        return Err(bad(
            "duration_secs must be at least 1 (absent: until removed)",
        ));
    }
    shared
        .bans
        .add(t.clone(), duration_secs.map(Duration::from_secs));
    tracing::info!(kind = t.kind(), value = %t.value(), duration_secs, "ban added");
    let l = shared.bans.list();
    let b = l
        .iter()
        .find(|b| b.target == t)
        .ok_or_else(|| AdminError::new(ErrorCode::Internal, "the ban expired as it was added"))?;
    Ok(info(b))
}

/// `ban.remove KIND VALUE`.
pub fn ban_remove(shared: &Shared, kind: &str, value: &str) -> Result<(), AdminError> {
    let t = Target::parse(kind, value).map_err(bad)?;
    if shared.bans.remove(&t) {
        tracing::info!(kind = t.kind(), value = %t.value(), "ban removed");
        Ok(())
    } else {
        Err(AdminError::not_found(format!(
            "no ban on {} {}",
            t.kind(),
            t.value()
        )))
    }
}

/// `ban.list`.
pub fn ban_list(shared: &Shared) -> Vec<BanInfo> {
    shared.bans.list().iter().map(info).collect()
}

/// `reload`: one part each.
pub fn reload_parts(outcomes: Vec<ringmq_shard::access::reload::Outcome>) -> Vec<ReloadPart> {
    outcomes
        .into_iter()
        .map(|o| ReloadPart {
            part: o.name,
            ok: o.ok,
            message: o.message,
        })
        .collect()
}
