//! Per-shard counters and the typed reason of every close.
//!
//! Each shard owns one [`ShardStats`]. Only that shard writes it, with a plain
//! load + store (no locked read-modify-write, no contention); the admin and
//! metrics threads read snapshots with relaxed loads. Nothing here is shared
//! for writing across cores.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter with a single writer (its shard) and any number of readers.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// Subtracts `n` (for gauges). Only the owning shard calls this.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }
    /// Sets the value (for gauges).
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }
    /// Reads the value (any thread).
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            /// Every variant, in order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// A stable snake_case name (metrics label, admin output).
            pub fn as_str(self) -> &'static str { match self { $($name::$v => $s,)* } }
        }
    };
}

reasons! {
    /// Why a connection was closed. Every close carries one.
    CloseReason {
        /// The client sent DISCONNECT (reason 0x00).
        ClientDisconnect => "client_disconnect",
        /// The client sent DISCONNECT 0x04 (with will).
        ClientDisconnectWithWill => "client_disconnect_with_will",
        /// The client sent DISCONNECT with an error reason.
        ClientDisconnectError => "client_disconnect_error",
        /// The peer closed the socket without DISCONNECT.
        ConnectionLost => "connection_lost",
        /// Read or write error on the socket.
        IoError => "io_error",
        /// Keep alive expired (1.5x) [MQTT-3.1.2-22].
        KeepAliveTimeout => "keep_alive_timeout",
        /// No CONNECT within the connect timeout.
        ConnectTimeout => "connect_timeout",
        /// Malformed packet.
        MalformedPacket => "malformed_packet",
        /// Valid packet, wrong in this state (protocol error).
        ProtocolError => "protocol_error",
        /// Packet larger than the maximum packet size.
        PacketTooLarge => "packet_too_large",
        /// CONNECT refused (CONNACK with an error code).
        ConnectRefused => "connect_refused",
        /// A packet did not complete within `packet_timeout` of its first byte.
        PacketTimeout => "packet_timeout",
        /// CONNECT refused: client id longer than `max_client_id_length` (0x85 / 3.1.1 0x02).
        ClientIdTooLong => "client_id_too_long",
        /// Another connection took over the session (0x8E).
        SessionTakenOver => "session_taken_over",
        /// The socket stopped draining past the slow consumer deadline.
        SlowConsumer => "slow_consumer",
        /// The QoS 1/2 window stayed full with nothing acknowledged past the
        /// slow consumer deadline.
        WindowStalled => "window_stalled",
        /// Receive maximum exceeded by the client (0x93).
        ReceiveMaximumExceeded => "receive_maximum_exceeded",
        /// Topic alias invalid (0x94).
        TopicAliasInvalid => "topic_alias_invalid",
        /// Kicked by an operator.
        AdministrativeAction => "administrative_action",
        /// The broker is shutting down (0x8B).
        ServerShuttingDown => "server_shutting_down",
        /// Connection limit reached.
        ServerBusy => "server_busy",
        /// Handed to its home shard (not a close of the client's connection).
        HandedOff => "handed_off",
        /// A QoS 1/2 message could not be persisted.
        StorageError => "storage_error",
        /// TLS listener: the first bytes were not a TLS handshake record
        /// (plain MQTT or garbage instead of a ClientHello).
        TlsNotTls => "tls_not_tls",
        /// TLS handshake refused: no common version (TLS 1.0/1.1) or suite,
        /// a malformed or out-of-order handshake message.
        TlsHandshakeFailed => "tls_handshake_failed",
        /// mTLS: the client's certificate was missing, expired, or not
        /// issued by the configured CA.
        TlsBadCertificate => "tls_bad_certificate",
        /// A TLS error after the handshake (bad record, decryption failure).
        TlsError => "tls_error",
        /// The peer closed the socket in the middle of a TLS handshake.
        HandshakeTruncated => "handshake_truncated",
        /// The TLS handshake did not finish within the connect timeout (a
        /// stalled or slowloris handshake).
        HandshakeTimeout => "handshake_timeout",
        /// Plain listener: the client opened with a TLS ClientHello.
        TlsOnPlainListener => "tls_on_plain_listener",
        /// PROXY protocol listener: no valid v1/v2 header first.
        ProxyHeaderInvalid => "proxy_header_invalid",
        /// WebSocket upgrade request refused (HTTP 400/404/405/426/431, RFC 6455 4.2.1).
        WsUpgradeRefused => "ws_upgrade_refused",
        /// WebSocket protocol error: close 1002 (or 1007), RFC 6455 7.4.1.
        WsProtocolError => "ws_protocol_error",
        /// A WebSocket text frame: close 1003 [MQTT-6.0.0-1].
        WsUnsupportedData => "ws_unsupported_data",
        /// A WebSocket frame larger than the maximum packet size: close 1009.
        WsMessageTooBig => "ws_message_too_big",
        /// The client's WebSocket Close without MQTT DISCONNECT (the will is sent).
        WsClosedByPeer => "ws_closed_by_peer",
        /// Re-authentication failed (v5 DISCONNECT 0x87) [MQTT-4.12.1-2].
        NotAuthorized => "not_authorized",
        /// CONNECT refused: the cluster could not record the session's owner
        /// in time (no quorum: a minority partition), CONNACK 0x88 / 3.1.1 0x03.
        ClusterUnavailable => "cluster_unavailable",
    }
}

reasons! {
    /// How an authentication ended (CONNECT, or v5 re-authentication).
    AuthOutcome {
        /// No user name, anonymous clients allowed (or a user name with no
        /// password file, where anonymous clients are allowed).
        Anonymous => "anonymous",
        /// Password checked against the password file.
        Password => "password",
        /// SCRAM-SHA-256 exchange completed.
        Scram => "scram",
        /// The verified TLS client certificate's CN is the user name
        /// (`identity_as_username`); no password asked.
        TlsIdentity => "tls_identity",
        /// Re-authentication (AUTH 0x19) completed.
        Reauth => "reauth",
        /// No user name where anonymous clients are refused (0x87 / 0x05).
        AnonymousRefused => "anonymous_refused",
        /// User not in the password file (0x86 / 0x04; SCRAM 0x87).
        UnknownUser => "unknown_user",
        /// Wrong password or SCRAM proof (0x86 / 0x04; SCRAM 0x87).
        BadPassword => "bad_password",
        /// A user name without a password (0x86 / 0x04).
        NoPassword => "no_password",
        /// Unsupported Authentication Method (0x8C) [MQTT-4.12.0-1].
        BadMethod => "bad_method",
        /// A SCRAM message that does not parse, or asks what we do not offer (0x87).
        ScramFailed => "scram_failed",
        /// A packet out of place during the AUTH exchange (0x82).
        ProtocolError => "protocol_error",
        /// Too many password checks queued on this shard (0x89 / 0x03).
        Busy => "busy",
        /// Re-authentication failed (DISCONNECT 0x87).
        ReauthFailed => "reauth_failed",
    }
}

reasons! {
    /// Why a message was not delivered to a subscriber.
    DropReason {
        /// QoS 0 to a connection whose outbound buffer was full.
        QoS0BufferFull => "qos0_buffer_full",
        /// QoS 0 to an offline session.
        QoS0Offline => "qos0_offline",
        /// Session queue full by message count (overflow policy applied).
        QueueFull => "queue_full",
        /// Session byte budget (`max_queued_bytes`) full (overflow policy applied).
        QueueBytesFull => "queue_bytes_full",
        /// Message expiry interval passed before delivery.
        Expired => "expired",
        /// Larger than the subscriber's Maximum Packet Size [MQTT-3.1.2-25].
        TooLargeForClient => "too_large_for_client",
        /// The target shard's channel was closed.
        MeshClosed => "mesh_closed",
    }
}

reasons! {
    /// Where the ACL refused something.
    AclAction {
        /// SUBSCRIBE to a filter the client may not read (SUBACK 0x87/0x80).
        Subscribe => "subscribe",
        /// PUBLISH to a topic the client may not write.
        Publish => "publish",
        /// A message not delivered on a wildcard subscription.
        Deliver => "deliver",
        /// A retained message not replayed.
        Retained => "retained",
        /// A will not stored (its topic not writable).
        Will => "will",
    }
}

/// Upper bounds of the handshake time buckets, µs (the last bucket: above).
pub const HANDSHAKE_BUCKETS_US: [u64; 9] = [
    1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Counters of one listener on one shard. Written only by that shard.
#[derive(Debug)]
pub struct ListenerStats {
    /// Connections accepted on this listener.
    pub accepted: Counter,
    /// Connections of this listener served by this shard (gauge; a
    /// handed-off connection counts on its home shard).
    pub open: Counter,
    /// Connections closed before CONNECT was accepted, by reason (the
    /// transport's handshake failures among them), indexed by `CloseReason`.
    pub handshake_failures: Vec<Counter>,
    /// Transport handshakes (TLS) completed, their total time (µs) and
    /// counts per bucket of [`HANDSHAKE_BUCKETS_US`] (plus one above).
    pub handshakes: Counter,
    pub handshake_us: Counter,
    pub handshake_buckets: [Counter; 10],
}

impl Default for ListenerStats {
    fn default() -> Self {
        ListenerStats {
            accepted: Counter::default(),
            open: Counter::default(),
            handshake_failures: CloseReason::ALL
                .iter()
                .map(|_| Counter::default())
                .collect(),
            handshakes: Counter::default(),
            handshake_us: Counter::default(),
            handshake_buckets: Default::default(),
        }
    }
}

impl ListenerStats {
    /// Counts a transport handshake that took `us` microseconds.
    pub fn handshake_done(&self, us: u64) {
        self.handshakes.inc();
        self.handshake_us.add(us);
        let i = HANDSHAKE_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(HANDSHAKE_BUCKETS_US.len());
        self.handshake_buckets[i].inc();
    }
    /// Failures counted for `r`.
    pub fn failures_for(&self, r: CloseReason) -> u64 {
        self.handshake_failures[r as usize].get()
    }
}

/// Counters of one shard. Written only by that shard.
#[derive(Debug)]
pub struct ShardStats {
    /// Connections currently open on this shard (gauge).
    pub connections: Counter,
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// accept(2) calls that failed (EMFILE, ENFILE, ENOBUFS, ...): each one
    /// is followed by a backoff (`accept_backoff.rs`).
    pub accept_errors: Counter,
    /// io_uring backend: multishot receives the kernel ended because the
    /// shard's buffer ring was empty (reading slows; bytes wait in the socket).
    pub uring_buffers_dry: Counter,
    /// io_uring backend: `io_uring_enter` calls that submitted requests.
    pub uring_submits: Counter,
    /// io_uring backend: sends submitted as `SEND_ZC` (`--io-uring-send-zc`),
    /// and their notifications saying the kernel copied the bytes anyway
    /// (loopback always does).
    pub uring_sends_zc: Counter,
    pub uring_zc_copied: Counter,
    /// io_uring backend: times an idle shard gave its receive buffer ring's
    /// pages back to the kernel (`MADV_DONTNEED`, after 1 s without traffic).
    pub uring_ring_trims: Counter,
    /// Bytes of packets still being received, held in read buffers (gauge).
    pub partial_bytes: Counter,
    /// Times a connection stopped reading because the shard's partial-packet
    /// budget was spent (`net/read_budget.rs`).
    pub reads_paused: Counter,
    /// Sessions held by this shard, connected or not (gauge).
    pub sessions: Counter,
    /// Subscriptions held by this shard's sessions (gauge).
    pub subscriptions: Counter,
    /// Retained messages in this shard's replica (gauge).
    pub retained: Counter,
    /// PUBLISH packets received, by QoS.
    pub msgs_in: [Counter; 3],
    /// PUBLISH packets sent, by QoS.
    pub msgs_out: [Counter; 3],
    /// Bytes read from sockets.
    pub bytes_in: Counter,
    /// Bytes written to sockets.
    pub bytes_out: Counter,
    /// All packets received / sent.
    pub packets_in: Counter,
    /// All packets sent.
    pub packets_out: Counter,
    /// Outbound QoS 1/2 messages awaiting acknowledgement (gauge).
    pub inflight: Counter,
    /// Messages queued for sessions (gauge).
    pub queued: Counter,
    /// Closes by reason, indexed by `CloseReason as usize`.
    pub closes: Vec<Counter>,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: Vec<Counter>,
    /// Requests refused with a reason code while the connection stays open
    /// (PUBACK/PUBREC/SUBACK >= 0x80), indexed by the v5 reason code (also
    /// for 3.1.1 clients, whose answer carries less detail).
    pub refusals: Vec<Counter>,
    /// Messages sent to other shards over the mesh, and batches carrying them.
    pub mesh_msgs_out: Counter,
    /// Batches sent over the mesh.
    pub mesh_batches_out: Counter,
    /// Nanoseconds this shard spent busy (handling), for the busy ratio.
    pub busy_ns: Counter,
    /// PUBLISH payload bytes received, by QoS.
    pub publish_bytes_in: [Counter; 3],
    /// PUBLISH payload bytes sent, by QoS.
    pub publish_bytes_out: [Counter; 3],
    /// Storage commits, their total time (ns) and their latency buckets
    /// (`store::COMMIT_BUCKETS_US`), copied from the store every 100 ms.
    pub store_commits: Counter,
    pub store_commit_ns: Counter,
    /// Store ops committed, and ops cancelled before their commit.
    pub store_ops: Counter,
    pub store_ops_cancelled: Counter,
    /// QoS 1 copies deferred (`defer.rs`), and those stored at their deadline.
    pub deferred_rows: Counter,
    pub deferred_rows_stored: Counter,
    pub store_commit_buckets: [Counter; 12],
    /// Authentication outcomes, indexed by `AuthOutcome as usize`.
    pub auth: Vec<Counter>,
    /// ACL refusals, indexed by `AclAction as usize`.
    pub acl_denied: [Counter; 5],
    /// Per listener, in `ShardConfig::listen` order.
    pub listeners: Vec<ListenerStats>,
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            connections: Counter::default(),
            connections_total: Counter::default(),
            accept_errors: Counter::default(),
            uring_buffers_dry: Counter::default(),
            uring_submits: Counter::default(),
            uring_sends_zc: Counter::default(),
            uring_zc_copied: Counter::default(),
            uring_ring_trims: Counter::default(),
            partial_bytes: Counter::default(),
            reads_paused: Counter::default(),
            sessions: Counter::default(),
            subscriptions: Counter::default(),
            retained: Counter::default(),
            msgs_in: Default::default(),
            msgs_out: Default::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            packets_in: Counter::default(),
            packets_out: Counter::default(),
            inflight: Counter::default(),
            queued: Counter::default(),
            closes: CloseReason::ALL
                .iter()
                .map(|_| Counter::default())
                .collect(),
            drops: DropReason::ALL.iter().map(|_| Counter::default()).collect(),
            refusals: (0..=u8::MAX).map(|_| Counter::default()).collect(),
            mesh_msgs_out: Counter::default(),
            mesh_batches_out: Counter::default(),
            busy_ns: Counter::default(),
            publish_bytes_in: Default::default(),
            publish_bytes_out: Default::default(),
            store_commits: Counter::default(),
            store_commit_ns: Counter::default(),
            store_ops: Counter::default(),
            store_ops_cancelled: Counter::default(),
            deferred_rows: Counter::default(),
            deferred_rows_stored: Counter::default(),
            store_commit_buckets: Default::default(),
            auth: AuthOutcome::ALL
                .iter()
                .map(|_| Counter::default())
                .collect(),
            acl_denied: Default::default(),
            listeners: Vec::new(),
        }
    }
}

impl ShardStats {
    /// Counters for a shard serving `n` listeners.
    pub fn with_listeners(n: usize) -> Self {
        ShardStats {
            listeners: (0..n).map(|_| ListenerStats::default()).collect(),
            ..ShardStats::default()
        }
    }
    /// The counters of listener `i` (`None` for stats built without listeners).
    pub fn listener(&self, i: u16) -> Option<&ListenerStats> {
        self.listeners.get(i as usize)
    }
    /// Counts a close.
    pub fn close(&self, r: CloseReason) {
        self.closes[r as usize].inc();
    }
    /// Counts a drop.
    pub fn drop_msg(&self, r: DropReason) {
        self.drops[r as usize].inc();
    }
    /// Closes counted for `r`.
    pub fn closes_for(&self, r: CloseReason) -> u64 {
        self.closes[r as usize].get()
    }
    /// Drops counted for `r`.
    pub fn drops_for(&self, r: DropReason) -> u64 {
        self.drops[r as usize].get()
    }
    /// Counts an authentication outcome.
    pub fn auth(&self, o: AuthOutcome) {
        self.auth[o as usize].inc();
    }
    /// Authentication outcomes counted for `o`.
    pub fn auth_for(&self, o: AuthOutcome) -> u64 {
        self.auth[o as usize].get()
    }
    /// Counts a request refused with `code` (the connection stays open).
    pub fn refuse(&self, code: ringmq_codec::ReasonCode) {
        self.refusals[code as usize].inc();
    }
    /// Counts an ACL refusal.
    pub fn acl_deny(&self, a: AclAction) {
        self.acl_denied[a as usize].inc();
    }
    /// ACL refusals counted for `a`.
    pub fn acl_denied_for(&self, a: AclAction) -> u64 {
        self.acl_denied[a as usize].get()
    }
    /// Refusals counted for `code`.
    pub fn refusals_for(&self, code: ringmq_codec::ReasonCode) -> u64 {
        self.refusals[code as usize].get()
    }
}
