//! The one mapping from the operator's configuration to the broker core's.

use super::types::{Durability, Overflow};
use super::Config;
use ringmq_shard::config::{self as core, ShardConfig};
use std::time::Duration;

impl Config {
    /// The broker core's configuration. Admin, metrics and logging settings
    /// stay in this crate.
    pub fn to_shard_config(&self) -> ShardConfig {
        let (l, p, m, s, d) = (
            &self.listeners,
            &self.placement,
            &self.limits,
            &self.sessions,
            &self.persistence,
        );
        ShardConfig {
            listen: l.listen.iter().map(|u| u.addr).collect(),
            // A CPU list without --cores runs one shard per listed CPU.
            cores: if p.cores == 0 {
                p.cpu_list.0.len()
            } else {
                p.cores
            },
            cpu_list: (!p.cpu_list.0.is_empty()).then(|| p.cpu_list.0.clone()),
            pin: p.pin,
            io_memory: p.io_memory,
            backlog: l.backlog,
            max_connections: m.max_connections,
            max_packet_size: m.max_packet_size,
            max_topic_length: m.max_topic_length,
            max_topic_levels: m.max_topic_levels,
            max_subscriptions_per_client: m.max_subscriptions_per_client,
            receive_maximum: m.receive_maximum,
            max_queued_messages: s.max_queued_messages,
            queue_overflow: match s.queue_overflow {
                Overflow::DropNewest => core::OverflowPolicy::DropNewest,
                Overflow::DropOldest => core::OverflowPolicy::DropOldest,
            },
            max_keep_alive: s.max_keep_alive,
            topic_alias_maximum: m.topic_alias_maximum,
            max_session_expiry: s.max_session_expiry,
            outbound_buffer_bytes: m.outbound_buffer_bytes,
            slow_consumer_timeout: Duration::from_millis(m.slow_consumer_timeout_ms),
            sys_interval: Duration::from_secs(self.admin.sys_interval_secs),
            retained_replay_batch: m.retained_replay_batch,
            data_dir: d.data_dir.clone(),
            durability: match d.durability {
                Durability::Sync => core::Durability::Sync,
                Durability::Batch => core::Durability::Batch {
                    interval_ms: d.batch_interval_ms,
                },
                Durability::None => core::Durability::None,
            },
            store_max_bytes: d.store_max_bytes,
            retain_available: s.retain_available,
            shared_subscriptions: s.shared_subscriptions,
            wildcard_subscriptions: s.wildcard_subscriptions,
            mesh_capacity: p.mesh_capacity,
            authn: ringmq_shard::access::authn::AuthnConfig {
                allow_anonymous: self.auth.allow_anonymous,
                password_file: self.auth.password_file.0.clone(),
            },
            access: ringmq_shard::access::AccessConfig {
                acl_file: self.authz.acl_file.0.clone(),
                auto_ban: ringmq_shard::access::bans::AutoBan {
                    max_failures: self.authz.auth_fail_max,
                    window: Duration::from_secs(self.authz.auth_fail_window_secs),
                    ban_for: Duration::from_secs(self.authz.auth_fail_ban_secs),
                },
            },
        }
    }
}
