//! Helpers shared by the `store_*` tests (included with `#[path]`): temp data
//! dirs, a glommio executor to run store code on, sample records.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use ringmq_codec::{
    LastWill, MqttString, ProtocolVersion, Publish, PublishProperties, QoS, SubscriptionOptions,
    TopicFilter, TopicName, WillProperties,
};
use ringmq_shard::store::{
    self, Durability, Recovery, SessionRecord, StoreOptions, StoredMessage, SubscriptionRecord,
};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ringmq-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` on a fresh glommio executor (store code needs one) and returns its output.
pub fn on_executor<G, F, T>(f: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("join")
}

pub fn opts(durability: Durability) -> StoreOptions {
    StoreOptions {
        durability,
        ..Default::default()
    }
}

pub fn open(dir: &Path, shards: u16) -> Recovery {
    store::open(dir, shards, &opts(Durability::Sync)).expect("open")
}

pub fn msg(topic: &str, qos: QoS, payload: &'static [u8]) -> StoredMessage {
    StoredMessage {
        publish: Publish {
            dup: false,
            qos,
            retain: false,
            topic: TopicName::try_from(topic).unwrap(),
            packet_id: None,
            properties: PublishProperties::default().into(),
            payload: Bytes::from_static(payload),
        },
        received_at_ms: 1_700_000_000_000,
    }
}

/// A message with every stored property set (packet id and DUP are per
/// delivery and not part of a stored message).
pub fn rich_msg() -> StoredMessage {
    let mut m = msg("a/b/c", QoS::ExactlyOnce, b"payload \x00\xff");
    m.publish.retain = true;
    let p = &mut m.publish.properties;
    p.payload_format_indicator = Some(1);
    p.message_expiry_interval = Some(3600);
    p.response_topic = Some(TopicName::try_from("reply/to").unwrap());
    p.correlation_data = Some(Bytes::from_static(b"corr"));
    p.content_type = Some(MqttString::try_from("text/plain").unwrap());
    p.user_properties = vec![(
        MqttString::try_from("k").unwrap(),
        MqttString::try_from("v").unwrap(),
    )];
    p.subscription_identifiers.push(7);
    p.subscription_identifiers.push(268_435_455);
    m
}

pub fn session(client_id: &str, expiry: u32) -> SessionRecord {
    SessionRecord {
        client_id: MqttString::try_from(client_id).unwrap(),
        protocol: ProtocolVersion::V5,
        expiry_interval: expiry,
        disconnected_at_ms: None,
        will: None,
        // Stored and read back like the rest (the ACL's user after a restart).
        owner: ringmq_shard::store::Owner::User("alice".into()),
    }
}

pub fn will() -> LastWill {
    LastWill {
        topic: TopicName::try_from("wills/x").unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: Some(30),
            content_type: Some(MqttString::try_from("text").unwrap()),
            ..Default::default()
        },
    }
}

pub fn sub(filter: &str, qos: QoS, id: Option<u32>) -> SubscriptionRecord {
    SubscriptionRecord {
        filter: TopicFilter::try_from(filter).unwrap(),
        options: SubscriptionOptions {
            qos,
            no_local: true,
            retain_as_published: true,
            retain_handling: ringmq_codec::RetainHandling::SendIfNew,
        },
        subscription_id: id,
    }
}
