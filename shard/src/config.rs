//! The shard's configuration: every tunable the broker core reads.
//!
//! The broker crate builds this from flags, environment and file
//! (`broker/src/config.rs`); tests build it directly. Plain data, `Clone`,
//! shared read-only by every shard.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// What a listener speaks on top of TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `mqtt://`: MQTT straight on TCP.
    Mqtt,
    /// `mqtts://`: MQTT inside TLS.
    Mqtts,
    /// `ws://HOST:PORT/PATH`: MQTT in WebSocket binary frames.
    Ws { path: String },
    /// `wss://HOST:PORT/PATH`: WebSocket inside TLS.
    Wss { path: String },
}

impl Transport {
    /// Whether the listener's connections start with a TLS handshake.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Mqtts | Transport::Wss { .. })
    }
    /// The URL scheme.
    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Mqtts => "mqtts",
            Transport::Ws { .. } => "ws",
            Transport::Wss { .. } => "wss",
        }
    }
}

/// TLS material and options of a TLS listener (files are PEM).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA certificates that client certificates are verified against (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `client_ca`).
    pub require_client_cert: bool,
    /// The client certificate's subject CN becomes the CONNECT's user name.
    pub identity_as_username: bool,
}

/// One listener: where, what it speaks, and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// For `mqtts`/`wss`.
    pub tls: TlsFiles,
    /// Every connection starts with a PROXY protocol v1 or v2 header
    /// (HAProxy `send-proxy`/`send-proxy-v2`); one without is closed.
    pub proxy_protocol: bool,
    /// Anonymous clients on this listener; `None`: the shard-wide
    /// `authn.allow_anonymous` (`--allow-anonymous`).
    pub allow_anonymous: Option<bool>,
}

impl Listener {
    /// A plain `mqtt://` listener.
    pub fn mqtt(addr: SocketAddr) -> Self {
        Listener {
            addr,
            transport: Transport::Mqtt,
            tls: TlsFiles::default(),
            proxy_protocol: false,
            allow_anonymous: None,
        }
    }
}

impl From<SocketAddr> for Listener {
    fn from(addr: SocketAddr) -> Self {
        Listener::mqtt(addr)
    }
}

/// `HOST:PORT`: a plain MQTT listener (the broker crate parses full URLs).
impl FromStr for Listener {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Listener::mqtt)
    }
}

/// What to do when a persistent session's queue of QoS 1/2 messages is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Keep the queue, drop the message that arrived (counted).
    DropNewest,
    /// Drop the oldest queued message to make room (counted).
    DropOldest,
}

impl OverflowPolicy {
    /// The name used by the flag and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowPolicy::DropNewest => "drop-newest",
            OverflowPolicy::DropOldest => "drop-oldest",
        }
    }
}

/// When an acknowledged QoS 1/2 message is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// PUBACK/PUBREC only after the commit holding the message is durable.
    Sync,
    /// Commit every `interval_ms`; acknowledge before (loss window: one interval).
    Batch { interval_ms: u64 },
    /// Memory only.
    None,
}

/// Every tunable of the broker core.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Listeners (`mqtt://`, `mqtts://`, `ws://`, `wss://`); port 0 picks one
    /// free port shared by all shards.
    pub listen: Vec<Listener>,
    /// Number of shards (one executor per core). 0 means all available CPUs.
    pub cores: usize,
    /// CPUs to pin shards to, in order; `None`: CPUs 0..cores.
    pub cpu_list: Option<Vec<usize>>,
    /// Pin executors to their CPU (off lets the kernel schedule them).
    pub pin: bool,
    /// io_uring registered memory per executor, bytes.
    pub io_memory: usize,
    /// How sockets are served: io_uring, epoll, or io_uring where the
    /// kernel has what it needs (`server::start` resolves `Auto`).
    pub io_backend: IoBackend,
    /// Buffers in each shard's provided-buffer ring (io_uring; a power of two).
    pub io_uring_buffers: u16,
    /// Bytes per buffer of that ring.
    pub io_uring_buffer_size: u32,
    /// io_uring: sends of at least this many bytes go as `SEND_ZC` (0: never).
    pub io_uring_send_zc: u32,
    /// How long a pinned shard keeps polling for work (its sockets,
    /// timers, other shards) after its last before it sleeps; zero sleeps at
    /// once. Each wake-up of a sleeping CPU costs its idle exit (tens of µs
    /// in a VM whose idle CPUs halt): at low rates the spin catches the next
    /// message on a running CPU, at the price of the CPU time it spins.
    pub idle_spin: Duration,
    /// listen(2) backlog per shard socket.
    pub backlog: u32,
    /// Maximum concurrent connections, whole broker (split evenly across shards).
    pub max_connections: usize,
    /// Largest packet accepted and advertised (v5 Maximum Packet Size), bytes.
    pub max_packet_size: u32,
    /// Longest topic name or filter, bytes.
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Most subscriptions one client may hold.
    pub max_subscriptions_per_client: usize,
    /// Longest client identifier accepted, bytes (>= 23, [MQTT-3.1.3-5]).
    pub max_client_id_length: usize,
    /// Inflight window: v5 Receive Maximum advertised to clients, and the
    /// outbound window used for clients that do not give one.
    pub receive_maximum: u16,
    /// Most QoS 1/2 messages queued for one session beyond its inflight window.
    pub max_queued_messages: usize,
    /// Most bytes (topic and payload) of QoS 1/2 messages one session holds,
    /// in flight and queued together (at most `u32::MAX`).
    pub max_queued_bytes: u64,
    /// What happens when that queue is full.
    pub queue_overflow: OverflowPolicy,
    /// Largest keep alive accepted; larger (or 0) gets v5 Server Keep Alive. 0: no limit.
    pub max_keep_alive: u16,
    /// v5 Topic Alias Maximum advertised for client-to-broker aliases.
    pub topic_alias_maximum: u16,
    /// Cap on v5 Session Expiry Interval, seconds; 3.1.1 persistent sessions
    /// (CleanSession=0) expire after it too. `u32::MAX`: no cap.
    pub max_session_expiry: u32,
    /// Bytes buffered for a connection before QoS 0 is dropped and QoS 1/2 queue.
    pub outbound_buffer_bytes: usize,
    /// A connection whose socket accepts no bytes for this long is closed.
    pub slow_consumer_timeout: Duration,
    /// A packet must complete within this long of its first byte (any keep alive).
    pub packet_timeout: Duration,
    /// Per-shard budget of bytes of packets still being received.
    pub partial_packet_budget: usize,
    /// Interval of `$SYS/broker/...` publications; zero turns them off.
    pub sys_interval: Duration,
    /// Retained messages sent per step when replaying to a new subscription.
    pub retained_replay_batch: usize,
    /// Where persistent state lives.
    pub data_dir: PathBuf,
    /// Durability of acknowledged messages.
    pub durability: Durability,
    /// Per-shard storage quota, bytes (0: none). A shard whose store would
    /// grow past it refuses new QoS 1/2 messages (v5 0x97) until space is freed.
    pub store_max_bytes: u64,
    /// v5 Retain Available.
    pub retain_available: bool,
    /// v5 Shared Subscription Available.
    pub shared_subscriptions: bool,
    /// v5 Wildcard Subscription Available.
    pub wildcard_subscriptions: bool,
    /// Capacity of each cross-shard channel (messages; each message is a batch).
    pub mesh_capacity: usize,
    /// Who may connect: anonymous clients, the password file.
    pub authn: crate::access::authn::AuthnConfig,
    /// ACL file and auto-ban settings.
    pub access: crate::access::AccessConfig,
    /// Node links and routes of a cluster (`None`: a node alone).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Session ownership across a cluster (`None`: a cluster of one).
    pub ownership: Option<crate::ownership::Gate>,
    /// Wills registered in the cluster metadata (`None`: a node alone).
    pub wills: Option<crate::wills::Registry>,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            listen: vec![
                Listener::mqtt(SocketAddr::from(([127, 0, 0, 1], 1883))),
                Listener::mqtt(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 1883))),
            ],
            cores: 0,
            cpu_list: None,
            pin: true,
            io_memory: 1 << 20,
            io_backend: IoBackend::Epoll,
            io_uring_buffers: 1024,
            io_uring_buffer_size: 4096,
            io_uring_send_zc: 0,
            idle_spin: Duration::ZERO,
            backlog: 4096,
            max_connections: 1_000_000,
            max_packet_size: 1 << 20,
            max_topic_length: 1024,
            max_topic_levels: 32,
            max_subscriptions_per_client: 1000,
            max_client_id_length: 128,
            receive_maximum: 256,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 << 20,
            queue_overflow: OverflowPolicy::DropNewest,
            max_keep_alive: 0,
            topic_alias_maximum: 64,
            max_session_expiry: 604_800,
            outbound_buffer_bytes: 1 << 20,
            slow_consumer_timeout: Duration::from_secs(30),
            packet_timeout: Duration::from_secs(30),
            partial_packet_budget: 64 << 20,
            sys_interval: Duration::from_secs(10),
            retained_replay_batch: 256,
            data_dir: PathBuf::from("./data"),
            durability: Durability::None,
            store_max_bytes: 0,
            retain_available: true,
            shared_subscriptions: true,
            wildcard_subscriptions: true,
            mesh_capacity: 1024,
            // Secure by default: anonymous clients are refused unless asked for.
            authn: crate::access::authn::AuthnConfig::default(),
            access: crate::access::AccessConfig::default(),
            cluster: None,
            ownership: None,
            wills: None,
        }
    }
}

/// The socket I/O backend (`--io-backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring when the kernel has what it needs (probed at start), else epoll.
    Auto,
    /// Multishot accept and receive into a provided-buffer ring, sends as SQEs.
    IoUring,
    /// One epoll set per shard, `recv`/`send` syscalls.
    Epoll,
}

impl ShardConfig {
    /// The io_uring backend's ring sizes, when that backend serves the sockets.
    pub(crate) fn uring(&self) -> Option<crate::net::uring::UringConfig> {
        (self.io_backend == IoBackend::IoUring).then_some(crate::net::uring::UringConfig {
            buffers: self.io_uring_buffers,
            buffer_size: self.io_uring_buffer_size,
            send_zc: self.io_uring_send_zc,
        })
    }

    /// The number of shards this config asks for, resolving 0 to all CPUs.
    pub fn shard_count(&self) -> usize {
        if self.cores == 0 {
            available_cpus()
        } else {
            self.cores
        }
    }
}

/// CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
