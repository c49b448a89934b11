//! `takeover`: one persistent session moving between the nodes of a cluster while a
//! publisher keeps publishing to it.
//!
//! The session's client connects to the first node (clean start, a session expiry for
//! MQTT 5), subscribes to its topic, and then, every `--dwell`, CONNECTs to the next node
//! with clean start 0 while its previous connection is still open (the broker closes
//! that one: v5 DISCONNECT 0x8E). Each move's CONNECT -> CONNACK time is measured on the
//! wire, from the CONNECT written to the CONNACK read, with whether the session was
//! present. Meanwhile a publisher on `--pub-node` publishes at `--rate` to the session's
//! topic at `--qos`; every connection of the session (old ones until the broker closes
//! them) receives and acknowledges. At the end: how many acknowledged publishes never
//! arrived (lost), arrived more than once (QoS 1 duplicates; for QoS 2 the client keeps
//! the packet ids awaiting PUBREL across its connections, as a session must, so a
//! resend is not a second delivery), or arrived after a later one.
//!
//! Plain TCP only; the broker is spoken to over the wire, nothing else.

use crate::cli::{MqttVersion, TakeoverArgs};
use crate::conn::{invalid, with_timeout, AckKind, Conn, SETUP_TIMEOUT};
use crate::payload::{epoch, now_ns, read_stamp, Template};
use crate::runner::resolve;
use crate::stats::{new_histogram, Latency};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use ringmq_codec::{
    Connect, ConnectProperties, MqttString, Packet, PacketId, ProtocolVersion, QoS, ReasonCode,
};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a takeover run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TakeoverReport {
    pub nodes: Vec<String>,
    pub mqtt: String,
    pub qos: u8,
    pub rate: f64,
    pub dwell_ms: u64,
    /// Takeovers done (CONNECTs after the first).
    pub moves: u64,
    /// CONNECT -> CONNACK of the takeovers, µs.
    pub takeover: Latency,
    /// CONNACKs of a takeover with session present 0 (the session did not move).
    pub fresh_sessions: u64,
    /// Old connections the broker closed with a DISCONNECT (v5: 0x8E Session taken over).
    pub old_closed_with_disconnect: u64,
    /// Old connections closed without one (3.1.1, or v5 without the packet).
    pub old_closed_silently: u64,
    /// Old connections still open when the run ended.
    pub old_still_open: u64,
    pub published: u64,
    /// Publishes the broker acknowledged (PUBACK / PUBREC with a success code).
    pub acknowledged: u64,
    /// Publishes refused (reason >= 0x80) or not acknowledged by the end.
    pub refused: u64,
    pub unacknowledged: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Acknowledged publishes never received.
    pub lost: u64,
    /// Deliveries of a message already received (QoS 1 allows them; QoS 2 must have none).
    pub duplicated: u64,
    /// Of those, with the DUP flag (resends of an unacknowledged delivery).
    pub duplicated_with_dup_flag: u64,
    /// First deliveries of a message after a later one.
    pub out_of_order: u64,
    /// Publish -> delivery latency of first deliveries, µs.
    pub latency: Latency,
    pub errors: Vec<String>,
}

/// Shared by the publisher, the session's connections and the reporter (one executor).
#[derive(Default)]
struct State {
    /// Per sequence number: 0 in flight, 1 acknowledged, 2 refused.
    acked: Vec<u8>,
    /// Per sequence number: deliveries received.
    got: Vec<u32>,
    highest_first: Option<u64>,
    duplicated: u64,
    duplicated_dup_flag: u64,
    out_of_order: u64,
    /// QoS 2: packet ids received and answered with PUBREC, awaiting PUBREL (session state).
    awaiting_rel: HashSet<u16>,
    latency: Option<Histogram<u64>>,
    takeover: Option<Histogram<u64>>,
    fresh: u64,
    old_disconnect: u64,
    old_silent: u64,
    old_open: u64,
    publishing: bool,
    errors: Vec<String>,
}

impl State {
    fn error(&mut self, e: impl std::fmt::Display) {
        let s = e.to_string();
        if !self.errors.contains(&s) && self.errors.len() < 8 {
            self.errors.push(s);
        }
    }

    fn on_message(&mut self, seq: u64, sent_ns: u64, dup: bool) {
        let i = seq as usize;
        if self.got.len() <= i {
            self.got.resize(i + 1, 0);
        }
        self.got[i] += 1;
        if self.got[i] > 1 {
            self.duplicated += 1;
            if dup {
                self.duplicated_dup_flag += 1;
            }
            return;
        }
        if self.highest_first.is_some_and(|h| seq < h) {
            self.out_of_order += 1;
        } else {
            self.highest_first = Some(seq);
        }
        if let Some(h) = &mut self.latency {
            let _ = h.record(now_ns().saturating_sub(sent_ns).max(1));
        }
    }

    /// Every acknowledged publish received at least once.
    fn all_in(&self) -> bool {
        self.acked
            .iter()
            .enumerate()
            .all(|(i, a)| *a != 1 || self.got.get(i).is_some_and(|g| *g > 0))
    }
}

pub fn run(a: &TakeoverArgs) -> Result<TakeoverReport, String> {
    check(a)?;
    epoch();
    let addrs = a
        .nodes
        .iter()
        .map(|n| {
            let (h, p) = n
                .rsplit_once(':')
                .ok_or_else(|| format!("--nodes: `{n}` is not HOST:PORT"))?;
            let port = p
                .parse::<u16>()
                .map_err(|e| format!("--nodes: bad port in `{n}`: {e}"))?;
            resolve(h, port)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let placement = match a.cpu {
        Some(c) => Placement::Fixed(c),
        None => Placement::Unbound,
    };
    let args = a.clone();
    let h = LocalExecutorBuilder::new(placement)
        .name("bench-takeover")
        .io_memory(1 << 20)
        .spawn(move || async move { run_async(args, addrs).await })
        .map_err(|e| format!("cannot start the executor: {e}"))?;
    h.join().map_err(|e| format!("executor failed: {e}"))?
}

/// The flags' combinations clap cannot check.
pub fn check(a: &TakeoverArgs) -> Result<(), String> {
    if a.nodes.len() < 2 {
        return Err("--nodes: give at least two HOST:PORT (the session moves between them)".into());
    }
    if a.pub_node >= a.nodes.len() {
        return Err(format!(
            "--pub-node {}: only {} nodes given (0-based index)",
            a.pub_node,
            a.nodes.len()
        ));
    }
    if a.payload < crate::payload::HEADER_LEN {
        return Err(format!(
            "--payload {}: at least {} bytes",
            a.payload,
            crate::payload::HEADER_LEN
        ));
    }
    if a.moves == 0 {
        return Err("--moves: at least 1".into());
    }
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        return Err(format!(
            "--rate {}: a number of messages per second >= 0",
            a.rate
        ));
    }
    Ok(())
}

fn version(v: MqttVersion) -> ProtocolVersion {
    match v {
        MqttVersion::V5 => ProtocolVersion::V5,
        MqttVersion::V311 => ProtocolVersion::V3_1_1,
    }
}

fn qos_of(q: u8) -> QoS {
    if q == 2 {
        QoS::ExactlyOnce
    } else {
        QoS::AtLeastOnce
    }
}

async fn run_async(a: TakeoverArgs, addrs: Vec<SocketAddr>) -> Result<TakeoverReport, String> {
    let tag = std::process::id() % 100_000;
    let client_id = a
        .client_id
        .clone()
        .unwrap_or_else(|| format!("rb-takeover-{tag}"));
    let topic = a
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench/takeover/{tag}"));
    let st = Rc::new(RefCell::new(State {
        latency: Some(new_histogram()),
        takeover: Some(new_histogram()),
        ..Default::default()
    }));
    let v = version(a.mqtt);
    // The session: first connection, clean start, subscribed.
    let first = (a.pub_node + 1) % addrs.len();
    let (mut cur, _) = session_connect(&a, v, &client_id, addrs[first], true)
        .await
        .map_err(|e| format!("session CONNECT to {}: {e}", addrs[first]))?;
    with_timeout(
        SETUP_TIMEOUT,
        "SUBACK",
        cur.subscribe(&topic, qos_of(a.qos), 1),
    )
    .await
    .map_err(|e| format!("SUBSCRIBE: {e}"))?;
    // The publisher.
    st.borrow_mut().publishing = true;
    let publisher = glommio::spawn_local(publish(
        a.clone(),
        v,
        addrs[a.pub_node],
        topic.clone(),
        tag,
        st.clone(),
    ));
    let mut olds = Vec::new();
    let mut node = first;
    for _ in 0..a.moves {
        receive_for(&mut cur, &st, a.dwell).await;
        node = (node + 1) % addrs.len();
        let t0 = Instant::now();
        match session_connect(&a, v, &client_id, addrs[node], false).await {
            Ok((next, (present, took))) => {
                let mut s = st.borrow_mut();
                if let Some(h) = &mut s.takeover {
                    let _ = h.record((took.as_nanos() as u64).max(1));
                }
                if !present {
                    s.fresh += 1;
                }
                drop(s);
                let old = std::mem::replace(&mut cur, next);
                olds.push(glommio::spawn_local(drain_old(old, st.clone())));
            }
            Err(e) => {
                st.borrow_mut()
                    .error(format!("takeover CONNECT to {}: {e}", addrs[node]));
                // Keep the current connection; the next move tries again.
                let _ = t0;
            }
        }
    }
    receive_for(&mut cur, &st, a.dwell).await;
    st.borrow_mut().publishing = false;
    if let Err(e) = publisher.await {
        st.borrow_mut().error(format!("publisher: {e}"));
    }
    // Drain: until every acknowledged message arrived, or the deadline.
    let deadline = Instant::now() + a.drain;
    while Instant::now() < deadline && !st.borrow().all_in() {
        receive_for(&mut cur, &st, Duration::from_millis(50)).await;
    }
    cur.disconnect().await;
    for t in olds {
        t.await;
    }
    let report = summarize(&a, &st.borrow());
    Ok(report)
}

/// CONNECTs the session on a new connection; returns it with (session present,
/// CONNECT -> CONNACK time).
async fn session_connect(
    a: &TakeoverArgs,
    v: ProtocolVersion,
    client_id: &str,
    addr: SocketAddr,
    clean: bool,
) -> io::Result<(Conn, (bool, Duration))> {
    let mut c = with_timeout(SETUP_TIMEOUT, "TCP connect", Conn::open(addr, v)).await?;
    let mut properties = ConnectProperties::default();
    if v == ProtocolVersion::V5 {
        properties.receive_maximum = Some(u16::MAX);
        // [MQTT-3.1.2-23] the session outlives the connection for this long.
        properties.session_expiry_interval = Some(a.session_expiry);
    }
    let connect = Connect {
        protocol: v,
        clean_start: clean,
        keep_alive: 60,
        client_id: MqttString::try_from(client_id).map_err(|e| invalid(format!("{e:?}")))?,
        will: None,
        username: None,
        password: None,
        properties,
    };
    c.queue(&Packet::Connect(Box::new(connect)))?;
    let t0 = Instant::now();
    let ack = with_timeout(SETUP_TIMEOUT, "CONNACK", c.read_packet()).await?;
    let took = t0.elapsed();
    match ack {
        Packet::ConnAck(ack) if ack.reason == ReasonCode::Success => {
            Ok((c, (ack.session_present, took)))
        }
        Packet::ConnAck(ack) => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("CONNACK refused: {:?}", ack.reason),
        )),
        other => Err(invalid(format!("expected CONNACK, got {other:?}"))),
    }
}

/// Receives and acknowledges on `c` for `d` (returns early when it fails).
async fn receive_for(c: &mut Conn, st: &Rc<RefCell<State>>, d: Duration) {
    let until = Instant::now() + d;
    loop {
        if let Err(e) = handle_ready(c, st) {
            st.borrow_mut().error(format!("session connection: {e}"));
            return;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let r = futures_lite::future::or(async { c.drive().await.map(|_| true) }, async {
            glommio::timer::sleep(left).await;
            Ok(false)
        })
        .await;
        if let Err(e) = r {
            st.borrow_mut().error(format!("session connection: {e}"));
            return;
        }
    }
}

/// Handles every whole packet read on a connection of the session. Returns
/// `Ok(Some(reason))` when the broker sent DISCONNECT.
fn handle_ready(c: &mut Conn, st: &Rc<RefCell<State>>) -> io::Result<Option<u8>> {
    while let Some(p) = c.next_packet()? {
        match p {
            Packet::Publish(p) => {
                let mut s = st.borrow_mut();
                let mut first = true;
                if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
                    // A resend of a message answered with PUBREC is not a new one
                    // [MQTT-4.3.3-9]: the session remembers the id until PUBREL.
                    first = s.awaiting_rel.insert(id.get());
                }
                if first {
                    if let Some(stamp) = read_stamp(&p.payload) {
                        s.on_message(stamp.seq, stamp.sent_ns, p.dup);
                    }
                }
                drop(s);
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => c.queue_ack(AckKind::PubAck, id)?,
                    (QoS::ExactlyOnce, Some(id)) => c.queue_ack(AckKind::PubRec, id)?,
                    _ => {}
                }
            }
            Packet::PubRel(r) => {
                st.borrow_mut().awaiting_rel.remove(&r.packet_id.get());
                c.queue_ack(AckKind::PubComp, r.packet_id)?;
            }
            Packet::Disconnect(d) => return Ok(Some(d.reason as u8)),
            Packet::PingResp => {}
            other => return Err(invalid(format!("unexpected {other:?}"))),
        }
    }
    Ok(None)
}

/// An old connection of the session: received and acknowledged until the broker closes it.
async fn drain_old(mut c: Conn, st: Rc<RefCell<State>>) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match handle_ready(&mut c, &st) {
            Ok(Some(_)) => {
                st.borrow_mut().old_disconnect += 1;
                return;
            }
            Ok(None) => {}
            Err(_) => {
                st.borrow_mut().old_silent += 1;
                return;
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            st.borrow_mut().old_open += 1;
            return;
        }
        let r = futures_lite::future::or(async { c.drive().await.map(|_| ()) }, async {
            glommio::timer::sleep(left).await;
            Ok(())
        })
        .await;
        if r.is_err() {
            // Closed: a DISCONNECT may have been read just before the end of the stream.
            match handle_ready(&mut c, &st) {
                Ok(Some(_)) => st.borrow_mut().old_disconnect += 1,
                _ => st.borrow_mut().old_silent += 1,
            }
            return;
        }
    }
}

/// The publisher: `--rate` messages/s (0: none) at `--qos`, at most `--inflight` unanswered.
async fn publish(
    a: TakeoverArgs,
    v: ProtocolVersion,
    addr: SocketAddr,
    topic: String,
    tag: u32,
    st: Rc<RefCell<State>>,
) -> io::Result<()> {
    let mut c = with_timeout(SETUP_TIMEOUT, "TCP connect", Conn::open(addr, v)).await?;
    let login = crate::conn::Login {
        version: v,
        client_id: format!("rb-takeover-pub-{tag}"),
        username: None,
        password: None,
        keep_alive: 60,
        clean_start: true,
        will_topic: None,
    };
    with_timeout(SETUP_TIMEOUT, "CONNACK", c.login(&login)).await?;
    let qos = qos_of(a.qos);
    let tpl = Template::new(v, &topic, qos, false, a.payload, 0).map_err(invalid)?;
    let mut inflight: HashMap<u16, u64> = HashMap::new();
    // QoS 2 ids answered with PUBREC, PUBREL sent: in use until PUBCOMP [MQTT-2.2.1-3].
    let mut releasing: HashSet<u16> = HashSet::new();
    let mut next_id: u16 = 0;
    let mut stopped: Option<Instant> = None;
    let mut seq: u64 = 0;
    let start = Instant::now();
    let window = usize::from(a.inflight.max(1));
    loop {
        let publishing = st.borrow().publishing;
        if !publishing {
            let at = *stopped.get_or_insert_with(Instant::now);
            // The unanswered ones are counted as such.
            if (inflight.is_empty() && releasing.is_empty()) || at.elapsed() > a.drain {
                break;
            }
        }
        // Messages due by now, within the window.
        let mut next_due = None;
        if publishing && a.rate > 0.0 {
            loop {
                let due = start + Duration::from_secs_f64(seq as f64 / a.rate);
                if due > Instant::now() {
                    next_due = Some(due);
                    break;
                }
                if inflight.len() >= window {
                    break;
                }
                next_id = next_id.checked_add(1).unwrap_or(1);
                while inflight.contains_key(&next_id) || releasing.contains(&next_id) {
                    next_id = next_id.checked_add(1).unwrap_or(1);
                }
                tpl.append(&mut c.wbuf, next_id, seq, now_ns());
                inflight.insert(next_id, seq);
                st.borrow_mut().acked.push(0);
                seq += 1;
            }
        }
        let wait = next_due
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(20))
            .max(Duration::from_micros(50));
        let r = futures_lite::future::or(async { c.drive().await.map(|_| ()) }, async {
            glommio::timer::sleep(wait).await;
            Ok(())
        })
        .await;
        // On an error the rest stays unacknowledged (counted).
        r?;
        let mut ids = Ids {
            inflight: &mut inflight,
            releasing: &mut releasing,
        };
        while let Some((kind, id, reason)) = c.take_ack() {
            on_ack(&mut c, &st, &mut ids, kind, id, reason)?;
        }
        while let Some(p) = c.next_packet()? {
            match p {
                Packet::PubAck(r) => on_ack(&mut c, &st, &mut ids, 4, r.packet_id, r.reason as u8)?,
                Packet::PubRec(r) => on_ack(&mut c, &st, &mut ids, 5, r.packet_id, r.reason as u8)?,
                Packet::PubComp(r) => on_ack(&mut c, &st, &mut ids, 7, r.packet_id, 0)?,
                Packet::PingResp => {}
                Packet::Disconnect(d) => {
                    return Err(invalid(format!("publisher disconnected: {:?}", d.reason)))
                }
                other => return Err(invalid(format!("publisher got {other:?}"))),
            }
        }
    }
    c.disconnect().await;
    Ok(())
}

/// The publisher's packet ids: awaiting PUBACK/PUBREC (with their sequence numbers),
/// and awaiting PUBCOMP.
struct Ids<'a> {
    inflight: &'a mut HashMap<u16, u64>,
    releasing: &'a mut HashSet<u16>,
}

/// PUBACK (4) / PUBREC (5) / PUBCOMP (7) for the publisher's `id`.
fn on_ack(
    c: &mut Conn,
    st: &Rc<RefCell<State>>,
    ids: &mut Ids<'_>,
    kind: u8,
    id: PacketId,
    reason: u8,
) -> io::Result<()> {
    match kind {
        4 | 5 => {
            if let Some(seq) = ids.inflight.remove(&id.get()) {
                let mut s = st.borrow_mut();
                if let Some(a) = s.acked.get_mut(seq as usize) {
                    *a = if reason >= 0x80 { 2 } else { 1 };
                }
            }
            if kind == 5 && reason < 0x80 {
                ids.releasing.insert(id.get());
                c.queue_ack(AckKind::PubRel, id)?;
            }
        }
        7 => {
            ids.releasing.remove(&id.get());
        }
        _ => {}
    }
    Ok(())
}

fn summarize(a: &TakeoverArgs, s: &State) -> TakeoverReport {
    let acknowledged = s.acked.iter().filter(|x| **x == 1).count() as u64;
    let refused = s.acked.iter().filter(|x| **x == 2).count() as u64;
    let lost = s
        .acked
        .iter()
        .enumerate()
        .filter(|(i, x)| **x == 1 && s.got.get(*i).is_none_or(|g| *g == 0))
        .count() as u64;
    let takeover = s
        .takeover
        .as_ref()
        .map(Latency::from_histogram)
        .unwrap_or_default();
    TakeoverReport {
        nodes: a.nodes.clone(),
        mqtt: match a.mqtt {
            MqttVersion::V5 => "5".into(),
            MqttVersion::V311 => "3.1.1".into(),
        },
        qos: a.qos,
        rate: a.rate,
        dwell_ms: a.dwell.as_millis() as u64,
        moves: takeover.samples,
        takeover,
        fresh_sessions: s.fresh,
        old_closed_with_disconnect: s.old_disconnect,
        old_closed_silently: s.old_silent,
        old_still_open: s.old_open,
        published: s.acked.len() as u64,
        acknowledged,
        refused,
        unacknowledged: s.acked.len() as u64 - acknowledged - refused,
        received: s.got.iter().filter(|g| **g > 0).count() as u64,
        lost,
        duplicated: s.duplicated,
        duplicated_with_dup_flag: s.duplicated_dup_flag,
        out_of_order: s.out_of_order,
        latency: s
            .latency
            .as_ref()
            .map(Latency::from_histogram)
            .unwrap_or_default(),
        errors: s.errors.clone(),
    }
}

/// The report as a readable table.
pub fn table(r: &TakeoverReport) -> String {
    let ms = |us: f64| format!("{:.2} ms", us / 1000.0);
    let mut o = String::new();
    let mut row = |k: &str, v: String| o.push_str(&format!("{k:<28} {v}\n"));
    row("scenario", "takeover".into());
    row("nodes", r.nodes.join(", "));
    row(
        "load",
        format!(
            "MQTT {}, QoS {}, {} msg/s to the session, {} ms per node",
            r.mqtt, r.qos, r.rate, r.dwell_ms
        ),
    );
    row(
        "takeover CONNECT->CONNACK",
        format!(
            "{} moves: p50 {} p90 {} p99 {} max {}",
            r.moves,
            ms(r.takeover.p50_us),
            ms(r.takeover.p90_us),
            ms(r.takeover.p99_us),
            ms(r.takeover.max_us)
        ),
    );
    row(
        "session present 0",
        format!("{} (the session did not move)", r.fresh_sessions),
    );
    row(
        "old connection closed",
        format!(
            "{} with DISCONNECT, {} without, {} still open",
            r.old_closed_with_disconnect, r.old_closed_silently, r.old_still_open
        ),
    );
    row(
        "published",
        format!(
            "{} ({} acknowledged, {} refused, {} unanswered)",
            r.published, r.acknowledged, r.refused, r.unacknowledged
        ),
    );
    row(
        "received",
        format!(
            "{} distinct; lost {} (acknowledged, never received); duplicated {} ({} with DUP); out of order {}",
            r.received, r.lost, r.duplicated, r.duplicated_with_dup_flag, r.out_of_order
        ),
    );
    row(
        "publish->delivery",
        format!(
            "p50 {} p99 {} max {}",
            ms(r.latency.p50_us),
            ms(r.latency.p99_us),
            ms(r.latency.max_us)
        ),
    );
    for e in &r.errors {
        row("error", e.clone());
    }
    o
}
