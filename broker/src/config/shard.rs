//! The one mapping from the operator's configuration to the broker core's.

use super::types::{Durability, IoBackendChoice, ListenUrl, Overflow, Scheme};
use super::{Config, Listeners};
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
            listen: l.listen.iter().map(|u| l.to_core(u)).collect(),
            // A CPU list without --cores runs one shard per listed CPU.
            cores: if p.cores == 0 {
                p.cpu_list.0.len()
            } else {
                p.cores
            },
            cpu_list: (!p.cpu_list.0.is_empty()).then(|| p.cpu_list.0.clone()),
            pin: p.pin,
            io_memory: p.io_memory,
            io_backend: match p.io_backend {
                IoBackendChoice::Auto => core::IoBackend::Auto,
                IoBackendChoice::IoUring => core::IoBackend::IoUring,
                IoBackendChoice::Epoll => core::IoBackend::Epoll,
            },
            io_uring_buffers: p.io_uring_buffers,
            io_uring_buffer_size: p.io_uring_buffer_size,
            io_uring_send_zc: p.io_uring_send_zc,
            idle_spin: Duration::from_micros(p.idle_spin_us),
            backlog: l.backlog,
            max_connections: m.max_connections,
            max_packet_size: m.max_packet_size,
            max_topic_length: m.max_topic_length,
            max_topic_levels: m.max_topic_levels,
            max_subscriptions_per_client: m.max_subscriptions_per_client,
            max_client_id_length: m.max_client_id_length,
            receive_maximum: m.receive_maximum,
            max_queued_messages: s.max_queued_messages,
            max_queued_bytes: s.max_queued_bytes,
            queue_overflow: match s.queue_overflow {
                Overflow::DropNewest => core::OverflowPolicy::DropNewest,
                Overflow::DropOldest => core::OverflowPolicy::DropOldest,
            },
            max_keep_alive: s.max_keep_alive,
            topic_alias_maximum: m.topic_alias_maximum,
            max_session_expiry: s.max_session_expiry,
            outbound_buffer_bytes: m.outbound_buffer_bytes,
            slow_consumer_timeout: Duration::from_millis(m.slow_consumer_timeout_ms),
            packet_timeout: Duration::from_millis(m.packet_timeout_ms),
            partial_packet_budget: m.partial_packet_budget,
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
            // Node links: from the [cluster] section (config/links.rs).
            cluster: self.cluster_links().ok().flatten(),
            // Set by main once the cluster's control plane runs.
            ownership: None,
            wills: None,
        }
    }
}

impl Listeners {
    /// One listener of the core: its URL's own options over the `--tls-*` ones.
    fn to_core(&self, u: &ListenUrl) -> core::Listener {
        let o = &u.options;
        let path = || u.path.clone().unwrap_or_else(|| "/mqtt".into());
        core::Listener {
            addr: u.addr,
            transport: match u.scheme {
                Scheme::Mqtt => core::Transport::Mqtt,
                Scheme::Mqtts => core::Transport::Mqtts,
                Scheme::Ws => core::Transport::Ws { path: path() },
                Scheme::Wss => core::Transport::Wss { path: path() },
            },
            tls: core::TlsFiles {
                cert: o.cert.clone().or_else(|| self.tls_cert.0.clone()),
                key: o.key.clone().or_else(|| self.tls_key.0.clone()),
                client_ca: o.client_ca.clone().or_else(|| self.tls_client_ca.0.clone()),
                require_client_cert: o
                    .require_client_cert
                    .unwrap_or(self.tls_require_client_cert),
                identity_as_username: o
                    .identity_as_username
                    .unwrap_or(self.tls_identity_as_username),
            },
            proxy_protocol: o.proxy,
            allow_anonymous: o.allow_anonymous,
        }
    }
}
