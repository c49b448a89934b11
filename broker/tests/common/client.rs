//! One wrapper over rumqttc's MQTT 3.1.1 (`rumqttc::`) and 5.0 (`rumqttc::v5::`) clients, so a
//! scenario runs unchanged on both protocols. The event loop runs in a task that forwards
//! events over a channel; `kill()` drops the socket without DISCONNECT (abnormal loss).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5 as r5;
use rumqttc::v5::mqttbytes::v5 as p5;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Proto, WAIT};

/// QoS as a number (0, 1, 2) so tests read the same on both protocols.
pub type Q = u8;

fn q4(q: Q) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn q5(q: Q) -> r5::mqttbytes::QoS {
    match q {
        0 => r5::mqttbytes::QoS::AtMostOnce,
        1 => r5::mqttbytes::QoS::AtLeastOnce,
        _ => r5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// A will message.
#[derive(Clone, Debug)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Q,
    pub retain: bool,
    /// v5 Will Delay Interval, seconds.
    pub delay: Option<u32>,
}

/// Connection options common to both protocols (v5-only ones ignored on 3.1.1).
#[derive(Clone, Debug)]
pub struct Opts {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub id: String,
    pub clean: bool,
    pub keep_alive_secs: u64,
    pub will: Option<Will>,
    pub session_expiry: Option<u32>,
    pub manual_acks: bool,
    pub receive_maximum: Option<u16>,
    pub max_packet_size: Option<u32>,
    pub topic_alias_max: Option<u16>,
    /// User name and password of the CONNECT.
    pub credentials: Option<(String, String)>,
    /// Username (password empty) for ACL scenarios.
    pub username: Option<String>,
}

impl Opts {
    pub fn new(proto: Proto, addr: SocketAddr, id: &str) -> Opts {
        Opts {
            proto,
            addr,
            id: id.to_string(),
            clean: true,
            keep_alive_secs: 30,
            will: None,
            session_expiry: None,
            manual_acks: false,
            receive_maximum: None,
            max_packet_size: None,
            topic_alias_max: None,
            credentials: None,
            username: None,
        }
    }

    /// Connects as `name` (empty password).
    pub fn user(mut self, name: &str) -> Opts {
        self.username = Some(name.to_string());
        self
    }

    /// A persistent session: clean session 0 (3.1.1) / clean start 0 with a session expiry (v5).
    pub fn persistent(mut self, expiry: u32) -> Opts {
        self.clean = false;
        self.session_expiry = Some(expiry);
        self
    }

    pub fn credentials(mut self, user: &str, password: &str) -> Opts {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    pub fn will(mut self, topic: &str, payload: &str, qos: Q, retain: bool) -> Opts {
        self.will = Some(Will {
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos,
            retain,
            delay: None,
        });
        self
    }
}

/// A received PUBLISH.
#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Q,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
    /// v5 properties as received.
    pub props: Option<p5::PublishProperties>,
}

impl Msg {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).unwrap_or("<binary>")
    }
}

/// What the event task forwards.
#[derive(Clone, Debug)]
pub enum Ev {
    /// CONNACK: session present, return code (3.1.1) or reason code (v5), v5 properties.
    ConnAck(bool, u8, Option<p5::ConnAckProperties>),
    Publish(Msg),
    /// SUBACK return/reason codes.
    SubAck(Vec<u8>),
    UnsubAck,
    PubAck(u16),
    PubComp(u16),
    /// v5 DISCONNECT from the server (reason code).
    Disconnect(u8),
    /// The event loop ended (connection closed or refused).
    Closed(String),
}

enum Inner {
    V4(rumqttc::AsyncClient),
    V5(r5::AsyncClient),
}

/// A connected rumqttc client of either protocol.
pub struct Client {
    inner: Inner,
    pub opts: Opts,
    rx: mpsc::UnboundedReceiver<Ev>,
    pending: VecDeque<Ev>,
    task: JoinHandle<()>,
    /// The CONNACK: (session present, code).
    pub connack: (bool, u8),
    pub connack_props: Option<p5::ConnAckProperties>,
}

impl Client {
    /// Connects and waits for a successful CONNACK.
    pub async fn connect(opts: Opts) -> Client {
        let c = Client::try_connect(opts).await;
        assert_eq!(c.connack.1, 0, "CONNACK refused: 0x{:02x}", c.connack.1);
        c
    }

    /// Connects and waits for the CONNACK whatever its code.
    pub async fn try_connect(opts: Opts) -> Client {
        let (inner, rx, task) = match opts.proto {
            Proto::V4 => spawn_v4(&opts),
            Proto::V5 => spawn_v5(&opts),
        };
        let mut c = Client {
            inner,
            opts,
            rx,
            pending: VecDeque::new(),
            task,
            connack: (false, 0xff),
            connack_props: None,
        };
        let ev = c
            .next_where(WAIT, |e| matches!(e, Ev::ConnAck(..) | Ev::Closed(_)))
            .await
            .expect("CONNACK within 5 s");
        match ev {
            Ev::ConnAck(sp, code, props) => {
                c.connack = (sp, code);
                c.connack_props = props;
            }
            Ev::Closed(e) => panic!("connection closed before CONNACK: {e}"),
            _ => unreachable!(),
        }
        c
    }

    pub fn v5(&self) -> &r5::AsyncClient {
        match &self.inner {
            Inner::V5(c) => c,
            Inner::V4(_) => panic!("v5 client wanted on a 3.1.1 scenario"),
        }
    }

    pub fn session_present(&self) -> bool {
        self.connack.0
    }

    /// Next event matching `pred` within `within` (earlier non-matching events are kept).
    pub async fn next_where(&mut self, within: Duration, pred: impl Fn(&Ev) -> bool) -> Option<Ev> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(ev)) if pred(&ev) => return Some(ev),
                Ok(Some(ev)) => self.pending.push_back(ev),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Next PUBLISH within 5 s; panics naming `what` if none arrives.
    pub async fn recv(&mut self, what: &str) -> Msg {
        self.recv_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("no PUBLISH within 5 s: {what}"))
    }

    pub async fn recv_within(&mut self, within: Duration) -> Option<Msg> {
        match self
            .next_where(within, |e| matches!(e, Ev::Publish(_)))
            .await
        {
            Some(Ev::Publish(m)) => Some(m),
            _ => None,
        }
    }

    /// Asserts no PUBLISH arrives within `within`.
    pub async fn expect_none(&mut self, within: Duration, what: &str) {
        if let Some(m) = self.recv_within(within).await {
            panic!("unexpected PUBLISH ({what}): {m:?}");
        }
    }

    /// Collects `n` PUBLISHes (each within 5 s).
    pub async fn recv_n(&mut self, n: usize, what: &str) -> Vec<Msg> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(self.recv(&format!("{what} #{i}")).await);
        }
        out
    }

    pub async fn publish(&self, topic: &str, qos: Q, retain: bool, payload: impl Into<Bytes>) {
        let payload: Bytes = payload.into();
        match &self.inner {
            Inner::V4(c) => c
                .publish(topic, q4(qos), retain, payload.to_vec())
                .await
                .expect("publish queued"),
            Inner::V5(c) => c
                .publish(topic, q5(qos), retain, payload)
                .await
                .expect("publish queued"),
        }
    }

    /// Subscribes and waits for the SUBACK; returns its codes.
    pub async fn subscribe(&mut self, filter: &str, qos: Q) -> Vec<u8> {
        match &self.inner {
            Inner::V4(c) => c
                .subscribe(filter, q4(qos))
                .await
                .expect("subscribe queued"),
            Inner::V5(c) => c
                .subscribe(filter, q5(qos))
                .await
                .expect("subscribe queued"),
        }
        self.suback().await
    }

    /// v5 subscribe with options (no local, retain as published, retain handling, id).
    pub async fn subscribe_v5(&mut self, filter: p5::Filter, id: Option<usize>) -> Vec<u8> {
        let props = p5::SubscribeProperties {
            id,
            user_properties: vec![],
        };
        self.v5()
            .subscribe_many_with_properties(vec![filter], props)
            .await
            .expect("subscribe queued");
        self.suback().await
    }

    pub async fn suback(&mut self) -> Vec<u8> {
        match self.next_where(WAIT, |e| matches!(e, Ev::SubAck(_))).await {
            Some(Ev::SubAck(codes)) => codes,
            _ => panic!("no SUBACK within 5 s"),
        }
    }

    pub async fn unsubscribe(&mut self, filter: &str) {
        match &self.inner {
            Inner::V4(c) => c.unsubscribe(filter).await.expect("unsubscribe queued"),
            Inner::V5(c) => c.unsubscribe(filter).await.expect("unsubscribe queued"),
        }
        self.next_where(WAIT, |e| matches!(e, Ev::UnsubAck))
            .await
            .expect("UNSUBACK within 5 s");
    }

    /// Acknowledges a message (with `manual_acks`).
    pub async fn ack(&self, m: &Msg) {
        match &self.inner {
            Inner::V4(c) => {
                let mut p = rumqttc::Publish::new(m.topic.clone(), q4(m.qos), m.payload.to_vec());
                p.pkid = m.pkid;
                c.ack(&p).await.expect("ack queued")
            }
            Inner::V5(c) => {
                let mut p = p5::Publish::new(m.topic.clone(), q5(m.qos), m.payload.to_vec(), None);
                p.pkid = m.pkid;
                c.ack(&p).await.expect("ack queued")
            }
        }
    }

    /// Waits for the PUBACK (QoS 1) or PUBCOMP (QoS 2) of our own publish.
    pub async fn wait_acked(&mut self, qos: Q) {
        let ok = if qos == 1 {
            self.next_where(WAIT, |e| matches!(e, Ev::PubAck(_))).await
        } else {
            self.next_where(WAIT, |e| matches!(e, Ev::PubComp(_))).await
        };
        assert!(ok.is_some(), "no PUBACK/PUBCOMP within 5 s");
    }

    /// Normal DISCONNECT (reason 0x00), then waits for the connection to end.
    pub async fn disconnect(mut self) {
        match &self.inner {
            Inner::V4(c) => c.disconnect().await.expect("disconnect queued"),
            Inner::V5(c) => c.disconnect().await.expect("disconnect queued"),
        }
        let _ = self.next_where(WAIT, |e| matches!(e, Ev::Closed(_))).await;
        self.task.abort();
    }

    /// Drops the connection without DISCONNECT (abnormal loss: the will must be published).
    pub async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Waits until the broker closes this connection; returns the v5 DISCONNECT reason if any.
    pub async fn closed_by_broker(&mut self, within: Duration) -> Option<u8> {
        let ev = self
            .next_where(within, |e| matches!(e, Ev::Disconnect(_) | Ev::Closed(_)))
            .await
            .expect("the broker closes the connection");
        match ev {
            Ev::Disconnect(code) => {
                let _ = self
                    .next_where(within, |e| matches!(e, Ev::Closed(_)))
                    .await;
                Some(code)
            }
            _ => None,
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Spawned = (Inner, mpsc::UnboundedReceiver<Ev>, JoinHandle<()>);

/// rumqttc's broker address: the host, or over WebSocket the whole URL.
fn host(o: &Opts) -> String {
    if super::ws::enabled() {
        super::ws::url(o.addr)
    } else {
        o.addr.ip().to_string()
    }
}

fn spawn_v4(o: &Opts) -> Spawned {
    let mut mo = rumqttc::MqttOptions::new(o.id.clone(), host(o), o.addr.port());
    if super::ws::enabled() {
        mo.set_transport(super::ws::rumqttc_transport());
    } else if super::tls::enabled() {
        let cfg = super::tls::Pki::shared().client_config(None);
        mo.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(cfg),
        ));
    }
    mo.set_clean_session(o.clean)
        .set_keep_alive(Duration::from_secs(o.keep_alive_secs))
        .set_manual_acks(o.manual_acks)
        .set_max_packet_size(1 << 21, 1 << 21);
    if let Some((u, p)) = &o.credentials {
        mo.set_credentials(u.clone(), p.clone());
    } else if let Some(u) = &o.username {
        mo.set_credentials(u.clone(), "");
    }
    if let Some(w) = &o.will {
        mo.set_last_will(rumqttc::LastWill::new(
            &w.topic,
            w.payload.to_vec(),
            q4(w.qos),
            w.retain,
        ));
    }
    let (client, mut el) = rumqttc::AsyncClient::new(mo, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        use rumqttc::{Event, Incoming, Outgoing};
        loop {
            let ev = match el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(a))) => {
                    Ev::ConnAck(a.session_present, a.code as u8, None)
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => Ev::Publish(Msg {
                    topic: p.topic.clone(),
                    payload: p.payload.clone(),
                    qos: p.qos as u8,
                    retain: p.retain,
                    dup: p.dup,
                    pkid: p.pkid,
                    props: None,
                }),
                Ok(Event::Incoming(Incoming::SubAck(s))) => Ev::SubAck(
                    s.return_codes
                        .iter()
                        .map(|c| match c {
                            rumqttc::SubscribeReasonCode::Success(q) => *q as u8,
                            rumqttc::SubscribeReasonCode::Failure => 0x80,
                        })
                        .collect(),
                ),
                Ok(Event::Incoming(Incoming::UnsubAck(_))) => Ev::UnsubAck,
                Ok(Event::Incoming(Incoming::PubAck(a))) => Ev::PubAck(a.pkid),
                Ok(Event::Incoming(Incoming::PubComp(a))) => Ev::PubComp(a.pkid),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => continue,
                Ok(_) => continue,
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    let _ = tx.send(Ev::ConnAck(false, code as u8, None));
                    let _ = tx.send(Ev::Closed(format!("refused {code:?}")));
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Ev::Closed(e.to_string()));
                    break;
                }
            };
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    (Inner::V4(client), rx, task)
}

fn spawn_v5(o: &Opts) -> Spawned {
    let mut mo = r5::MqttOptions::new(o.id.clone(), host(o), o.addr.port());
    if super::ws::enabled() {
        mo.set_transport(super::ws::rumqttc_transport());
    } else if super::tls::enabled() {
        let cfg = super::tls::Pki::shared().client_config(None);
        mo.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(cfg),
        ));
    }
    mo.set_clean_start(o.clean)
        .set_keep_alive(Duration::from_secs(o.keep_alive_secs))
        .set_manual_acks(o.manual_acks)
        .set_session_expiry_interval(o.session_expiry)
        .set_receive_maximum(o.receive_maximum)
        .set_max_packet_size(Some(o.max_packet_size.unwrap_or(1 << 21)))
        .set_topic_alias_max(o.topic_alias_max);
    if let Some((u, p)) = &o.credentials {
        mo.set_credentials(u.clone(), p.clone());
    } else if let Some(u) = &o.username {
        mo.set_credentials(u.clone(), "");
    }
    if let Some(w) = &o.will {
        let props = w.delay.map(|d| p5::LastWillProperties {
            delay_interval: Some(d),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: vec![],
        });
        mo.set_last_will(p5::LastWill::new(
            &w.topic,
            w.payload.to_vec(),
            q5(w.qos),
            w.retain,
            props,
        ));
    }
    let (client, mut el) = r5::AsyncClient::new(mo, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        use r5::mqttbytes::v5::Packet;
        use r5::Event;
        loop {
            let ev = match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    Ev::ConnAck(a.session_present, connack_code(a.code), a.properties)
                }
                Ok(Event::Incoming(Packet::Publish(p))) => Ev::Publish(Msg {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.clone(),
                    qos: p.qos as u8,
                    retain: p.retain,
                    dup: p.dup,
                    pkid: p.pkid,
                    props: p.properties.clone(),
                }),
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    Ev::SubAck(s.return_codes.iter().map(|c| suback_code(*c)).collect())
                }
                Ok(Event::Incoming(Packet::UnsubAck(_))) => Ev::UnsubAck,
                Ok(Event::Incoming(Packet::PubAck(a))) => Ev::PubAck(a.pkid),
                Ok(Event::Incoming(Packet::PubComp(a))) => Ev::PubComp(a.pkid),
                Ok(Event::Incoming(Packet::Disconnect(d))) => Ev::Disconnect(d.reason_code as u8),
                Ok(_) => continue,
                Err(r5::ConnectionError::MqttState(r5::StateError::ServerDisconnect {
                    reason_code,
                    ..
                })) => {
                    let _ = tx.send(Ev::Disconnect(reason_code as u8));
                    let _ = tx.send(Ev::Closed(format!("server DISCONNECT {reason_code:?}")));
                    break;
                }
                Err(r5::ConnectionError::ConnectionRefused(code)) => {
                    let _ = tx.send(Ev::ConnAck(false, connack_code(code), None));
                    let _ = tx.send(Ev::Closed(format!("refused {code:?}")));
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Ev::Closed(e.to_string()));
                    break;
                }
            };
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    (Inner::V5(client), rx, task)
}

/// v5 CONNACK reason code as on the wire.
fn connack_code(c: p5::ConnectReturnCode) -> u8 {
    use p5::ConnectReturnCode as C;
    match c {
        C::Success => 0x00,
        C::RefusedProtocolVersion => 0x84,
        C::BadClientId => 0x85,
        C::ServiceUnavailable => 0x88,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::UnsupportedProtocolVersion => 0x84,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        C::BadAuthenticationMethod => 0x8C,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::UseAnotherServer => 0x9C,
        C::ServerMoved => 0x9D,
        C::ConnectionRateExceeded => 0x9F,
    }
}

/// v5 SUBACK reason code as on the wire.
fn suback_code(c: p5::SubscribeReasonCode) -> u8 {
    use p5::SubscribeReasonCode as S;
    match c {
        S::Success(q) => q as u8,
        S::Failure | S::Unspecified => 0x80,
        S::ImplementationSpecific => 0x83,
        S::NotAuthorized => 0x87,
        S::TopicFilterInvalid => 0x8F,
        S::PkidInUse => 0x91,
        S::QuotaExceeded => 0x97,
        S::SharedSubscriptionsNotSupported => 0x9E,
        S::SubscriptionIdNotSupported => 0xA1,
        S::WildcardSubscriptionsNotSupported => 0xA2,
    }
}
