//! Wills across a cluster, as the shard sees them (docs/cluster.md, "Wills
//! and node loss"): a narrow door to the cluster's will registry, which the
//! broker implements on the raft crate (this crate knows nothing of Raft).
//!
//! - While a connection with a will is open, its will is registered in the
//!   cluster metadata under the connection's ownership epoch
//!   ([`WillRegistry::register`], no wait: nothing on the CONNECT or publish
//!   path awaits it). When this node dies, a surviving node publishes it
//!   after `--node-down-after` plus the will delay, through its own router.
//! - The will is discarded with the connection's will ([`WillRegistry::discard`]):
//!   DISCONNECT 0x00 [MQTT-3.1.2-10], a reconnect within the will delay
//!   [MQTT-3.1.3-9], a session fenced by a takeover on another node.
//! - Before this node publishes a will itself (connection lost, DISCONNECT
//!   0x04, delay over) it takes it out of the registry
//!   ([`WillRegistry::take`]); only if no other node did first is it
//!   published, so a will reaches subscribers once, cluster-wide.
//! - A survivor publishes a dead node's will through [`WillPublisher`]: a
//!   control message to the client's home shard, which routes it as its
//!   own will (the data plane forwards it to the other live nodes).
//!
//! Without a registry (a node alone) or with epoch 0 none of this runs: the
//! will is published at once, as always.

use crate::control::Control;
use crate::session::SessionId;
use crate::shard::Shard;
use ringmq_codec::LastWill;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

/// Whether this node may publish a will it took ([`WillRegistry::take`]).
pub type TakeFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// What the shards ask of the cluster about wills. Every call queues at
/// once (so calls made in order reach the cluster in order); none blocks.
pub trait WillRegistry: Send + Sync + 'static {
    /// The connection of `client_id` at ownership `epoch` carries `will`
    /// (encoded with [`crate::store::encode_will`]), to be published `delay`
    /// seconds after the connection is lost (the will delay, capped by the
    /// session expiry [MQTT-3.1.3-9]).
    fn register(&self, client_id: &[u8], epoch: u64, delay: u32, will: Vec<u8>);
    /// The will of that connection will never be published.
    fn discard(&self, client_id: &[u8], epoch: u64);
    /// This node wants to publish that will now: true when no other node
    /// took it first (then none will).
    fn take(&self, client_id: &[u8], epoch: u64) -> TakeFuture;
}

/// The registry in the shard configuration (`None`: a node alone).
#[derive(Clone)]
pub struct Registry(pub Arc<dyn WillRegistry>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wills::Registry")
    }
}

/// After CONNECT was accepted: registers the session's will, if any.
pub(crate) fn connected(shard: &Shard, sid: SessionId) {
    let Some(r) = &shard.cfg.wills else {
        return;
    };
    let sessions = shard.sessions.borrow();
    let Some(s) = sessions.get(sid as usize) else {
        return;
    };
    if let (Some(w), true) = (&s.will, s.epoch > 0) {
        let delay = w.properties.will_delay_interval.unwrap_or(0).min(s.expiry);
        let bytes = crate::store::encode_will(w);
        r.0.register(s.client_id.as_bytes(), s.epoch, delay, bytes);
    }
}

/// The will of the connection at `epoch` is discarded.
pub(crate) fn discarded(shard: &Shard, client_id: &[u8], epoch: u64) {
    if let (Some(r), true) = (&shard.cfg.wills, epoch > 0) {
        r.0.discard(client_id, epoch);
    }
}

/// Publishes the will of this node's connection at `epoch` [MQTT-3.1.2-8],
/// once cluster-wide: after taking it out of the registry when there is one.
pub(crate) fn publish(shard: &Rc<Shard>, client_id: &[u8], epoch: u64, w: LastWill) {
    match (&shard.cfg.wills, epoch > 0) {
        (Some(r), true) => {
            let took = r.0.take(client_id, epoch);
            let shard = shard.clone();
            glommio::spawn_local(async move {
                // Not taken: a survivor published it (this node was
                // thought dead) or it was never this node's to publish.
                if took.await {
                    crate::route::publish_will(&shard, w);
                }
            })
            .detach();
        }
        _ => crate::route::publish_will(shard, w),
    }
}

/// Publishes wills taken from the registry for a dead node's clients, each
/// on its client's home shard (`Send + Clone`: the broker's will thread
/// holds it).
#[derive(Clone)]
pub struct WillPublisher {
    controls: Vec<flume::Sender<Control>>,
}

impl WillPublisher {
    pub(crate) fn new(controls: Vec<flume::Sender<Control>>) -> Self {
        WillPublisher { controls }
    }

    /// Publishes `will` (the registered bytes) as `client_id`'s will; false
    /// when the bytes are not a will or the shard is gone.
    pub fn publish(&self, client_id: &[u8], will: &[u8]) -> bool {
        let Some(w) = crate::store::decode_will(will) else {
            return false;
        };
        let home = crate::connection::home_shard(client_id, self.controls.len());
        self.controls[home]
            .send(Control::PublishWill(Box::new(w)))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use ringmq_codec::{LastWill, MqttString, QoS, TopicName, WillProperties};

    #[test]
    fn a_registered_will_comes_back_whole() {
        let w = LastWill {
            topic: TopicName::try_from("dev/7/status").unwrap(),
            payload: bytes::Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(30),
                message_expiry_interval: Some(600),
                content_type: Some(MqttString::try_from("text/plain").unwrap()),
                correlation_data: Some(bytes::Bytes::from_static(b"c")),
                user_properties: vec![(
                    MqttString::try_from("k").unwrap(),
                    MqttString::try_from("v").unwrap(),
                )],
                ..Default::default()
            },
        };
        let b = crate::store::encode_will(&w);
        assert_eq!(crate::store::decode_will(&b), Some(w));
        // Bytes that are not a will, cut or with more after it, are refused.
        assert_eq!(crate::store::decode_will(&b[..b.len() - 1]), None);
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(crate::store::decode_will(&longer), None);
        assert_eq!(crate::store::decode_will(&[0]), None);
    }
}
