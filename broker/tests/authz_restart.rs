//! The ACL decides for a persistent session restored after a kill -9 before its client is
//! back (issue 12): the session's owner (the user it authenticated as) is stored with it, so
//! messages published after the restart and before the reconnect are queued exactly as the
//! owner's rules allow: readable topics kept (on a wholly readable and on a partly readable
//! subscription), denied ones not. The `ringmq` binary with `--durability sync`, our codec
//! client (exact packets), 3.1.1 and 5.0, 1 and 2 shards, owner and publisher on different
//! home shards.
mod common;

use std::time::Duration;

use common::persist::{
    args, disconnect, persistent_connect, publish_acked, qos, subscribe, DataDir, Durable, Inbox,
};
use common::raw::{connect_packet, publish_packet, version};
use common::{spread_ids, Proto, Raw, QUIET};
use ringmq_codec::{MqttString, ProtocolVersion, SubscriptionOptions};

const PHASE: Duration = Duration::from_secs(10);

const ACL: &str = "\
user alice
topic read sensors/#
topic deny sensors/private/#
topic read feed/#

user bob
topic write sensors/#
topic write feed/#
";

fn user(mut c: ringmq_codec::Connect, name: &str) -> ringmq_codec::Connect {
    c.username = Some(MqttString::try_from(name).unwrap());
    c
}

fn start(dir: &DataDir, acl: &std::path::Path, shards: usize) -> Durable {
    let acl = acl.to_str().unwrap();
    Durable::start_args(&args(&dir.path, shards, "sync", &["--acl-file", acl]))
}

async fn restored_session_obeys_its_owners_rules(proto: Proto, shards: usize) {
    let v: ProtocolVersion = version(proto);
    let dir = DataDir::new();
    let acl = dir.path.with_extension("acl");
    std::fs::write(&acl, ACL).unwrap();
    let ids = spread_ids("owner", 2, shards);
    let (alice_id, bob_id) = (&ids[0], &ids[1]);
    let mut broker = start(&dir, &acl, shards);
    {
        let c = user(persistent_connect(v, alice_id, 3600), "alice");
        let (mut alice, _) = Raw::connect_with(broker.addr, c).await;
        // Partly readable (sensors/private/# denied): checked per delivered topic.
        subscribe(
            &mut alice,
            1,
            "sensors/#",
            SubscriptionOptions::with_qos(qos(1)),
            None,
        )
        .await;
        // Wholly readable: no check per message.
        subscribe(
            &mut alice,
            2,
            "feed/#",
            SubscriptionOptions::with_qos(qos(1)),
            None,
        )
        .await;
        disconnect(alice).await;
    }
    broker.kill9();

    let broker = start(&dir, &acl, shards);
    let c = user(connect_packet(v, bob_id, true), "bob");
    let (mut bob, _) = Raw::connect_with(broker.addr, c).await;
    // Published after the restart, before alice is back: queued for her session by her rules.
    for (i, t) in ["sensors/a", "sensors/private/x", "feed/1", "sensors/b"]
        .iter()
        .enumerate()
    {
        let payload = format!("m{i}");
        publish_acked(
            &mut bob,
            publish_packet(t, 1, false, i as u16 + 1, payload.as_bytes()),
        )
        .await;
    }
    let c = user(persistent_connect(v, alice_id, 3600), "alice");
    let (alice, ack) = Raw::connect_with(broker.addr, c).await;
    assert!(ack.session_present, "the session survived kill -9");
    let mut inbox = Inbox::new(alice);
    inbox
        .until(PHASE, "the 3 readable messages", |i| i.got.len() >= 3)
        .await;
    // Nothing more arrives: the denied one was never queued.
    while inbox.pump(QUIET).await {}
    let got: Vec<&str> = inbox.got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(got, ["sensors/a", "feed/1", "sensors/b"]);
}

mod restored_session_obeys_its_owners_rules {
    use super::*;
    #[tokio::test]
    async fn v311_1shard() {
        restored_session_obeys_its_owners_rules(Proto::V4, 1).await
    }
    #[tokio::test]
    async fn v311_2shards() {
        restored_session_obeys_its_owners_rules(Proto::V4, 2).await
    }
    #[tokio::test]
    async fn v5_1shard() {
        restored_session_obeys_its_owners_rules(Proto::V5, 1).await
    }
    #[tokio::test]
    async fn v5_2shards() {
        restored_session_obeys_its_owners_rules(Proto::V5, 2).await
    }
}
