//! TEST FIXTURE, NOT A BROKER: a trivial single-core MQTT relay.
//!
//! It exists for two jobs only: measuring the generator's own ceiling (`selfcheck`), and
//! proving in tests that loss, duplicates and reordering are detected (it can drop,
//! duplicate and swap forwarded messages on purpose). It accepts any CONNECT, grants
//! every subscription at QoS 0, acknowledges QoS 1/2 publishes, and forwards each
//! PUBLISH at QoS 0 to every matching subscription. No sessions, no retained messages,
//! no keep-alive enforcement, no spec conformance beyond what the generator needs.

use crate::conn::{AckKind, Conn};
use crate::payload::filter_matches;
use bytes::BytesMut;
use futures_lite::future::{or, poll_fn};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use ringmq_codec::{
    ConnAck, ConnAckProperties, Packet, ProtocolVersion, Publish, QoS, ReasonCode, SubAck,
    SubAckProperties,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Poll, Waker};
use std::time::Duration;

/// Deliberate faults, applied to forwarded messages counted from 1 (0 = off).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Drop every Nth forwarded message.
    pub drop_every: u64,
    /// Send every Nth forwarded message twice.
    pub dup_every: u64,
    /// Hold every Nth forwarded message back and send it after the next one.
    pub swap_every: u64,
}

/// A running relay fixture; stopped on [`RelayFixture::stop`] or drop.
pub struct RelayFixture {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

impl RelayFixture {
    /// Starts the fixture on 127.0.0.1 (port 0 = any), pinned to `cpu` if given.
    pub fn start(port: u16, cpu: Option<usize>, faults: Faults) -> io::Result<RelayFixture> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let st = stop.clone();
        let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
        let thread = LocalExecutorBuilder::new(placement)
            .name("relay-fixture")
            .io_memory(1 << 20)
            .spawn(move || async move {
                let listener = match TcpListener::bind(("127.0.0.1", port)) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(listener.local_addr().map_err(|e| e.to_string()));
                // The accept loop is never raced per call (a dropped accept can lose a
                // connection); the whole loop is dropped once the stop flag is seen.
                or(accept_loop(listener, faults), async {
                    while !st.load(Ordering::Relaxed) {
                        glommio::timer::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
            })
            .map_err(|e| io::Error::other(e.to_string()))?;
        let addr = rx
            .recv()
            .map_err(|e| io::Error::other(e.to_string()))?
            .map_err(io::Error::other)?;
        Ok(RelayFixture {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RelayFixture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Default)]
struct Outbox {
    buf: BytesMut,
    waker: Option<Waker>,
    version: Option<ProtocolVersion>,
    held: Option<BytesMut>,
}

#[derive(Default)]
struct Hub {
    outboxes: HashMap<u64, Outbox>,
    /// Filters without wildcards, by topic.
    exact: HashMap<String, Vec<u64>>,
    /// Filters with wildcards.
    wild: Vec<(String, u64)>,
    targets: Vec<u64>,
    forwarded: u64,
    /// Bytes waiting in all outboxes; readers pause above [`MAX_BACKLOG`].
    backlog: usize,
    faults: Faults,
    scratch: [BytesMut; 2],
}

impl Hub {
    fn subscribe(&mut self, filter: &str, id: u64) {
        if filter.contains(['+', '#']) {
            self.wild.push((filter.to_string(), id));
        } else {
            self.exact.entry(filter.to_string()).or_default().push(id);
        }
    }

    fn unsubscribe_all(&mut self, id: u64) {
        self.wild.retain(|(_, s)| *s != id);
        for v in self.exact.values_mut() {
            v.retain(|s| *s != id);
        }
    }

    /// Fills `self.targets` with the connections subscribed to `topic`.
    fn match_targets(&mut self, topic: &str) {
        self.targets.clear();
        if let Some(v) = self.exact.get(topic) {
            self.targets.extend_from_slice(v);
        }
        let wild = self.wild.iter().filter(|(f, _)| filter_matches(f, topic));
        self.targets.extend(wild.map(|(_, id)| *id));
    }

    /// Fast path: a QoS 0 PUBLISH frame (no retain) forwarded as is when every target
    /// speaks `version`; false (nothing sent) otherwise.
    fn forward_raw(&mut self, frame: &[u8], topic: &str, version: ProtocolVersion) -> bool {
        self.match_targets(topic);
        let targets = std::mem::take(&mut self.targets);
        let same = targets.iter().all(|id| {
            self.outboxes
                .get(id)
                .is_none_or(|o| o.version == Some(version))
        });
        if same {
            for id in &targets {
                self.deliver(*id, frame);
            }
        }
        self.targets = targets;
        same
    }

    fn forward(&mut self, p: &Publish) {
        self.match_targets(p.topic.as_str());
        let targets = std::mem::take(&mut self.targets);
        let mut encoded = [false; 2];
        let mut scratch = std::mem::take(&mut self.scratch);
        for id in &targets {
            let Some(o) = self.outboxes.get(id) else {
                continue;
            };
            let v = usize::from(o.version == Some(ProtocolVersion::V5));
            if !encoded[v] {
                encoded[v] = true;
                let mut q = p.clone();
                q.qos = QoS::AtMostOnce;
                q.packet_id = None;
                q.dup = false;
                q.retain = false;
                scratch[v].clear();
                let version = [ProtocolVersion::V3_1_1, ProtocolVersion::V5][v];
                let _ = Packet::Publish(q).encode(version, &mut scratch[v]);
            }
            self.deliver(*id, &scratch[v]);
        }
        self.scratch = scratch;
        self.targets = targets;
    }

    /// Appends one forwarded frame to connection `id`'s outbox, applying the faults.
    fn deliver(&mut self, id: u64, frame: &[u8]) {
        let Some(o) = self.outboxes.get_mut(&id) else {
            return;
        };
        self.forwarded += 1;
        let n = self.forwarded;
        let f = self.faults;
        let hit = |every: u64| every > 0 && n.is_multiple_of(every);
        if hit(f.drop_every) {
            return;
        }
        if hit(f.swap_every) && o.held.is_none() {
            o.held = Some(BytesMut::from(frame));
            return;
        }
        let before = o.buf.len();
        o.buf.extend_from_slice(frame);
        if hit(f.dup_every) {
            o.buf.extend_from_slice(frame);
        }
        if let Some(h) = o.held.take() {
            o.buf.extend_from_slice(&h);
        }
        self.backlog += o.buf.len() - before;
        if let Some(w) = o.waker.take() {
            w.wake();
        }
    }
}

async fn accept_loop(listener: TcpListener, faults: Faults) {
    let hub = Rc::new(RefCell::new(Hub {
        faults,
        ..Hub::default()
    }));
    let mut next_id = 0u64;
    loop {
        let Ok(stream) = listener.accept().await else {
            continue;
        };
        next_id += 1;
        let Ok(conn) = Conn::accepted(stream) else {
            continue;
        };
        hub.borrow_mut().outboxes.insert(next_id, Outbox::default());
        let (hub, id) = (hub.clone(), next_id);
        glommio::spawn_local(async move {
            let _ = serve(&hub, id, conn).await;
            let mut h = hub.borrow_mut();
            if let Some(o) = h.outboxes.remove(&id) {
                h.backlog -= o.buf.len();
            }
            h.unsubscribe_all(id);
        })
        .detach();
    }
}

/// Outbox bytes above which connections stop reading until subscribers catch up.
const MAX_BACKLOG: usize = 16 << 20;

async fn serve(hub: &Rc<RefCell<Hub>>, id: u64, mut conn: Conn) -> io::Result<()> {
    loop {
        while conn.wbuf.is_empty() && {
            let h = hub.borrow();
            h.backlog > MAX_BACKLOG && h.outboxes.get(&id).is_some_and(|o| o.buf.is_empty())
        } {
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
        let got_mail = or(async { conn.drive().await.map(|_| false) }, async {
            poll_fn(|cx| {
                let mut h = hub.borrow_mut();
                let o = h.outboxes.get_mut(&id).expect("registered");
                if o.buf.is_empty() {
                    o.waker = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(Ok(true))
                }
            })
            .await
        })
        .await?;
        if got_mail {
            let mut h = hub.borrow_mut();
            let o = h.outboxes.get_mut(&id).expect("registered");
            conn.wbuf.extend_from_slice(&o.buf);
            let n = o.buf.len();
            o.buf.clear();
            h.backlog -= n;
        }
        loop {
            // Fast path: plain QoS 0 PUBLISH, forwarded byte for byte.
            if let Some(rp) = conn.peek_publish().filter(|rp| rp.first_byte == 0x30) {
                let buf = conn.read_buf();
                let sent = match std::str::from_utf8(&buf[rp.topic.clone()]) {
                    Ok(topic) => {
                        hub.borrow_mut()
                            .forward_raw(&buf[..rp.frame_len], topic, conn.version)
                    }
                    Err(_) => false,
                };
                if sent {
                    conn.consume(rp.frame_len);
                    continue;
                }
            }
            match conn.next_packet()? {
                Some(p) => handle(hub, id, &mut conn, p)?,
                None => break,
            }
        }
    }
}

fn handle(hub: &Rc<RefCell<Hub>>, id: u64, conn: &mut Conn, p: Packet) -> io::Result<()> {
    match p {
        Packet::Connect(c) => {
            conn.set_version(c.protocol);
            hub.borrow_mut()
                .outboxes
                .get_mut(&id)
                .expect("registered")
                .version = Some(c.protocol);
            conn.queue(&Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::Success,
                properties: ConnAckProperties::default().into(),
            }))?;
        }
        Packet::Subscribe(s) => {
            let mut h = hub.borrow_mut();
            for (f, _) in &s.filters {
                h.subscribe(f.as_str(), id);
            }
            conn.queue(&Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                reasons: vec![ReasonCode::Success; s.filters.len()],
                properties: SubAckProperties::default().into(),
            }))?;
        }
        Packet::Publish(p) => {
            match (p.qos, p.packet_id) {
                (QoS::AtLeastOnce, Some(pid)) => conn.queue_ack(AckKind::PubAck, pid)?,
                (QoS::ExactlyOnce, Some(pid)) => conn.queue_ack(AckKind::PubRec, pid)?,
                _ => {}
            }
            hub.borrow_mut().forward(&p);
        }
        Packet::PubRel(r) => conn.queue_ack(AckKind::PubComp, r.packet_id)?,
        Packet::PingReq => conn.queue(&Packet::PingResp)?,
        Packet::Disconnect(_) => return Err(io::ErrorKind::ConnectionAborted.into()),
        _ => {}
    }
    Ok(())
}
