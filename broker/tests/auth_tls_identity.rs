//! `identity_as_username` end to end (issues 11 and 12): on an mTLS listener that takes the
//! client certificate's subject CN as the user name, clients we did not write
//! (mosquitto_pub/sub with `--cert/--key`, paho-mqtt with `tls_set(certfile, keyfile)`) connect
//! with no user name or password although a password file is loaded and anonymous clients are
//! refused; the ACL grants and refuses by the CN (our codec client over TLS checks the exact
//! SUBACK and PUBACK codes); a user name and wrong password in the CONNECT change nothing; and a
//! valid certificate without a CN is refused with CONNACK Not authorized (v5 0x87, 3.1.1 0x05).
//! 1 and 2 shards.

mod common;

use common::raw::{connect_packet, publish_packet, subscribe_packet, version};
use common::tls::{Pair, Pki};
use common::{check_for_blocking, Broker, Proto, Raw, WAIT};
use ringmq_codec::{MqttString, Packet, ReasonCode};
use ringmq_shard::access::authn::AuthnConfig;
use ringmq_shard::access::passwd::Entry;
use ringmq_shard::config::{Listener, TlsFiles, Transport};
use ringmq_shard::stats::{AuthOutcome, CloseReason};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The certificate's CN (`alice`) may use `t/#` (paho's topics) and `id/alice/#`.
const ACL: &str = "\
user alice
topic readwrite t/#
topic readwrite id/alice/#
";

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// One mqtts listener requiring a client certificate whose CN is the user name; a password
/// file (alice has a password there, which must not be asked) and the ACL above; anonymous
/// clients refused.
fn broker(shards: usize) -> Broker {
    let pki = Pki::shared();
    let dir = common::broker::scratch_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let (acl, pw) = (dir.join("acl"), dir.join("passwd"));
    std::fs::write(&acl, ACL).unwrap();
    std::fs::write(&pw, format!("alice:{}\n", Entry::new_pbkdf2(b"pw", 101))).unwrap();
    Broker::start_with(shards, |c| {
        c.listen = vec![Listener {
            addr: "127.0.0.1:0".parse().unwrap(),
            transport: Transport::Mqtts,
            tls: TlsFiles {
                client_ca: Some(pki.ca.clone()),
                require_client_cert: true,
                identity_as_username: true,
                ..pki.server_files()
            },
            proxy_protocol: false,
            allow_anonymous: None,
        }];
        c.authn = AuthnConfig {
            allow_anonymous: false,
            password_file: Some(pw),
        };
        c.access.acl_file = Some(acl);
    })
}

fn cert_args(pair: &Pair) -> Vec<String> {
    let pki = Pki::shared();
    vec![
        "--cafile".into(),
        path(&pki.ca),
        "--cert".into(),
        path(&pair.cert),
        "--key".into(),
        path(&pair.key),
    ]
}

/// mosquitto_pub (bounded) with a client certificate and `extra`; its exit status.
fn mosquitto_pub(b: &Broker, v: &str, id: &str, topic: &str, pair: &Pair, extra: &[&str]) -> bool {
    Command::new("timeout")
        .args(["10", "mosquitto_pub", "-h", "127.0.0.1", "-p"])
        .arg(b.addr.port().to_string())
        .args(["-V", v, "-i", id, "-t", topic, "-m", id, "-q", "1"])
        .args(cert_args(pair))
        .args(extra)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub (is mosquitto-clients installed?)")
        .success()
}

/// mosquitto_sub and mosquitto_pub, both with alice's certificate and no user name or
/// password: the message goes through (the ACL grants `id/alice/#` to the CN). A CONNECT
/// naming another user with a wrong password is still alice. Several client ids, so with 2
/// shards both home shards take a handed-off TLS connection.
fn mosquitto_clients_are_their_cn(shards: usize) {
    let pki = Pki::shared();
    let b = broker(shards);
    for (i, v) in ["mqttv311", "mqttv5"].iter().enumerate() {
        let topic = format!("id/alice/{i}");
        let mut sub = Command::new("timeout")
            .args(["15", "mosquitto_sub", "-h", "127.0.0.1", "-p"])
            .arg(b.addr.port().to_string())
            .args(["-V", v, "-t", &topic, "-C", "1", "-q", "1"])
            .args(["-i", &format!("cn-sub-{i}")])
            .args(cert_args(&pki.client))
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        // Retry the publish until the subscriber (its own TLS handshake) is in.
        let mut n = 0;
        check_for_blocking(
            WAIT + Duration::from_secs(5),
            "mosquitto_sub got it",
            || {
                n += 1;
                let id = format!("cn-pub-{i}-{n}");
                assert!(
                    mosquitto_pub(&b, v, &id, &topic, &pki.client, &[]),
                    "{v}: alice's certificate, no password"
                );
                match sub.try_wait().unwrap() {
                    Some(_) => Some(()),
                    None => {
                        std::thread::sleep(Duration::from_millis(100));
                        None
                    }
                }
            },
        );
        let mut out = String::new();
        sub.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(
            out.trim().starts_with(&format!("cn-pub-{i}-")),
            "{v}: {out}"
        );
        // The CONNECT's user name and password are not asked for, nor checked.
        for k in 0..3 {
            let id = format!("cn-named-{i}-{k}");
            let extra = ["-u", "mallory", "-P", "wrong"];
            assert!(
                mosquitto_pub(&b, v, &id, &topic, &pki.client, &extra),
                "{v}"
            );
        }
    }
    assert_eq!(b.stat(|s| s.auth_for(AuthOutcome::BadPassword)), 0);
    assert_eq!(b.stat(|s| s.auth_for(AuthOutcome::Password)), 0);
    assert!(b.stat(|s| s.auth_for(AuthOutcome::TlsIdentity)) >= 8);
}

#[test]
fn mosquitto_clients_are_their_cn_1shard() {
    mosquitto_clients_are_their_cn(1);
}

#[test]
fn mosquitto_clients_are_their_cn_2shards() {
    mosquitto_clients_are_their_cn(2);
}

/// paho-mqtt (Python) with alice's certificate and no user name: QoS 0/1/2, retained and a
/// 300 KB payload on `t/..`, which the ACL grants to the CN; 3.1.1 and 5.0 on 2 shards.
#[test]
fn paho_with_a_client_certificate() {
    let pki = Pki::shared();
    let b = broker(2);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_check.py");
    for proto in ["4", "5"] {
        let out = Command::new("timeout")
            .args(["60", "python3", script, "--port"])
            .arg(b.addr.port().to_string())
            .args(["--proto", proto, "--run", &format!("cn{proto}")])
            .args(cert_args(&pki.client))
            .stdin(Stdio::null())
            .output()
            .expect("python3 with paho-mqtt (installed by .ci/run)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "paho with a client certificate (v{proto}): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(b.stat(|s| s.auth_for(AuthOutcome::TlsIdentity)) >= 4);
}

/// Our codec client over TLS with alice's certificate: CONNECT without user name accepted;
/// the ACL decides by the CN: a filter outside alice's rules gets SUBACK 0x87 (v5) / 0x80
/// (3.1.1), a v5 QoS 1 PUBLISH outside them PUBACK 0x87; inside them both go through.
async fn acl_decides_by_the_cn(proto: Proto, shards: usize) {
    let pki = Pki::shared();
    let b = broker(shards);
    let v = version(proto);
    for id in common::spread_ids("cn-raw", 2, shards) {
        let mut raw = Raw::open_tls_with_cert(b.addr, v, &pki.client).await;
        raw.send(&Packet::Connect(Box::new(connect_packet(v, &id, true))))
            .await;
        match raw.expect_packet("CONNACK").await {
            Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::Success, "{a:?}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw.send(&Packet::Subscribe(subscribe_packet(1, "other/#", 1)))
            .await;
        let refused = if proto == Proto::V5 { 0x87 } else { 0x80 };
        match raw.expect_packet("SUBACK other/#").await {
            Packet::SubAck(a) => assert_eq!(a.reasons[0] as u8, refused, "{a:?}"),
            other => panic!("expected SUBACK, got {other:?}"),
        }
        raw.send(&Packet::Subscribe(subscribe_packet(2, "id/alice/#", 1)))
            .await;
        match raw.expect_packet("SUBACK id/alice/#").await {
            Packet::SubAck(a) => assert_eq!(a.reasons, vec![ReasonCode::GrantedQoS1]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
        if proto == Proto::V5 {
            raw.send(&Packet::Publish(publish_packet(
                "other/x", 1, false, 3, b"no",
            )))
            .await;
            match raw.expect_packet("PUBACK other/x").await {
                Packet::PubAck(a) => assert_eq!(a.reason, ReasonCode::NotAuthorized),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
        let mine = format!("id/alice/{id}");
        raw.send(&Packet::Publish(publish_packet(&mine, 1, false, 4, b"yes")))
            .await;
        // Its own PUBACK and the delivery to its own subscription, in either order.
        let (mut acked, mut delivered) = (false, false);
        while !(acked && delivered) {
            match raw.expect_packet("PUBACK and the delivery").await {
                Packet::PubAck(a) if a.packet_id.get() == 4 => {
                    assert_eq!(a.reason, ReasonCode::Success);
                    acked = true;
                }
                Packet::Publish(p) => {
                    assert_eq!(p.topic.as_str(), mine);
                    delivered = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// A certificate from the right CA but with no CN: there is no user name to take, so the
/// CONNECT is refused, v5 0x87 Not authorized and 3.1.1 0x05 on the wire, and counted;
/// mosquitto_pub with it fails too. A CONNECT naming a user (with its right password) does
/// not help: the listener takes names from certificates only.
async fn certificate_without_cn_is_refused(proto: Proto, shards: usize) {
    let pki = Pki::shared();
    let b = broker(shards);
    let v = version(proto);
    for id in common::spread_ids("no-cn", 2, shards) {
        let mut raw = Raw::open_tls_with_cert(b.addr, v, &pki.no_cn_client).await;
        let mut c = connect_packet(v, &id, true);
        c.username = Some(MqttString::try_from("alice").unwrap());
        c.password = Some(bytes::Bytes::from_static(b"pw"));
        raw.send(&Packet::Connect(Box::new(c))).await;
        let bytes = raw.read_raw(WAIT).await.expect("CONNACK bytes");
        let code = if proto == Proto::V5 { 0x87 } else { 0x05 };
        assert_eq!(bytes[0], 0x20, "CONNACK: {bytes:?}");
        assert_eq!(bytes[3], code, "CONNACK code: {bytes:?}");
        raw.expect_closed(WAIT, "after the refusal").await;
    }
    let flag = if proto == Proto::V5 {
        "mqttv5"
    } else {
        "mqttv311"
    };
    assert!(!mosquitto_pub(
        &b,
        flag,
        "no-cn-pub",
        "id/alice/x",
        &pki.no_cn_client,
        &[]
    ));
    check_for_blocking(WAIT, "3 refusals counted", || {
        (b.stat(|s| s.closes_for(CloseReason::ConnectRefused)) >= 3).then_some(())
    });
    assert_eq!(b.stat(|s| s.auth_for(AuthOutcome::TlsIdentity)), 0);
}

macro_rules! cases {
    ($($name:ident),*) => {$(
        mod $name {
            use super::*;
            #[tokio::test] async fn v311_1shard() { super::$name(Proto::V4, 1).await }
            #[tokio::test] async fn v311_2shards() { super::$name(Proto::V4, 2).await }
            #[tokio::test] async fn v5_1shard() { super::$name(Proto::V5, 1).await }
            #[tokio::test] async fn v5_2shards() { super::$name(Proto::V5, 2).await }
        }
    )*};
}

cases!(acl_decides_by_the_cn, certificate_without_cn_is_refused);
