//! MQTT 5 enhanced authentication, SCRAM-SHA-256 (RFC 5802/7677) carried verbatim in
//! Authentication Data, with our codec-based client: the exchange, a wrong proof, an
//! unknown user or method, packets out of order, and re-authentication (AUTH 0x19).
//! 1 and 2 shards (the accepting shard authenticates, then hands the socket over).

mod common;

use bytes::Bytes;
use common::raw::{connect_packet, Raw};
use common::{Broker, WAIT};
use ringmq_codec::{
    Auth, AuthProperties, ConnAck, MqttString, Packet, ProtocolVersion, ReasonCode,
};
use ringmq_shard::access::authn::AuthnConfig;
use ringmq_shard::access::passwd::Entry;
use ringmq_shard::access::scram::client;
use ringmq_shard::stats::{AuthOutcome, CloseReason};

const METHOD: &str = "SCRAM-SHA-256";

fn broker(name: &str, shards: usize) -> Broker {
    let dir = std::env::temp_dir().join(format!("ringmq-scram-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("passwd");
    let text = format!(
        "erin:{}\nfrank:{}\nalice:{}\n",
        Entry::new_scram(b"scram-pw", 4096),
        Entry::new_scram(b"frank-pw", 4096),
        Entry::new_argon2id(b"secret"),
    );
    std::fs::write(&f, text).unwrap();
    Broker::start_with(shards, |c| {
        c.authn = AuthnConfig {
            allow_anonymous: false,
            password_file: Some(f),
        }
    })
}

fn s(x: &str) -> MqttString {
    MqttString::try_from(x).unwrap()
}

fn auth(reason: ReasonCode, method: &str, data: &str) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: AuthProperties {
            authentication_method: Some(s(method)),
            authentication_data: Some(Bytes::copy_from_slice(data.as_bytes())),
            ..AuthProperties::default()
        }
        .into(),
    })
}

/// Sends a SCRAM CONNECT for `user` and returns the connection and the server-first message.
async fn start(b: &Broker, id: &str, user: &str, cnonce: &str) -> (Raw, String) {
    let mut c = connect_packet(ProtocolVersion::V5, id, true);
    c.properties.authentication_method = Some(s(METHOD));
    c.properties.authentication_data = Some(Bytes::from(client::first(user, cnonce)));
    let mut raw = Raw::open(b.addr, ProtocolVersion::V5).await;
    raw.send(&Packet::Connect(Box::new(c))).await;
    let Packet::Auth(a) = raw.expect_any("AUTH 0x18 with server-first").await else {
        panic!("expected AUTH");
    };
    assert_eq!(a.reason, ReasonCode::ContinueAuthentication);
    assert_eq!(
        a.properties
            .authentication_method
            .as_ref()
            .map(|m| m.as_str()),
        Some(METHOD)
    );
    let data = a
        .properties
        .authentication_data
        .clone()
        .expect("server-first");
    (raw, String::from_utf8(data.to_vec()).unwrap())
}

/// The CONNACK that ends the connect, then the close when it refuses.
async fn connack(raw: &mut Raw) -> ConnAck {
    match raw.expect_any("CONNACK").await {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A full exchange; returns the connection, its CONNACK and the server-final expected.
async fn login(b: &Broker, id: &str, user: &str, pw: &str) -> (Raw, ConnAck, String) {
    let (mut raw, first) = start(b, id, user, "cn0nce").await;
    let (last, expect) = client::last(user, pw, "cn0nce", &first).unwrap();
    raw.send(&auth(ReasonCode::ContinueAuthentication, METHOD, &last))
        .await;
    let ack = connack(&mut raw).await;
    (raw, ack, expect)
}

async fn exchange_succeeds(shards: usize) {
    let b = broker(&format!("ok{shards}"), shards);
    for i in 0..4 {
        let (mut raw, ack, expect) = login(&b, &format!("erin-{i}"), "erin", "scram-pw").await;
        assert_eq!(ack.reason, ReasonCode::Success);
        // [MQTT-4.12.0-5] the CONNACK names the method; its data is server-final.
        assert_eq!(
            ack.properties
                .authentication_method
                .as_ref()
                .map(|m| m.as_str()),
            Some(METHOD)
        );
        let data = ack.properties.authentication_data.clone().unwrap();
        assert_eq!(
            std::str::from_utf8(&data).unwrap(),
            expect,
            "server signature"
        );
        raw.send(&Packet::PingReq).await;
        assert!(matches!(raw.expect_any("PINGRESP").await, Packet::PingResp));
    }
    assert_eq!(b.stat(|s| s.auth_for(AuthOutcome::Scram)), 4);
}

async fn wrong_proof_and_unknown_user_get_0x87(shards: usize) {
    let b = broker(&format!("bad{shards}"), shards);
    let (mut raw, ack, _) = login(&b, "e1", "erin", "not-it").await;
    assert_eq!(ack.reason, ReasonCode::NotAuthorized);
    raw.expect_closed(WAIT, "closed after 0x87").await;
    // Unknown user: the same exchange (a decoy salt), refused at the proof.
    let (mut raw, ack, _) = login(&b, "e2", "nobody", "x").await;
    assert_eq!(ack.reason, ReasonCode::NotAuthorized);
    raw.expect_closed(WAIT, "closed after 0x87").await;
    // A user without a SCRAM entry (argon2id) cannot use SCRAM.
    let (_, ack, _) = login(&b, "e3", "alice", "secret").await;
    assert_eq!(ack.reason, ReasonCode::NotAuthorized);
    assert_eq!(b.stat(|s| s.auth_for(AuthOutcome::BadPassword)), 1);
    assert_eq!(b.stat(|s| s.auth_for(AuthOutcome::UnknownUser)), 2);
}

async fn unknown_method_gets_0x8c(shards: usize) {
    let b = broker(&format!("meth{shards}"), shards);
    let mut c = connect_packet(ProtocolVersion::V5, "m1", true);
    c.properties.authentication_method = Some(s("SCRAM-SHA-1"));
    c.properties.authentication_data = Some(Bytes::from_static(b"n,,n=erin,r=x"));
    let mut raw = Raw::open(b.addr, ProtocolVersion::V5).await;
    raw.send(&Packet::Connect(Box::new(c))).await;
    // [MQTT-4.12.0-1] CONNACK 0x8C and close.
    assert_eq!(
        connack(&mut raw).await.reason,
        ReasonCode::BadAuthenticationMethod
    );
    raw.expect_closed(WAIT, "closed after 0x8C").await;
    // A malformed client-first: 0x87.
    let mut c = connect_packet(ProtocolVersion::V5, "m2", true);
    c.properties.authentication_method = Some(s(METHOD));
    c.properties.authentication_data = Some(Bytes::from_static(b"garbage"));
    let mut raw = Raw::open(b.addr, ProtocolVersion::V5).await;
    raw.send(&Packet::Connect(Box::new(c))).await;
    assert_eq!(connack(&mut raw).await.reason, ReasonCode::NotAuthorized);
    assert_eq!(b.stat(|s| s.auth_for(AuthOutcome::BadMethod)), 1);
}

async fn out_of_order_is_a_protocol_error(shards: usize) {
    let b = broker(&format!("order{shards}"), shards);
    // [MQTT-3.1.2-30] only AUTH or DISCONNECT before the CONNACK.
    let (mut raw, _) = start(&b, "o1", "erin", "n1").await;
    raw.send(&Packet::PingReq).await;
    assert_eq!(connack(&mut raw).await.reason, ReasonCode::ProtocolError);
    raw.expect_closed(WAIT, "closed after 0x82").await;
    // [MQTT-4.12.0-3] the client answers with 0x18, not 0x19.
    let (mut raw, first) = start(&b, "o2", "erin", "n2").await;
    let (last, _) = client::last("erin", "scram-pw", "n2", &first).unwrap();
    raw.send(&auth(ReasonCode::ReAuthenticate, METHOD, &last))
        .await;
    assert_eq!(connack(&mut raw).await.reason, ReasonCode::ProtocolError);
    // [MQTT-4.12.0-5] the same method in every AUTH.
    let (mut raw, first) = start(&b, "o3", "erin", "n3").await;
    let (last, _) = client::last("erin", "scram-pw", "n3", &first).unwrap();
    raw.send(&auth(ReasonCode::ContinueAuthentication, "OTHER", &last))
        .await;
    assert_eq!(connack(&mut raw).await.reason, ReasonCode::ProtocolError);
    // A client that gives up: DISCONNECT, closed without CONNACK.
    let (mut raw, _) = start(&b, "o4", "erin", "n4").await;
    raw.send(&Packet::Disconnect(Default::default())).await;
    assert!(raw.expect_closed(WAIT, "closed").await.is_empty());
    // [MQTT-4.12.0-7] no method at CONNECT (a password login): AUTH is a Protocol Error.
    let mut c = connect_packet(ProtocolVersion::V5, "o5", true);
    c.username = Some(s("alice"));
    c.password = Some(Bytes::from_static(b"secret"));
    let (mut raw, _) = Raw::connect_with(b.addr, c).await;
    raw.send(&auth(ReasonCode::ReAuthenticate, METHOD, "n,,n=alice,r=x"))
        .await;
    raw.expect_disconnect(ReasonCode::ProtocolError, "AUTH without a method")
        .await;
    // Counted once the shard finished the close (the client may see it first).
    common::check_for(WAIT, "4 protocol-error closes", || async {
        (b.stat(|s| s.closes_for(CloseReason::ProtocolError)) >= 4).then_some(())
    })
    .await;
}

async fn reauthentication(shards: usize) {
    let b = broker(&format!("re{shards}"), shards);
    let (mut raw, ack, _) = login(&b, "r1", "erin", "scram-pw").await;
    assert_eq!(ack.reason, ReasonCode::Success);
    for round in 0..2 {
        // [MQTT-4.12.1-1] AUTH 0x19 with the same method starts it.
        let cnonce = format!("again{round}");
        raw.send(&auth(
            ReasonCode::ReAuthenticate,
            METHOD,
            &client::first("erin", &cnonce),
        ))
        .await;
        let Packet::Auth(a) = raw.expect_any("AUTH 0x18").await else {
            panic!("AUTH")
        };
        assert_eq!(a.reason, ReasonCode::ContinueAuthentication);
        let first =
            String::from_utf8(a.properties.authentication_data.clone().unwrap().to_vec()).unwrap();
        let (last, expect) = client::last("erin", "scram-pw", &cnonce, &first).unwrap();
        raw.send(&auth(ReasonCode::ContinueAuthentication, METHOD, &last))
            .await;
        let Packet::Auth(a) = raw.expect_any("AUTH 0x00").await else {
            panic!("AUTH")
        };
        assert_eq!(a.reason, ReasonCode::Success);
        let data = a.properties.authentication_data.clone().unwrap();
        assert_eq!(std::str::from_utf8(&data).unwrap(), expect);
    }
    raw.send(&Packet::PingReq).await;
    assert!(matches!(raw.expect_any("PINGRESP").await, Packet::PingResp));
    assert_eq!(b.stat(|s| s.auth_for(AuthOutcome::Reauth)), 2);
    // A wrong proof: [MQTT-4.12.1-2] DISCONNECT 0x87 and close.
    raw.send(&auth(
        ReasonCode::ReAuthenticate,
        METHOD,
        &client::first("erin", "x"),
    ))
    .await;
    let Packet::Auth(a) = raw.expect_any("AUTH 0x18").await else {
        panic!("AUTH")
    };
    let first =
        String::from_utf8(a.properties.authentication_data.clone().unwrap().to_vec()).unwrap();
    let (last, _) = client::last("erin", "wrong", "x", &first).unwrap();
    raw.send(&auth(ReasonCode::ContinueAuthentication, METHOD, &last))
        .await;
    raw.expect_disconnect(ReasonCode::NotAuthorized, "failed re-auth")
        .await;
    // Re-authenticating as another user is refused too.
    let (mut raw, _, _) = login(&b, "r2", "erin", "scram-pw").await;
    raw.send(&auth(
        ReasonCode::ReAuthenticate,
        METHOD,
        &client::first("frank", "y"),
    ))
    .await;
    raw.expect_disconnect(ReasonCode::NotAuthorized, "another user")
        .await;
    // 0x18 outside an exchange, and another method: Protocol Error.
    let (mut raw, _, _) = login(&b, "r3", "erin", "scram-pw").await;
    raw.send(&auth(
        ReasonCode::ContinueAuthentication,
        METHOD,
        "c=biws,r=x,p=AAAA",
    ))
    .await;
    raw.expect_disconnect(ReasonCode::ProtocolError, "0x18 unasked")
        .await;
    let (mut raw, _, _) = login(&b, "r4", "erin", "scram-pw").await;
    raw.send(&auth(ReasonCode::ReAuthenticate, "OTHER", "n,,n=erin,r=x"))
        .await;
    raw.expect_disconnect(ReasonCode::ProtocolError, "other method")
        .await;
    assert_eq!(b.stat(|s| s.auth_for(AuthOutcome::ReauthFailed)), 2);
    common::check_for(WAIT, "2 not-authorized closes", || async {
        (b.stat(|s| s.closes_for(CloseReason::NotAuthorized)) == 2).then_some(())
    })
    .await;
}

macro_rules! cases {
    ($($name:ident),*) => {$(
        mod $name {
            #[tokio::test] async fn v5_1shard() { super::$name(1).await }
            #[tokio::test] async fn v5_2shards() { super::$name(2).await }
        }
    )*};
}

cases!(
    exchange_succeeds,
    wrong_proof_and_unknown_user_get_0x87,
    unknown_method_gets_0x8c,
    out_of_order_is_a_protocol_error,
    reauthentication
);
