//! The ACL file (Mosquitto's `acl_file` format) enforced on a running broker,
//! with rumqttc v4/v5 (clients we did not write) and our codec client for
//! exact reason codes; 1 and 2 shards, publisher and subscriber on
//! different home shards. Reloads (good and bad files) and `$SYS`.
#[macro_use]
mod common;

use common::raw::{connect_packet, publish_packet, version};
use common::*;
use ringmq_codec::{MqttString, Packet, ReasonCode};
use ringmq_shard::stats::AclAction;
use std::path::PathBuf;
use std::time::Duration;

const ACL: &str = "\
# anonymous clients
topic read public/#
topic deny public/secret
topic read $SYS/#

user alice
topic readwrite alice/#
topic read sensors/#
topic deny sensors/private/#

user bob
topic readwrite bob/#
topic write sensors/#
topic write public/#

pattern readwrite devices/%c/#
";

/// A broker whose ACL file holds `text`; returns it and the file.
fn acl_broker(proto: Proto, shards: usize, text: &str) -> (Ctx, PathBuf) {
    let dir = broker::scratch_dir();
    let f = dir.join("acl");
    std::fs::write(&f, text).unwrap();
    let f2 = f.clone();
    let b = Broker::start_with(shards, move |c| {
        c.access.acl_file = Some(f2);
        c.sys_interval = Duration::from_millis(200);
    });
    (Ctx { proto, broker: b }, f)
}

fn denied(ctx: &Ctx, a: AclAction) -> u64 {
    ctx.broker.stat(|s| s.acl_denied_for(a))
}

/// The SUBACK code of a refused filter: v5 0x87, 3.1.1 0x80.
fn refused(ctx: &Ctx) -> u8 {
    if ctx.proto == Proto::V5 {
        0x87
    } else {
        0x80
    }
}

macro_rules! acl_matrix {
    ($( fn $name:ident; )*) => {$(
        mod $name {
            use super::*;
            #[tokio::test] async fn v311_1shard() { super::$name(Proto::V4, 1).await }
            #[tokio::test] async fn v311_2shards() { super::$name(Proto::V4, 2).await }
            #[tokio::test] async fn v5_1shard() { super::$name(Proto::V5, 1).await }
            #[tokio::test] async fn v5_2shards() { super::$name(Proto::V5, 2).await }
        }
    )*};
}

acl_matrix! {
    fn subscribe_to_unreadable_filter_is_refused;
    fn publish_without_write_access_is_dropped_and_counted;
    fn wildcard_subscription_checked_per_delivered_topic;
    fn retained_replay_obeys_the_acl;
    fn will_the_client_may_not_publish_is_not_stored;
    fn patterns_substitute_the_client_id;
    fn reload_applies_from_the_next_delivery_and_a_bad_file_keeps_the_rules;
    fn sys_topics_follow_dollar_rules;
    fn anonymous_and_unknown_users_get_their_sections;
    fn shared_subscriptions_are_classified_by_their_inner_filter;
    fn a_will_made_unwritable_by_a_reload_is_not_published;
}

/// Mosquitto grants any SUBSCRIBE and filters per message; ringmq answers a
/// filter no topic of which is readable with SUBACK 0x87 (v5) / 0x80
/// Failure (3.1.1) [MQTT-3.9.3-1]; the others in the same SUBSCRIBE are granted.
async fn subscribe_to_unreadable_filter_is_refused(proto: Proto, shards: usize) {
    let (ctx, _) = acl_broker(proto, shards, ACL);
    let mut a = Client::connect(ctx.opts("sub-a").user("alice")).await;
    assert_eq!(a.subscribe("bob/#", 1).await, vec![refused(&ctx)]);
    assert_eq!(
        a.subscribe("sensors/private/#", 1).await,
        vec![refused(&ctx)]
    );
    assert_eq!(a.subscribe("alice/#", 1).await, vec![1]);
    assert_eq!(a.subscribe("sensors/+/t", 0).await, vec![0]);
    assert_eq!(denied(&ctx, AclAction::Subscribe), 2);
    // A refused subscription receives nothing.
    let b = Client::connect(ctx.opts("sub-b").user("bob")).await;
    b.publish("bob/x", 1, false, "x").await;
    a.expect_none(QUIET, "bob/# was refused").await;
}

/// A PUBLISH without write access is not routed. 3.1.1 has no error code
/// in PUBACK, so the client is acknowledged and the message dropped
/// (Mosquitto 2.x does the same); counted either way.
async fn publish_without_write_access_is_dropped_and_counted(proto: Proto, shards: usize) {
    let (ctx, _) = acl_broker(proto, shards, ACL);
    let (pid, sid) = ctx.pair_ids("pubw");
    let mut bob = Client::connect(ctx.opts(&sid).user("bob")).await;
    assert_eq!(bob.subscribe("bob/#", 1).await, vec![1]);
    let mut alice = Client::connect(ctx.opts(&pid).user("alice")).await;
    alice.publish("bob/inbox", 1, false, "no").await;
    alice.wait_acked(1).await;
    alice.publish("bob/inbox", 0, false, "no").await;
    alice.publish("alice/x", 0, false, "mine").await;
    bob.expect_none(QUIET, "denied publishes are dropped").await;
    assert_eq!(denied(&ctx, AclAction::Publish), 2);
    // Exact answers from our codec client.
    let v = version(proto);
    let mut c = connect_packet(v, "raw-alice", true);
    c.username = Some(MqttString::try_from("alice").unwrap());
    let (mut raw, _) = common::Raw::connect_with(ctx.broker.addr, c).await;
    raw.send(&Packet::Publish(publish_packet(
        "bob/inbox",
        1,
        false,
        7,
        b"x",
    )))
    .await;
    let Packet::PubAck(ack) = raw.expect_packet("PUBACK").await else {
        panic!("PUBACK expected")
    };
    let want = if proto == Proto::V5 {
        ReasonCode::NotAuthorized
    } else {
        ReasonCode::Success
    };
    assert_eq!(ack.reason, want, "v5 PUBACK 0x87; 3.1.1 plain PUBACK");
    raw.send(&Packet::Publish(publish_packet(
        "bob/inbox",
        2,
        false,
        8,
        b"x",
    )))
    .await;
    let Packet::PubRec(rec) = raw.expect_packet("PUBREC").await else {
        panic!("PUBREC expected")
    };
    assert_eq!(rec.reason, want);
    bob.expect_none(QUIET, "still nothing").await;
    assert_eq!(denied(&ctx, AclAction::Publish), 4);
}

/// `sensors/#` is readable except `sensors/private/#`: the subscription is
/// granted and each delivered topic is checked (Mosquitto checks read per message).
async fn wildcard_subscription_checked_per_delivered_topic(proto: Proto, shards: usize) {
    let (ctx, _) = acl_broker(proto, shards, ACL);
    let (pid, sid) = ctx.pair_ids("wild");
    let mut alice = Client::connect(ctx.opts(&sid).user("alice")).await;
    assert_eq!(alice.subscribe("sensors/#", 1).await, vec![1]);
    let bob = Client::connect(ctx.opts(&pid).user("bob")).await;
    for t in ["sensors/1/t", "sensors/private/key", "sensors/2/t"] {
        bob.publish(t, 1, false, t.to_string()).await;
    }
    let got: Vec<String> = alice
        .recv_n(2, "readable")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(got, ["sensors/1/t", "sensors/2/t"]);
    alice.expect_none(QUIET, "private not delivered").await;
    assert_eq!(denied(&ctx, AclAction::Deliver), 1);
}

async fn retained_replay_obeys_the_acl(proto: Proto, shards: usize) {
    let (ctx, _) = acl_broker(proto, shards, ACL);
    let (pid, sid) = ctx.pair_ids("ret");
    let mut bob = Client::connect(ctx.opts(&pid).user("bob")).await;
    for t in ["sensors/a", "sensors/private/b"] {
        bob.publish(t, 1, true, "r").await;
        bob.wait_acked(1).await;
    }
    let mut alice = Client::connect(ctx.opts(&sid).user("alice")).await;
    let want = 2 * ctx.shards() as u64;
    check_for(WAIT, "retained on every shard", || {
        let n = ctx.broker.stat(|s| s.retained.get());
        async move { (n >= want).then_some(()) }
    })
    .await;
    assert_eq!(alice.subscribe("sensors/#", 1).await, vec![1]);
    let m = alice.recv("readable retained").await;
    assert_eq!((m.topic.as_str(), m.retain), ("sensors/a", true));
    alice
        .expect_none(QUIET, "private retained not replayed")
        .await;
    assert_eq!(denied(&ctx, AclAction::Retained), 1);
}

/// A will whose topic the client may not publish to is not stored (Mosquitto
/// 2.x refuses it at CONNECT); one it may publish is sent as usual.
async fn will_the_client_may_not_publish_is_not_stored(proto: Proto, shards: usize) {
    let (ctx, _) = acl_broker(proto, shards, ACL);
    let (pid, sid) = ctx.pair_ids("will");
    let mut bob = Client::connect(ctx.opts(&sid).user("bob")).await;
    assert_eq!(bob.subscribe("bob/#", 1).await, vec![1]);
    let mut alice2 = Client::connect(ctx.opts(&format!("{sid}-2")).user("alice")).await;
    assert_eq!(alice2.subscribe("alice/#", 1).await, vec![1]);
    let a = Client::connect(ctx.opts(&pid).user("alice").will("bob/will", "w", 1, false)).await;
    assert_eq!(denied(&ctx, AclAction::Will), 1);
    a.kill().await;
    bob.expect_none(QUIET, "refused will not published").await;
    let a = Client::connect(ctx.opts(&format!("{pid}-ok")).user("alice").will(
        "alice/will",
        "w",
        1,
        false,
    ))
    .await;
    a.kill().await;
    assert_eq!(alice2.recv("permitted will").await.topic, "alice/will");
}

async fn patterns_substitute_the_client_id(proto: Proto, shards: usize) {
    let (ctx, _) = acl_broker(proto, shards, ACL);
    let (d1, d2) = ctx.pair_ids("dev");
    let mut c1 = Client::connect(ctx.opts(&d1).user("zed")).await;
    assert_eq!(c1.subscribe(&format!("devices/{d1}/#"), 1).await, vec![1]);
    assert_eq!(
        c1.subscribe(&format!("devices/{d2}/#"), 1).await,
        vec![refused(&ctx)]
    );
    let mut c2 = Client::connect(ctx.opts(&d2)).await;
    c2.publish(&format!("devices/{d1}/x"), 1, false, "not yours")
        .await;
    c2.wait_acked(1).await;
    c1.publish(&format!("devices/{d1}/x"), 1, false, "mine")
        .await;
    assert_eq!(c1.recv("own device topic").await.text(), "mine");
    c1.expect_none(QUIET, "other client's write was refused")
        .await;
    // A client id holding + or # gets nothing from patterns (Mosquitto 2.x).
    let mut bad = Client::connect(ctx.opts("dev+x")).await;
    assert_eq!(bad.subscribe("devices/+/#", 0).await, vec![refused(&ctx)]);
}

/// New rules apply to existing subscriptions from the next delivery on; a
/// file that fails to parse keeps the previous rules and says file:line.
async fn reload_applies_from_the_next_delivery_and_a_bad_file_keeps_the_rules(
    proto: Proto,
    shards: usize,
) {
    let (ctx, file) = acl_broker(proto, shards, ACL);
    let (pid, sid) = ctx.pair_ids("rel");
    let mut anon = Client::connect(ctx.opts(&sid)).await;
    assert_eq!(anon.subscribe("public/#", 1).await, vec![1]);
    let bob = Client::connect(ctx.opts(&pid).user("bob")).await;
    bob.publish("public/news", 1, false, "before").await;
    assert_eq!(anon.recv("before reload").await.text(), "before");
    std::fs::write(&file, format!("topic deny public/news\n{ACL}")).unwrap();
    let out = ctx.broker.handle().reload();
    assert!(out.iter().all(|o| o.ok), "{out:?}");
    assert_eq!(out[0].name, "acl");
    bob.publish("public/news", 1, false, "after").await;
    bob.publish("public/other", 1, false, "other").await;
    assert_eq!(anon.recv("still readable").await.topic, "public/other");
    // Broken file: the reload fails with file:line, the rules stay.
    std::fs::write(&file, "topic read #\ntopic readwrit public/#\n").unwrap();
    let out = ctx.broker.handle().reload();
    assert!(!out[0].ok);
    let want = format!("{}:2: ", file.display());
    assert!(out[0].message.starts_with(&want), "{}", out[0].message);
    bob.publish("public/news", 1, false, "still denied").await;
    bob.publish("public/other", 1, false, "other2").await;
    assert_eq!(anon.recv("old rules kept").await.text(), "other2");
    anon.expect_none(QUIET, "public/news stays denied").await;
    // A missing file fails the same way.
    std::fs::remove_file(&file).unwrap();
    let out = ctx.broker.handle().reload();
    assert!(
        !out[0].ok && out[0].message.contains("cannot read"),
        "{out:?}"
    );
}

/// Only rules starting with `$` match `$SYS` topics; no client publishes
/// under `$SYS` (Mosquitto 2.x); `#` never matches `$SYS` [MQTT-4.7.2-1].
async fn sys_topics_follow_dollar_rules(proto: Proto, shards: usize) {
    let (ctx, _) = acl_broker(proto, shards, ACL);
    let mut anon = Client::connect(ctx.opts("sys-anon")).await;
    assert_eq!(anon.subscribe("$SYS/#", 0).await, vec![0]);
    assert!(anon.recv("a $SYS message").await.topic.starts_with("$SYS/"));
    let mut alice = Client::connect(ctx.opts("sys-alice").user("alice")).await;
    assert_eq!(alice.subscribe("$SYS/#", 0).await, vec![refused(&ctx)]);
    let before = denied(&ctx, AclAction::Publish);
    let mut bob = Client::connect(ctx.opts("sys-bob").user("bob")).await;
    bob.publish("$SYS/fake", 1, false, "x").await;
    bob.wait_acked(1).await;
    assert_eq!(denied(&ctx, AclAction::Publish), before + 1);
}

async fn anonymous_and_unknown_users_get_their_sections(proto: Proto, shards: usize) {
    let (ctx, _) = acl_broker(proto, shards, ACL);
    let mut anon = Client::connect(ctx.opts("anon-1")).await;
    assert_eq!(anon.subscribe("public/#", 0).await, vec![0]);
    assert_eq!(
        anon.subscribe("public/secret", 0).await,
        vec![refused(&ctx)]
    );
    let mut zed = Client::connect(ctx.opts("zed-1").user("zed")).await;
    assert_eq!(zed.subscribe("public/#", 0).await, vec![refused(&ctx)]);
}

/// The will is checked again when it would be published: rules reloaded
/// since CONNECT apply to it.
async fn a_will_made_unwritable_by_a_reload_is_not_published(proto: Proto, shards: usize) {
    let before = format!("{ACL}user carol\ntopic read alice/#\n");
    let (ctx, file) = acl_broker(proto, shards, &before);
    let (pid, sid) = ctx.pair_ids("rwill");
    let mut carol = Client::connect(ctx.opts(&sid).user("carol")).await;
    assert_eq!(carol.subscribe("alice/#", 1).await, vec![1]);
    // Control: a will allowed at CONNECT and still allowed reaches carol.
    let a = Client::connect(
        ctx.opts(&format!("{pid}-1"))
            .user("alice")
            .will("alice/w1", "w", 1, false),
    )
    .await;
    a.kill().await;
    assert_eq!(
        carol.recv("will under the old rules").await.topic,
        "alice/w1"
    );
    let a = Client::connect(
        ctx.opts(&pid)
            .user("alice")
            .will("alice/will", "w", 1, false),
    )
    .await;
    assert_eq!(denied(&ctx, AclAction::Will), 0, "allowed at CONNECT");
    std::fs::write(
        &file,
        format!("{before}user alice\ntopic deny alice/will\n"),
    )
    .unwrap();
    assert!(ctx.broker.handle().reload().iter().all(|o| o.ok));
    a.kill().await;
    check_for(WAIT, "will refused at close", || {
        let n = denied(&ctx, AclAction::Will);
        async move { (n == 1).then_some(()) }
    })
    .await;
    carol.expect_none(QUIET, "no will after the reload").await;
}

/// `$share/GROUP/FILTER` is decided on FILTER (Mosquitto checks the topic
/// of each message it delivers, the group name plays no part).
async fn shared_subscriptions_are_classified_by_their_inner_filter(proto: Proto, shards: usize) {
    let (ctx, _) = acl_broker(proto, shards, ACL);
    let (pid, sid) = ctx.pair_ids("share");
    let mut alice = Client::connect(ctx.opts(&sid).user("alice")).await;
    assert_eq!(
        alice.subscribe("$share/g/bob/#", 1).await,
        vec![refused(&ctx)]
    );
    assert_eq!(alice.subscribe("$share/g/sensors/#", 1).await, vec![1]);
    let mut bob = Client::connect(ctx.opts(&pid).user("bob")).await;
    for t in ["sensors/private/x", "sensors/1/t"] {
        bob.publish(t, 1, false, t.to_string()).await;
        bob.wait_acked(1).await;
    }
    assert_eq!(
        alice.recv("readable shared delivery").await.topic,
        "sensors/1/t"
    );
    alice.expect_none(QUIET, "private not delivered").await;
    assert_eq!(denied(&ctx, AclAction::Deliver), 1);
}

/// A persistent session outlives a restart with its owner's username stored,
/// so its rules apply before its client reconnects: a readable message
/// published meanwhile is queued for it (not refused), an unreadable one is
/// refused and counted, before and after the reconnect. Operator bans survive
/// the restart too (`DATA_DIR/bans.txt`). The real binary, `--durability sync`.
/// (`authz_restart.rs` covers the same after kill -9, 1 and 2 shards.)
#[tokio::test]
async fn restored_sessions_keep_their_rules_across_a_restart_and_bans_persist() {
    use common::persist::{args, DataDir, Durable};
    for proto in [Proto::V4, Proto::V5] {
        let dir = DataDir::new();
        let acl = broker::scratch_dir().join("acl");
        std::fs::write(&acl, ACL).unwrap();
        let a = acl.to_str().unwrap();
        let argv = args(
            &dir.path,
            2,
            "sync",
            &["--acl-file", a, "--metrics-listen", "127.0.0.1:0"],
        );
        let mut b = Durable::start_args(&argv);
        let opts = |id: &str, addr| Opts::new(proto, addr, id);
        let (aid, bid) = cross_shard_ids("restore", 2);
        let mut alice = Client::connect(opts(&aid, b.addr).user("alice").persistent(3600)).await;
        assert_eq!(alice.subscribe("sensors/#", 1).await, vec![1]);
        alice.disconnect().await;
        let d = dir.path.to_str().unwrap();
        let (code, _, err) =
            support_ringmq(&["ctl", "--data-dir", d, "ban", "add", "client-id", "evil"]);
        assert_eq!(code, 0, "{err}");
        assert!(b.terminate().is_some_and(|s| s.success()));
        let b = Durable::start_args(&argv);
        let c = Client::try_connect(opts("evil", b.addr)).await;
        assert_ne!(c.connack.1, 0, "banned after restart");
        let mut bob = Client::connect(opts(&bid, b.addr).user("bob")).await;
        bob.publish("sensors/0/t", 1, false, "while away").await;
        bob.wait_acked(1).await;
        let deliver = |b: &Durable| {
            (0..2)
                .map(|s| {
                    b.metric(&format!(
                        "ringmq_acl_denied_total{{shard=\"{s}\",action=\"deliver\"}}"
                    ))
                    .unwrap_or(0.0)
                })
                .sum::<f64>()
        };
        bob.publish("sensors/private/y", 1, false, "private while away")
            .await;
        bob.wait_acked(1).await;
        assert_eq!(deliver(&b), 1.0, "the owner's rules apply while away");
        let mut alice = Client::connect(opts(&aid, b.addr).user("alice").persistent(3600)).await;
        assert!(alice.session_present());
        assert_eq!(alice.recv("queued while away").await.topic, "sensors/0/t");
        for t in ["sensors/1/t", "sensors/private/x"] {
            bob.publish(t, 1, false, t.to_string()).await;
            bob.wait_acked(1).await;
        }
        assert_eq!(
            alice.recv("readable after reconnect").await.topic,
            "sensors/1/t"
        );
        alice.expect_none(QUIET, "private stays unreadable").await;
        assert_eq!(deliver(&b), 2.0);
    }
}

fn support_ringmq(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .output()
        .expect("run ringmq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
