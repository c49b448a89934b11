//! Mosquitto's `acl_file`, read and decided as Mosquitto 2.x does.
//!
//! Format (`man 5 mosquitto.conf`, "acl_file"): lines before any `user` line
//! apply to anonymous clients; `user NAME` starts a user's section;
//! `topic [read|write|readwrite|deny] FILTER` (no access word: readwrite);
//! `pattern [..] FILTER` applies to every client, with `%c` (client id) and
//! `%u` (username) substituted where they are a whole level; a line starting
//! with `#` is a comment.
//!
//! Decision (Mosquitto 2.x `mosquitto_acl_check_default`): the client's own
//! rules (its user's, or the anonymous section's), deny rules first, then
//! the others in file order; the first rule whose filter matches the topic
//! decides if it denies or grants the access asked; then the same over the
//! patterns; nothing matched: denied. A filter only matches a `$` topic if
//! it starts with `$` itself. A username or client id holding `+` or `#`
//! gets no access from patterns (a crafted id must not widen a pattern).
//!
//! Deliberate differences, each failing closed: an unknown keyword is a
//! parse error (Mosquitto ignores the line, so a misspelt `deny` grants);
//! `%c`/`%u` must equal one whole topic level (Mosquitto 2.x compares only
//! up to the next `/` of the topic, so client id `ab` also matched level
//! `a`); an id containing `/` never matches a pattern level.

use crate::topic::{is_dollar, levels, matches};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Read access (receive a message).
pub const READ: u8 = 1;
/// Write access (publish a message).
pub const WRITE: u8 = 2;

/// What is asked of the ACL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn bit(self) -> u8 {
        match self {
            Access::Read => READ,
            Access::Write => WRITE,
        }
    }
}

/// One `topic` or `pattern` line. `grant` 0 is `deny`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub grant: u8,
    pub filter: String,
    /// Line number in the file (1-based).
    pub line: u32,
    pub pattern: bool,
}

impl Rule {
    fn grant_str(&self) -> &'static str {
        match self.grant {
            0 => "deny",
            READ => "read",
            WRITE => "write",
            _ => "readwrite",
        }
    }
}

/// A parsed ACL file.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    /// The file it was read from (for messages).
    pub file: String,
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// Why an ACL file was refused: file, line and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    /// 0 when the file could not be read at all.
    pub line: u32,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

/// Is `f` a valid subscription filter (Mosquitto's `mosquitto_sub_topic_check`)?
fn valid_filter(f: &str) -> bool {
    if f.is_empty() || f.len() > 65535 {
        return false;
    }
    let n = levels(f).count();
    levels(f).enumerate().all(|(i, l)| match l {
        "#" => i + 1 == n,
        "+" => true,
        l => !l.contains(['+', '#']),
    })
}

/// Adds a rule to a list as Mosquitto does: deny rules before every grant.
fn push_rule(list: &mut Vec<Rule>, r: Rule) {
    if r.grant == 0 {
        let at = list.iter().position(|x| x.grant != 0).unwrap_or(list.len());
        list.insert(at, r);
    } else {
        list.push(r);
    }
}

impl Acl {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Acl, ParseError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ParseError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Acl::parse(&text, &file)
    }

    /// Parses the text of an ACL file named `file`.
    pub fn parse(text: &str, file: &str) -> Result<Acl, ParseError> {
        let mut acl = Acl {
            file: file.to_string(),
            ..Acl::default()
        };
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = (i + 1) as u32;
            let err = |message: String| ParseError {
                file: file.to_string(),
                line,
                message,
            };
            let l = raw.trim();
            if l.starts_with('#') {
                continue;
            }
            let (keyword, rest) = match l.split_once([' ', '\t']) {
                Some((k, r)) => (k, r.trim_start()),
                None => (l, ""),
            };
            match keyword {
                "" => continue,
                "user" => {
                    if rest.is_empty() {
                        return Err(err("\"user\" without a username".into()));
                    }
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let pattern = keyword == "pattern";
                    if rest.is_empty() {
                        return Err(err(format!("\"{keyword}\" without a topic filter")));
                    }
                    let (grant, filter) = match rest.split_once([' ', '\t']) {
                        Some((a, f)) => {
                            let g = match a {
                                "read" => READ,
                                "write" => WRITE,
                                "readwrite" => READ | WRITE,
                                "deny" => 0,
                                other => {
                                    return Err(err(format!(
                                        "access \"{other}\" is not read, write, readwrite or deny"
                                    )))
                                }
                            };
                            (g, f.trim())
                        }
                        None => (READ | WRITE, rest),
                    };
                    if !valid_filter(filter) {
                        return Err(err(format!("\"{filter}\" is not a valid topic filter")));
                    }
                    let r = Rule {
                        grant,
                        filter: filter.to_string(),
                        line,
                        pattern,
                    };
                    if pattern {
                        push_rule(&mut acl.patterns, r);
                    } else {
                        match &user {
                            Some(u) => push_rule(acl.users.entry(u.clone()).or_default(), r),
                            None => push_rule(&mut acl.anonymous, r),
                        }
                    }
                }
                other => {
                    return Err(err(format!(
                        "unknown keyword \"{other}\" (expected user, topic or pattern)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// Number of users with a section.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Number of rules (topic and pattern lines).
    pub fn rule_count(&self) -> usize {
        self.anonymous.len()
            + self.patterns.len()
            + self.users.values().map(Vec::len).sum::<usize>()
    }

    /// The rules of one client, patterns substituted, in decision order.
    pub fn client(&self, username: Option<&str>, client_id: &str) -> ClientAcl {
        let own = match username {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        let mut rules: Vec<CRule> = own
            .iter()
            .map(|r| CRule {
                grant: r.grant,
                filter: r.filter.clone().into_boxed_str(),
                line: r.line,
            })
            .collect();
        let mut dangerous = None;
        if !self.patterns.is_empty() {
            // Mosquitto: a `+` or `#` in the username or client id denies
            // everything the patterns would decide.
            let bad = |s: &str| s.contains(['+', '#']);
            if username.is_some_and(bad) || bad(client_id) {
                dangerous = Some(rules.len());
            } else {
                for p in &self.patterns {
                    if let Some(f) = substitute(&p.filter, username, client_id) {
                        rules.push(CRule {
                            grant: p.grant,
                            filter: f.into_boxed_str(),
                            line: p.line,
                        });
                    }
                }
            }
        }
        ClientAcl { rules, dangerous }
    }

    /// The decision for one client, topic and access, with the rule that made it.
    pub fn check(
        &self,
        username: Option<&str>,
        client_id: &str,
        topic: &str,
        access: Access,
    ) -> Decision {
        self.client(username, client_id).decide(topic, access)
    }

    /// A rule's text as written (for `acl check`).
    pub fn describe(&self, line: u32) -> String {
        let all = self
            .anonymous
            .iter()
            .chain(self.patterns.iter())
            .chain(self.users.values().flatten());
        match all.into_iter().find(|r| r.line == line) {
            Some(r) => format!(
                "{} {} {}",
                if r.pattern { "pattern" } else { "topic" },
                r.grant_str(),
                r.filter
            ),
            None => String::new(),
        }
    }
}

/// `%c` and `%u` replaced where they are a whole level; `None` when the
/// rule can never match this client (no username for `%u`, an empty value,
/// or a value spanning levels).
fn substitute(filter: &str, username: Option<&str>, client_id: &str) -> Option<String> {
    let mut out = String::with_capacity(filter.len() + client_id.len());
    for (i, l) in levels(filter).enumerate() {
        if i > 0 {
            out.push('/');
        }
        let v = match l {
            "%c" => Some(client_id),
            "%u" => Some(username?),
            _ => None,
        };
        match v {
            Some(v) if v.is_empty() || v.contains('/') => return None,
            Some(v) => out.push_str(v),
            None => out.push_str(l),
        }
    }
    Some(out)
}

/// A compiled rule of one client.
#[derive(Clone, Debug)]
struct CRule {
    grant: u8,
    filter: Box<str>,
    line: u32,
}

/// The decision and the line of the rule that made it (`None`: no rule
/// matched, or the patterns refused a dangerous id: see `dangerous`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub line: Option<u32>,
    /// Denied because the username or client id holds `+` or `#`.
    pub dangerous: bool,
}

/// How a subscription's filter stands against a client's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubClass {
    /// Every topic the filter matches is readable: no check per delivery.
    Full,
    /// Some topics may be readable: check each delivered topic.
    Check,
    /// No topic it matches is readable: refuse the subscription.
    Never,
}

/// One client's rules: its own (user or anonymous section) then the
/// patterns with its id and username substituted.
#[derive(Clone, Debug, Default)]
pub struct ClientAcl {
    rules: Vec<CRule>,
    /// Index where the pattern section starts, when it denies everything.
    dangerous: Option<usize>,
}

impl ClientAcl {
    /// First matching rule that denies or grants `access` decides.
    pub fn decide(&self, topic: &str, access: Access) -> Decision {
        let bit = access.bit();
        for (i, r) in self.rules.iter().enumerate() {
            if self.dangerous == Some(i) {
                break;
            }
            if (r.grant == 0 || r.grant & bit != 0) && matches(&r.filter, topic) {
                return Decision {
                    allowed: r.grant != 0,
                    line: Some(r.line),
                    dangerous: false,
                };
            }
        }
        Decision {
            allowed: false,
            line: None,
            dangerous: self.dangerous.is_some(),
        }
    }

    /// Shortcut of [`ClientAcl::decide`].
    #[inline]
    pub fn allows(&self, topic: &str, access: Access) -> bool {
        self.decide(topic, access).allowed
    }

    /// Classifies a subscription filter for read access (conservative:
    /// `Check` whenever the rules do not settle it for the whole filter).
    pub fn classify(&self, filter: &str) -> SubClass {
        let (mut seen_allow, mut seen_deny) = (false, false);
        for (i, r) in self.rules.iter().enumerate() {
            if self.dangerous == Some(i) {
                break;
            }
            if r.grant != 0 && r.grant & READ == 0 {
                continue;
            }
            if !overlaps(&r.filter, filter) {
                continue;
            }
            let deny = r.grant == 0;
            if covers(&r.filter, filter) {
                return match (deny, seen_allow, seen_deny) {
                    (true, false, _) => SubClass::Never,
                    (false, _, false) => SubClass::Full,
                    _ => SubClass::Check,
                };
            }
            seen_allow |= !deny;
            seen_deny |= deny;
        }
        if seen_allow {
            SubClass::Check
        } else {
            SubClass::Never
        }
    }
}

/// First level of a filter that starts with a wildcard matches no `$` topic
/// [MQTT-4.7.2-1]; a literal first level starting with `$` only `$` topics.
fn dollar_clash(a: &str, b: &str) -> bool {
    let wild = |s: &str| s.starts_with('+') || s.starts_with('#');
    (wild(a) && is_dollar(b)) || (wild(b) && is_dollar(a))
}

/// Does every topic matching `f` also match `r`?
pub fn covers(r: &str, f: &str) -> bool {
    if dollar_clash(r, f) {
        return false;
    }
    let mut rl = levels(r);
    let mut fl = levels(f);
    loop {
        match (rl.next(), fl.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) => {
                if a != b {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

/// Is there a topic matching both filters?
pub fn overlaps(a: &str, b: &str) -> bool {
    if dollar_clash(a, b) {
        return false;
    }
    let mut al = levels(a);
    let mut bl = levels(b);
    loop {
        match (al.next(), bl.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(x), Some(y)) => {
                if x != y {
                    return false;
                }
            }
            (None, None) => return true,
            // ("a/#", "a") was answered by the `#` arms: the level matches its parent.
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

/// The configured ACL file, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclConfig {
    pub file: Option<PathBuf>,
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
