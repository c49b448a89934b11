//! A session's access-control state on its shard: who it is, its rules
//! (rebuilt when the shard's ACL generation moves on after a reload) and a
//! one-entry cache per direction, so a client publishing to the same topic
//! again pays one string compare.

use super::acl::{Access, Acl, ClientAcl, SubClass};

/// Boxed in the session: sessions of a broker without an ACL pay 8 bytes.
#[derive(Debug, Default)]
pub(crate) struct SessionAcl {
    /// Username of the current (or last) connection.
    pub username: Option<Box<str>>,
    /// Shard ACL generation `rules` was built from.
    generation: u32,
    rules: ClientAcl,
    last_write: (String, bool),
    last_read: (String, bool),
}

impl SessionAcl {
    /// A session's state for `username`, rules built from `acl`.
    pub fn new(acl: &Acl, generation: u32, username: Option<&str>, client_id: &str) -> Self {
        SessionAcl {
            username: username.map(Into::into),
            generation,
            rules: acl.client(username, client_id),
            last_write: (String::new(), false),
            last_read: (String::new(), false),
        }
    }

    /// Rebuilds the rules if the shard's ACL changed since.
    #[inline]
    pub fn refresh(&mut self, acl: &Acl, generation: u32, client_id: &str) {
        if self.generation != generation {
            self.rebuild(acl, generation, client_id);
        }
    }

    #[cold]
    fn rebuild(&mut self, acl: &Acl, generation: u32, client_id: &str) {
        *self = SessionAcl::new(acl, generation, self.username.as_deref(), client_id);
    }

    /// May it publish to `topic`? (cached for the last topic)
    #[inline]
    pub fn may_write(&mut self, topic: &str) -> bool {
        Self::cached(&self.rules, &mut self.last_write, topic, Access::Write)
    }

    /// May it receive a message on `topic`? (cached for the last topic)
    #[inline]
    pub fn may_read(&mut self, topic: &str) -> bool {
        Self::cached(&self.rules, &mut self.last_read, topic, Access::Read)
    }

    #[inline]
    fn cached(rules: &ClientAcl, c: &mut (String, bool), topic: &str, a: Access) -> bool {
        if c.0.is_empty() || c.0 != topic {
            c.0.clear();
            c.0.push_str(topic);
            c.1 = rules.allows(topic, a);
        }
        c.1
    }

    /// The class of a subscription filter.
    pub fn classify(&self, filter: &str) -> SubClass {
        self.rules.classify(filter)
    }
}
