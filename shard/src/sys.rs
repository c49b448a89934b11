//! `$SYS/broker/...` topics, as Mosquitto publishes them, from shard 0; per
//! node in a cluster (`$` topics stay on their node), with `$SYS/broker/cluster/node`.

use crate::shard::Shard;
use crate::stats::ShardStats;
use bytes::Bytes;
use ringmq_codec::{Publish, PublishProperties, QoS, TopicName};
use std::rc::Rc;
use std::sync::Arc;

fn sys_publish(topic: &str, value: String) -> Option<Publish> {
    Some(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: TopicName::try_from(topic).ok()?,
        packet_id: None,
        properties: PublishProperties::default().into(),
        payload: Bytes::from(value),
    })
}

/// Publishes broker statistics every `sys_interval` (retained, QoS 0).
pub(crate) async fn publish_loop(shard: Rc<Shard>, all: Arc<Vec<Arc<ShardStats>>>) {
    loop {
        glommio::timer::sleep(shard.cfg.sys_interval).await;
        if shard.stopping.get() {
            return;
        }
        let sum = |f: &dyn Fn(&ShardStats) -> u64| all.iter().map(|s| f(s)).sum::<u64>();
        let values = [
            (
                "$SYS/broker/version",
                format!("ringmq {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/uptime",
                format!("{} seconds", shard.started.elapsed().as_secs()),
            ),
            (
                "$SYS/broker/clients/connected",
                sum(&|s| s.connections.get()).to_string(),
            ),
            (
                "$SYS/broker/clients/total",
                sum(&|s| s.sessions.get()).to_string(),
            ),
            (
                "$SYS/broker/messages/received",
                sum(&|s| s.msgs_in.iter().map(|c| c.get()).sum()).to_string(),
            ),
            (
                "$SYS/broker/messages/sent",
                sum(&|s| s.msgs_out.iter().map(|c| c.get()).sum()).to_string(),
            ),
            (
                "$SYS/broker/bytes/received",
                sum(&|s| s.bytes_in.get()).to_string(),
            ),
            (
                "$SYS/broker/bytes/sent",
                sum(&|s| s.bytes_out.get()).to_string(),
            ),
            (
                "$SYS/broker/subscriptions/count",
                sum(&|s| s.subscriptions.get()).to_string(),
            ),
            (
                "$SYS/broker/retained messages/count",
                shard.stats.retained.get().to_string(),
            ),
        ];
        // In a cluster every node publishes its own figures and `$` topics never
        // cross a node link: this one says which node a subscriber is reading.
        let node = shard
            .cfg
            .cluster
            .as_ref()
            .map(|c| ("$SYS/broker/cluster/node", c.node_id.to_string()));
        for (topic, value) in values.into_iter().chain(node) {
            if let Some(p) = sys_publish(topic, value) {
                crate::route::route(&shard, p, None, None);
            }
        }
    }
}
