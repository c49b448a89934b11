//! The door into a shard from outside threads (main, admin socket, tests).
//!
//! Each shard reads its own `flume` channel of [`Control`] messages on a task
//! of its own; replies travel back on the channel the request carried. This
//! path is for operators and is never on the message hot path.

/// A request to one shard.
#[derive(Debug)]
pub enum Control {
    /// Stop accepting, tell v5 clients 0x8B, close every connection, stop the shard.
    Shutdown,
    /// Stop accepting new connections; shed existing ones gradually.
    Drain,
    /// Use this password file from now on (reload).
    /// The shard id goes back on the sender once done.
    SetPasswords(
        Option<std::sync::Arc<crate::access::passwd::PasswordFile>>,
        flume::Sender<usize>,
    ),
    /// Put new ACL rules in force (a reload parsed them): existing
    /// subscriptions are classified again, every check uses them from now.
    /// The shard id goes back on the sender once done.
    SetAcl(
        std::sync::Arc<crate::access::acl::Acl>,
        flume::Sender<usize>,
    ),
    /// The cluster moved this client's ownership to another node at `epoch`:
    /// a session here with an older epoch is closed (0x8E) and discarded.
    Fence { client_id: String, epoch: u64 },
    /// Ask something; the reply goes to the sender.
    Query(Query, flume::Sender<Reply>),
    /// Shard 0 of a cluster node: ask other nodes over the node links
    /// (`ringmq ctl clients` cluster-wide); answers go to the ask's sender.
    AskPeers(crate::cluster::ops::AskClients),
}

/// Operator questions and actions answered by a shard about what it owns.
#[derive(Clone, Debug)]
pub enum Query {
    /// Connected clients whose id contains `pattern` (all when `None`).
    Clients { pattern: Option<String> },
    /// One client's session, if this shard owns it.
    ClientShow { client_id: String },
    /// Disconnect a client (v5: DISCONNECT 0x98 Administrative action).
    Kick { client_id: String },
    /// Every session this shard owns, connected or not.
    Sessions,
    /// Subscriptions of this shard's sessions, optionally those matching a topic.
    Subscriptions { topic: Option<String> },
    /// Retained messages matching a filter (at most `limit`); shard 0 answers for all.
    RetainedList { filter: String, limit: usize },
    /// Delete a retained message (every shard drops its replica).
    RetainedDelete { topic: String },
}

/// A client or session as the admin socket shows it.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub client_id: String,
    pub shard: usize,
    pub connected: bool,
    pub protocol: u8,
    pub peer: Option<String>,
    pub keep_alive: u16,
    pub clean_start: bool,
    pub session_expiry: u32,
    pub subscriptions: usize,
    pub inflight: usize,
    pub queued: usize,
    /// Bytes of QoS 1/2 messages held (in flight and queued), against `max_queued_bytes`.
    pub held_bytes: u64,
    /// QoS 1/2 messages this session dropped, by reason (`DropReason::as_str`), non-zero only.
    pub dropped: Vec<(String, u64)>,
}

/// One subscription as the admin socket shows it.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionInfo {
    pub client_id: String,
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
}

/// One retained message as the admin socket shows it.
#[derive(Clone, Debug, Default)]
pub struct RetainedInfo {
    pub topic: String,
    pub qos: u8,
    pub payload_len: usize,
}

/// A shard's answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Clients or sessions.
    Clients(usize, Vec<ClientInfo>),
    /// Subscriptions.
    Subscriptions(usize, Vec<SubscriptionInfo>),
    /// Retained messages.
    Retained(usize, Vec<RetainedInfo>),
    /// An action's result: whether this shard found and acted on the target.
    Done(usize, bool),
}
