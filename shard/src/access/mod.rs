//! Access control: who may connect, publish and subscribe. Knows nothing of
//! the shard but its configuration: the protocol wing (`auth_phase.rs`,
//! `authz.rs`, `handle.rs`) calls in and acts on the answers.
//!
//! - `passwd.rs`: the password file (Mosquitto `$6$`/`$7$`, argon2id, SCRAM entries).
//! - `scram.rs`: SCRAM-SHA-256 (RFC 5802/7677), server side, sans I/O.
//! - `authn.rs`: what a CONNECT needs (anonymous, password, SCRAM) and the
//!   per-shard password file behind an `Arc`.
//! - `pool.rs`: the threads that check passwords off the shard threads.
//! - `acl.rs`: Mosquitto's `acl_file`, parsed and decided; per-client rules
//!   and subscription classes (`acl_tests.rs`: the decisions Mosquitto documents).
//! - `bans.rs`: bans by client id, username or address, and auto-bans after
//!   repeated authentication failures.
//! - `reload.rs`: what SIGHUP and `ringmq ctl reload` re-read, each reported.
//! - `session.rs`: a session's ACL state on its shard (rules, caches).

pub mod acl;
pub mod authn;
pub mod bans;
pub mod passwd;
pub mod pool;
pub mod reload;
pub mod scram;
pub(crate) mod session;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Access-control settings of the node (from flags, environment, file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessConfig {
    /// `--acl-file`: Mosquitto `acl_file` format (none: every client may do anything).
    pub acl_file: Option<PathBuf>,
    /// `--auth-fail-*`: temporary bans after repeated authentication failures.
    pub auto_ban: bans::AutoBan,
}

/// Node-wide access state shared by every shard and the admin side: the
/// ACL in force (shards hold their own `Arc` of it, swapped on reload
/// through their control channel), bans and the reload registry.
pub struct Shared {
    pub acl_file: Option<PathBuf>,
    acl: RwLock<Option<Arc<acl::Acl>>>,
    pub bans: bans::Bans,
    pub reloaders: reload::Reloaders,
}

impl Shared {
    /// Reads the ACL file (an error names file and line) and opens the bans.
    pub fn new(cfg: &AccessConfig, data_dir: Option<PathBuf>) -> Result<Shared, acl::ParseError> {
        let acl = match &cfg.acl_file {
            Some(f) => Some(Arc::new(acl::Acl::load(f)?)),
            None => None,
        };
        Ok(Shared {
            acl_file: cfg.acl_file.clone(),
            acl: RwLock::new(acl),
            bans: bans::Bans::new(cfg.auto_ban, data_dir.map(|d| d.join("bans.txt"))),
            reloaders: reload::Reloaders::default(),
        })
    }

    /// The ACL in force.
    pub fn acl(&self) -> Option<Arc<acl::Acl>> {
        self.acl.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the ACL file; on success the new rules are in force here
    /// and returned (for the shards). On failure the old rules stay.
    pub fn reload_acl(&self) -> Result<Option<Arc<acl::Acl>>, acl::ParseError> {
        let Some(f) = &self.acl_file else {
            return Ok(None);
        };
        let new = Arc::new(acl::Acl::load(f)?);
        *self.acl.write().unwrap_or_else(|p| p.into_inner()) = Some(new.clone());
        Ok(Some(new))
    }
}
