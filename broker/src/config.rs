//! The broker's configuration: every tunable, once.
//!
//! Each section below is at the same time a group of command-line flags (clap
//! derive; the group is the `--help` heading), a table of the TOML file and a
//! set of environment variables (`RINGMQ_<FLAG_NAME>`, added in `cli.rs`).
//! Defaults live only in the `default_value` attributes; `Default` parses an
//! empty command line, so flags, file, example file and docs cannot disagree.
//!
//! Layout:
//! - `config/types.rs`: value types (listener URLs, CPU lists, enums).
//! - `config/load.rs`: the TOML file, precedence flag > env > file > default,
//!   one-line errors naming the key.
//! - `config/validate.rs`: checks across values (CPUs present, ranges).
//! - `config/example.rs`: `ringmq config example` (= ringmq.example.toml).
//! - `config/shard.rs`: [`Config::to_shard_config`], the one mapping to the core.

mod cluster;
pub mod cluster_types;
mod example;
mod links;
pub use links::LINK_PORT_OFFSET;
mod load;
mod shard;
pub mod types;
mod validate;

use cluster_types::{Millis, Peer};
pub use example::example_toml;
pub use load::{check_file, env_name, resolve, ConfigError, Source, Sources};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use types::{
    CpuList, Durability, IoBackendChoice, ListenUrl, LogFormat, OptAddr, OptPath, Overflow,
};

/// The value of a section when no flag is given (environment ignored).
fn clap_defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("ringmq").no_binary_name(true));
    let m = cmd
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("every flag has a default");
    T::from_arg_matches(&m).expect("defaults are valid")
}

/// A section: a flag group, a TOML table and a `Default` from the flags' defaults.
macro_rules! section {
    ($(#[$m:meta])* $heading:literal $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        #[command(next_help_heading = $heading)]
        pub struct $name { $($body)* }
        impl Default for $name {
            fn default() -> Self {
                clap_defaults::<$name>()
            }
        }
    };
}

section! {
    /// `[listeners]`: where clients connect.
    "Listeners" Listeners {
        /// Listener URL, repeatable: mqtt://HOST:PORT, mqtts://HOST:PORT, ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, options after ? (proxy=true, allow_anonymous=, cert=, key=, client_ca=, require_client_cert=, identity_as_username=); comma-separated in the environment. Unset: loopback only, anonymous allowed
        #[arg(long, value_name = "URL", default_value = "mqtt://127.0.0.1:1883,mqtt://[::1]:1883", value_delimiter = ',')]
        pub listen: Vec<ListenUrl>,
        /// listen(2) backlog of each shard's socket
        #[arg(long, value_name = "N", default_value_t = 4096)]
        pub backlog: u32,
        /// TLS listeners: server certificate chain, PEM, leaf first
        #[arg(long, value_name = "FILE", default_value = "")]
        pub tls_cert: OptPath,
        /// TLS listeners: the certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1)
        #[arg(long, value_name = "FILE", default_value = "")]
        pub tls_key: OptPath,
        /// TLS listeners: CA certificates, PEM, that client certificates must chain to (mTLS)
        #[arg(long, value_name = "FILE", default_value = "")]
        pub tls_client_ca: OptPath,
        /// TLS listeners: refuse clients without a valid certificate (needs tls_client_ca)
        #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set)]
        pub tls_require_client_cert: bool,
        /// TLS listeners: the client certificate's subject CN becomes the user name
        #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set)]
        pub tls_identity_as_username: bool,
    }
}

section! {
    /// `[auth]`: who may connect.
    "Authentication" Auth {
        /// Accept clients that give no user name (default: only when no listener is named)
        #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set)]
        pub allow_anonymous: bool,
        /// Password file, Mosquitto format ($6$, $7$) or `ringmq passwd` entries (empty: none)
        #[arg(long, value_name = "FILE", default_value = "")]
        pub password_file: OptPath,
    }
}

section! {
    /// `[placement]`: shards and the CPUs they run on.
    "Placement" Placement {
        /// Number of shards, one per core (0: all CPUs present)
        #[arg(long, value_name = "N", default_value_t = 0)]
        pub cores: usize,
        /// CPUs to pin shards to, e.g. 2-7,9 (empty: CPUs 0..cores)
        #[arg(long, value_name = "LIST", default_value = "")]
        pub cpu_list: CpuList,
        /// Pin each shard's thread to its CPU
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        pub pin: bool,
        /// io_uring registered memory per shard, bytes (counts against RLIMIT_MEMLOCK)
        #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
        pub io_memory: usize,
        /// Socket I/O: epoll, io_uring, or auto (io_uring where the kernel supports it, else epoll)
        #[arg(long, value_name = "BACKEND", default_value = "epoll")]
        pub io_backend: IoBackendChoice,
        /// io_uring: receive buffers per shard (a power of two); sockets share them, an idle one holds none
        #[arg(long, value_name = "N", default_value_t = 1024)]
        pub io_uring_buffers: u16,
        /// io_uring: bytes per receive buffer
        #[arg(long, value_name = "BYTES", default_value_t = 4096)]
        pub io_uring_buffer_size: u32,
        /// io_uring: sends of at least this many bytes go as SEND_ZC, zero-copy (0: never; loopback copies anyway)
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        pub io_uring_send_zc: u32,
        /// Microseconds a pinned shard keeps polling for work after its last before it sleeps (0: sleeps at once); trades CPU for wake-up latency
        #[arg(long, value_name = "US", default_value_t = 0)]
        pub idle_spin_us: u64,
        /// Capacity of each cross-shard channel, in batches
        #[arg(long, value_name = "N", default_value_t = 1024)]
        pub mesh_capacity: usize,
    }
}

section! {
    /// `[limits]`: bounds on what clients may do.
    "Limits" Limits {
        /// Most concurrent connections (whole broker)
        #[arg(long, value_name = "N", default_value_t = 1_000_000)]
        pub max_connections: usize,
        /// Largest packet accepted and advertised, bytes
        #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
        pub max_packet_size: u32,
        /// Longest topic name or filter, bytes
        #[arg(long, value_name = "BYTES", default_value_t = 1024)]
        pub max_topic_length: usize,
        /// Most levels in a topic name or filter
        #[arg(long, value_name = "N", default_value_t = 32)]
        pub max_topic_levels: usize,
        /// Longest client identifier accepted, bytes (at least 23, [MQTT-3.1.3-5]); longer gets CONNACK 0x85 (3.1.1: 0x02)
        #[arg(long, value_name = "BYTES", default_value_t = 128)]
        pub max_client_id_length: usize,
        /// Most subscriptions one client may hold
        #[arg(long, value_name = "N", default_value_t = 1000)]
        pub max_subscriptions_per_client: usize,
        /// Inflight window both ways (v5 Receive Maximum)
        #[arg(long, value_name = "N", default_value_t = 256)]
        pub receive_maximum: u16,
        /// v5 Topic Alias Maximum offered to clients (0: none)
        #[arg(long, value_name = "N", default_value_t = 64)]
        pub topic_alias_maximum: u16,
        /// Outbound bytes buffered per connection before QoS 0 is dropped
        #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
        pub outbound_buffer_bytes: usize,
        /// Close a connection whose socket accepts nothing, or whose full QoS 1/2 window sees no acknowledgement, for this long, ms
        #[arg(long, value_name = "MS", default_value_t = 30_000)]
        pub slow_consumer_timeout_ms: u64,
        /// A packet must arrive whole within this long of its first byte, ms (any keep alive, 0 included)
        #[arg(long, value_name = "MS", default_value_t = 30_000)]
        pub packet_timeout_ms: u64,
        /// Bytes of packets still being received, per shard; past it, connections holding a partial packet stop reading
        #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
        pub partial_packet_budget: usize,
        /// Retained messages sent per step to a new subscription
        #[arg(long, value_name = "N", default_value_t = 256)]
        pub retained_replay_batch: usize,
    }
}

section! {
    /// `[sessions]`: sessions, queues and optional MQTT features.
    "Sessions" Sessions {
        /// Largest keep alive accepted, seconds; larger gets v5 Server Keep Alive (0: no limit)
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        pub max_keep_alive: u16,
        /// Cap on the session expiry interval, seconds; also the lifetime of 3.1.1 persistent sessions (4294967295: none)
        #[arg(long, value_name = "SECS", default_value_t = 604_800)]
        pub max_session_expiry: u32,
        /// QoS 1/2 messages queued per session beyond its inflight window
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        pub max_queued_messages: usize,
        /// Bytes (topic + payload) of QoS 1/2 messages one session holds, in flight and queued
        #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
        pub max_queued_bytes: u64,
        /// What a full session queue drops
        #[arg(long, value_name = "POLICY", default_value = "drop-newest")]
        pub queue_overflow: Overflow,
        /// Retained messages available (v5 Retain Available)
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        pub retain_available: bool,
        /// Shared subscriptions $share/GROUP/FILTER available
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        pub shared_subscriptions: bool,
        /// Wildcard subscriptions (+ and #) available
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        pub wildcard_subscriptions: bool,
    }
}

section! {
    /// `[persistence]`: where state lives and when it is durable.
    "Persistence" Persistence {
        /// Directory of persistent state (and of the admin socket by default)
        #[arg(long, value_name = "DIR", default_value = "./data")]
        pub data_dir: PathBuf,
        /// When an acknowledged QoS 1/2 message is durable
        #[arg(long, value_name = "MODE", default_value = "sync")]
        pub durability: Durability,
        /// Commit interval with --durability batch, ms (the loss window)
        #[arg(long, value_name = "MS", default_value_t = 10)]
        pub batch_interval_ms: u64,
        /// Storage quota per shard, bytes (0: none); past it new QoS 1/2 is refused
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        pub store_max_bytes: u64,
    }
}

section! {
    /// `[admin]`: the admin socket, metrics and $SYS topics.
    "Admin/Metrics" Admin {
        /// Admin socket path (empty: DATA_DIR/ringmq.sock)
        #[arg(long, value_name = "PATH", default_value = "")]
        pub admin_socket: OptPath,
        /// Prometheus /metrics HTTP listener, HOST:PORT (empty: off)
        #[arg(long, value_name = "HOST:PORT", default_value = "")]
        pub metrics_listen: OptAddr,
        /// Interval of $SYS/broker/... publications, seconds (0: off)
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        pub sys_interval_secs: u64,
    }
}

section! {
    /// `[authz]`: what authenticated clients may do, and bans.
    "Authorization" Authz {
        /// ACL file in Mosquitto's acl_file format (empty: no ACL, every client may do anything)
        #[arg(long, value_name = "FILE", default_value = "")]
        pub acl_file: OptPath,
        /// Authentication failures from one address within the window that ban it (0: never)
        #[arg(long, value_name = "N", default_value_t = 10)]
        pub auth_fail_max: u32,
        /// Window over which authentication failures are counted, seconds
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        pub auth_fail_window_secs: u64,
        /// How long an address stays banned after too many failures, seconds
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        pub auth_fail_ban_secs: u64,
    }
}

section! {
    /// `[logging]`: log level and format.
    "Logging" Logging {
        /// Log filter: a level (error, warn, info, debug, trace) or tracing directives
        #[arg(long, value_name = "FILTER", default_value = "info")]
        pub log_level: String,
        /// Log line format
        #[arg(long, value_name = "FORMAT", default_value = "text")]
        pub log_format: LogFormat,
    }
}

section! {
    /// `[cluster]`: membership of a cluster of nodes (docs/cluster.md).
    "Cluster" Cluster {
        /// This node's id in the cluster, 1 or more (0: not in a cluster)
        #[arg(long, value_name = "N", default_value_t = 0)]
        pub node_id: u64,
        /// The initial members, ID@HOST:PORT comma-separated, this node included (empty, or this node alone: a cluster of one, as without clustering)
        #[arg(long, value_name = "ID@HOST:PORT", value_delimiter = ',')]
        pub cluster_peers: Vec<Peer>,
        /// Join a running cluster instead of forming one: start without bootstrapping and wait to be added (`ringmq ctl cluster add-node` on the leader); cluster_peers then needs only this node's entry
        #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set)]
        pub cluster_join: bool,
        /// Where the cluster port listens, HOST:PORT (empty: this node's address in cluster_peers)
        #[arg(long, value_name = "HOST:PORT", default_value = "")]
        pub cluster_listen: OptAddr,
        /// Name every node of one cluster shares; peers and data dirs of another cluster are refused
        #[arg(long, value_name = "NAME", default_value = "ringmq")]
        pub cluster_id: String,
        /// A member unheard of this long is marked down (e.g. 500ms, 3s)
        #[arg(long, value_name = "DURATION", default_value = "3s")]
        pub node_down_after: Millis,
        /// Longest a CONNECT waits for the cluster to record its session's owner; then v5 0x88 / 3.1.1 0x03
        #[arg(long, value_name = "DURATION", default_value = "3s")]
        pub cluster_claim_timeout: Millis,
        /// Longest a QoS 1/2 PUBLISH (durability sync) waits for another node to answer that its copy is durable; then v5 PUBACK/PUBREC 0x83, 3.1.1 a close
        #[arg(long, value_name = "DURATION", default_value = "5s")]
        pub cluster_ack_timeout: Millis,
        /// Bytes of QoS 1/2 copies (durability sync) stored per other node while it cannot answer (down, or past cluster_ack_timeout), so their publishers are acknowledged; past it v5 0x97, 3.1.1 a close (0: no outbox, such publishes are refused)
        #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
        pub cluster_outbox_max_bytes: u64,
        /// Cluster links: this node's certificate chain, PEM (mutual TLS between nodes; empty: plain TCP)
        #[arg(long, value_name = "FILE", default_value = "")]
        pub cluster_tls_cert: OptPath,
        /// Cluster links: the certificate's private key, PEM
        #[arg(long, value_name = "FILE", default_value = "")]
        pub cluster_tls_key: OptPath,
        /// Cluster links: the CA every node's certificate must chain to, PEM
        #[arg(long, value_name = "FILE", default_value = "")]
        pub cluster_tls_ca: OptPath,
        /// Build a metadata snapshot after this many log entries
        #[arg(long, value_name = "N", default_value_t = 20_000)]
        pub cluster_snapshot_every: u64,
        /// Log entries kept behind a snapshot (a peer lagging more catches up from the snapshot)
        #[arg(long, value_name = "N", default_value_t = 1_000)]
        pub cluster_keep_logs: u64,
    }
}

/// Everything `ringmq` can be told. TOML: one table per section.
#[derive(Clone, Debug, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    #[command(flatten)]
    pub listeners: Listeners,
    #[command(flatten)]
    pub auth: Auth,
    #[command(flatten)]
    pub placement: Placement,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub sessions: Sessions,
    #[command(flatten)]
    pub persistence: Persistence,
    #[command(flatten)]
    pub admin: Admin,
    #[command(flatten)]
    pub authz: Authz,
    #[command(flatten)]
    pub logging: Logging,
    #[command(flatten)]
    pub cluster: Cluster,
}

/// Name of the admin socket inside the data dir.
pub const ADMIN_SOCKET_NAME: &str = "ringmq.sock";

impl Config {
    /// The admin socket: `--admin-socket`, else `DATA_DIR/ringmq.sock`.
    pub fn admin_socket_path(&self) -> PathBuf {
        match &self.admin.admin_socket.0 {
            Some(p) => p.clone(),
            None => self.persistence.data_dir.join(ADMIN_SOCKET_NAME),
        }
    }

    /// The configuration as a TOML tree: `{section: {key: value}}`.
    pub fn to_toml(&self) -> toml::Table {
        toml::Table::try_from(self).expect("the config serializes to TOML")
    }
}
