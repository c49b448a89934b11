//! Operator questions asked of other nodes over the node links: `ringmq ctl
//! clients` cluster-wide (frame kinds 0x50-0x5F).
//!
//! The admin thread of the node asked hands shard 0 an [`AskClients`]
//! (`Control::AskPeers`); shard 0 sends `ClientsAsk` on the link of each
//! node named, and each answer (`ClientsAnswer`) goes back to the admin
//! thread on the ask's channel. On the node asked, shard 0 gathers its
//! shards' lists over their control channels (the same question the local
//! admin socket asks), within [`GATHER_TIMEOUT`], and answers on the link.
//! A node whose link is down is answered at once with the reason; a node
//! that does not answer is the admin thread's bounded wait to judge.
//!
//! Rows travel in a small binary layout of their own ([`encode_rows`]):
//! every field of [`ClientInfo`], strings length-prefixed.

use super::frame::{Frame, FrameError};
use super::hub::Hub;
use super::link::Link;
use crate::control::{ClientInfo, Control, Query, Reply};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long the node asked waits for its own shards (under the asker's
/// default wait of 2 s, so a slow shard costs its rows, not the whole answer).
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(1);

/// Rows of one node at most (the ask's limit is capped to this).
pub const MAX_ROWS: u32 = 1_000_000;

/// What one node answered.
#[derive(Debug)]
pub struct PeerClients {
    pub node: u64,
    /// `(clients matching in all, the rows sent)` or why there is no answer.
    pub result: Result<(u32, Vec<ClientInfo>), String>,
}

/// A question for other nodes' connected clients.
#[derive(Debug)]
pub struct AskClients {
    /// The nodes to ask (this node excluded).
    pub nodes: Vec<u64>,
    /// Only this shard of each node.
    pub shard: Option<usize>,
    /// `--match`: a glob with `*`/`?`, else a substring of the client id.
    pub pattern: Option<String>,
    /// Rows per node at most.
    pub limit: u32,
    /// How long shard 0 keeps the question open (the asker waits at most this).
    pub timeout: Duration,
    /// One [`PeerClients`] per node goes here.
    pub reply: flume::Sender<PeerClients>,
}

/// A question sent to one peer, waiting for its answer.
pub(crate) struct Pending {
    node: u64,
    deadline: Instant,
    reply: flume::Sender<PeerClients>,
}

impl Hub {
    /// Sends `ask` on the link of each node it names; a node that is not a
    /// peer or whose link is down is answered at once with the reason.
    pub(crate) fn ask_clients(&self, ask: AskClients) {
        let pattern = ask.pattern.clone().unwrap_or_default();
        let only = ask
            .shard
            .map_or(u32::MAX, |s| s.min(u32::MAX as usize - 1) as u32);
        for &node in &ask.nodes {
            let result = match self.links.iter().find(|l| l.peer.id == node) {
                None => Err(format!("node {node} is not a peer of this node")),
                Some(l) if !l.is_up() => Err(format!("the node link to node {node} is down")),
                Some(l) => {
                    let req = self.next_ask.get() + 1;
                    self.next_ask.set(req);
                    self.asks.borrow_mut().insert(
                        req,
                        Pending {
                            node,
                            deadline: Instant::now() + ask.timeout,
                            reply: ask.reply.clone(),
                        },
                    );
                    l.push_frame(&Frame::ClientsAsk {
                        req,
                        shard: only,
                        limit: ask.limit,
                        pattern: pattern.clone(),
                    });
                    continue;
                }
            };
            let _ = ask.reply.send(PeerClients { node, result });
        }
    }

    /// A peer asked for this node's clients: gathered from every shard, answered on its link.
    pub(crate) fn on_clients_ask(
        self: &Rc<Self>,
        link: &Rc<Link>,
        req: u64,
        only: u32,
        limit: u32,
        pattern: String,
    ) {
        let (hub, link) = (self.clone(), link.clone());
        glommio::spawn_local(async move {
            let shard = (only != u32::MAX).then_some(only as usize);
            let pattern = (!pattern.is_empty()).then_some(pattern);
            let (total, rows) = gather(&hub.controls, shard, pattern.as_deref(), limit).await;
            let mut b = BytesMut::new();
            encode_rows(&rows, &mut b);
            if link.is_up() {
                link.push_frame(&Frame::ClientsAnswer {
                    req,
                    total,
                    rows: b.freeze(),
                });
            }
        })
        .detach();
    }

    /// A peer's answer: to the admin thread that asked (a late one is dropped).
    pub(crate) fn on_clients_answer(&self, from: u64, req: u64, total: u32, rows: Bytes) {
        let pending = self.asks.borrow_mut().remove(&req);
        let Some(p) = pending.filter(|p| p.node == from) else {
            return;
        };
        let result = decode_rows(rows)
            .map(|r| (total, r))
            .map_err(|e| format!("node {from} answered with a malformed list: {e}"));
        let _ = p.reply.send(PeerClients { node: from, result });
    }

    /// The link to `node` went down: its open questions fail now.
    pub(crate) fn asks_link_down(&self, node: u64) {
        let gone: Vec<Pending> = {
            let mut asks = self.asks.borrow_mut();
            let reqs: Vec<u64> = asks
                .iter()
                .filter(|(_, p)| p.node == node)
                .map(|(r, _)| *r)
                .collect();
            reqs.iter().filter_map(|r| asks.remove(r)).collect()
        };
        for p in gone {
            let result = Err(format!(
                "the node link to node {node} closed before it answered"
            ));
            let _ = p.reply.send(PeerClients { node, result });
        }
    }

    /// Forgets questions past their deadline (the asker stopped waiting).
    pub(crate) fn expire_asks(&self, now: Instant) {
        let mut asks = self.asks.borrow_mut();
        if !asks.is_empty() {
            asks.retain(|_, p| p.deadline > now);
        }
    }
}

/// `--match PATTERN`: a glob with `*` and `?` when it has either, else a substring.
pub fn id_matches(pattern: &str, id: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return id.contains(pattern);
    }
    glob(pattern.as_bytes(), id.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// This node's connected clients, from every shard (or `shard` alone), for a
/// peer's `ClientsAsk`: `(matching in all, at most `limit` rows by client id)`.
/// A shard that does not answer within [`GATHER_TIMEOUT`] is left out.
pub(crate) async fn gather(
    controls: &[flume::Sender<Control>],
    shard: Option<usize>,
    pattern: Option<&str>,
    limit: u32,
) -> (u32, Vec<ClientInfo>) {
    let (tx, rx) = flume::unbounded();
    let mut asked = 0;
    for (i, c) in controls.iter().enumerate() {
        let q = Query::Clients { pattern: None };
        if shard.is_none_or(|s| s == i) && c.send(Control::Query(q, tx.clone())).is_ok() {
            asked += 1;
        }
    }
    drop(tx);
    let mut rows = Vec::new();
    let collect = async {
        for _ in 0..asked {
            match rx.recv_async().await {
                Ok(Reply::Clients(_, list)) => rows.extend(list),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    let late = glommio::timer::sleep(GATHER_TIMEOUT);
    futures_lite::future::or(collect, async {
        late.await;
    })
    .await;
    if let Some(p) = pattern {
        rows.retain(|c| id_matches(p, &c.client_id));
    }
    rows.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let total = rows.len().min(u32::MAX as usize) as u32;
    rows.truncate(limit.min(MAX_ROWS) as usize);
    (total, rows)
}

/// Encodes client rows for a `ClientsAnswer` frame.
pub fn encode_rows(rows: &[ClientInfo], out: &mut BytesMut) {
    out.put_u32(rows.len() as u32);
    for c in rows {
        put_str(out, &c.client_id);
        out.put_u32(c.shard as u32);
        out.put_u8(u8::from(c.connected) | (u8::from(c.clean_start) << 1));
        out.put_u8(c.protocol);
        put_str(out, c.peer.as_deref().unwrap_or(""));
        out.put_u16(c.keep_alive);
        out.put_u32(c.session_expiry);
        out.put_u32(c.subscriptions as u32);
        out.put_u32(c.inflight as u32);
        out.put_u32(c.queued as u32);
        out.put_u64(c.held_bytes);
        out.put_u16(c.dropped.len() as u16);
        for (reason, n) in &c.dropped {
            put_str(out, reason);
            out.put_u64(*n);
        }
    }
}

/// Decodes what [`encode_rows`] wrote; `Err` on any malformation.
pub fn decode_rows(mut b: Bytes) -> Result<Vec<ClientInfo>, FrameError> {
    const WHAT: &str = "clients answer";
    need(&b, 4)?;
    let n = b.get_u32() as usize;
    // Each row takes at least 38 bytes: a count past that is a lie.
    if n > b.len() / 38 {
        return Err(FrameError::Truncated(WHAT));
    }
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        let client_id = get_str(&mut b)?;
        need(&b, 6)?;
        let shard = b.get_u32() as usize;
        let flags = b.get_u8();
        let protocol = b.get_u8();
        let peer = get_str(&mut b)?;
        need(&b, 2 + 4 * 4 + 8 + 2)?;
        let mut c = ClientInfo {
            client_id,
            shard,
            connected: flags & 1 != 0,
            clean_start: flags & 2 != 0,
            protocol,
            peer: (!peer.is_empty()).then_some(peer),
            keep_alive: b.get_u16(),
            session_expiry: b.get_u32(),
            subscriptions: b.get_u32() as usize,
            inflight: b.get_u32() as usize,
            queued: b.get_u32() as usize,
            held_bytes: b.get_u64(),
            dropped: Vec::new(),
        };
        for _ in 0..b.get_u16() {
            let reason = get_str(&mut b)?;
            need(&b, 8)?;
            c.dropped.push((reason, b.get_u64()));
        }
        rows.push(c);
    }
    if !b.is_empty() {
        return Err(FrameError::Truncated(WHAT));
    }
    Ok(rows)
}

fn need(b: &Bytes, n: usize) -> Result<(), FrameError> {
    if b.len() < n {
        return Err(FrameError::Truncated("clients answer"));
    }
    Ok(())
}

fn put_str(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

fn get_str(b: &mut Bytes) -> Result<String, FrameError> {
    need(b, 2)?;
    let n = b.get_u16() as usize;
    need(b, n)?;
    String::from_utf8(b.split_to(n).to_vec()).map_err(|_| FrameError::Truncated("clients answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_lies_are_refused() {
        let rows = vec![
            ClientInfo {
                client_id: "a".into(),
                shard: 1,
                connected: true,
                protocol: 5,
                peer: Some("127.0.0.1:5000".into()),
                keep_alive: 30,
                clean_start: true,
                session_expiry: 60,
                subscriptions: 2,
                inflight: 3,
                queued: 4,
                held_bytes: 99,
                dropped: vec![("queue_full".into(), 7)],
            },
            ClientInfo {
                client_id: "bé".into(),
                ..ClientInfo::default()
            },
        ];
        let mut b = BytesMut::new();
        encode_rows(&rows, &mut b);
        let back = decode_rows(b.clone().freeze()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{rows:?}"));
        // Cut anywhere: refused, never a panic.
        for cut in 0..b.len() {
            assert!(decode_rows(Bytes::copy_from_slice(&b[..cut])).is_err());
        }
        let mut lie = BytesMut::new();
        lie.put_u32(1_000_000);
        assert!(decode_rows(lie.freeze()).is_err());
    }

    #[test]
    fn match_patterns() {
        assert!(id_matches("sensor", "a-sensor-1"));
        assert!(id_matches("sensor-*", "sensor-12"));
        assert!(!id_matches("sensor-*", "xsensor-12"));
        assert!(id_matches("s?n*1", "sensor-1"));
        assert!(id_matches("*", ""));
        assert!(!id_matches("a*b", "acbd"));
    }
}
