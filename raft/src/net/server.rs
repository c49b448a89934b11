//! The listener: TLS (when configured), the handshake checks, then one
//! request at a time per connection, dispatched to Raft or to the node.
//!
//! A refused or malformed peer gets one `warn!` line naming the peer and the
//! reason, a counter bump, and its connection closed; nothing it sent reaches
//! Raft or the store.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::frame::{answer, read_frame, write_frame, FrameError, Hello, PROTOCOL_VERSION};
use super::stats::NetStats;
use super::wire::{self, Request, Response};
use super::{BoxIo, NetCtx};
use crate::node::core::Core;
use crate::types::{NodeId, Snapshot};

/// Accepts peers until the task is dropped.
pub async fn serve(listener: TcpListener, core: Arc<Core>) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let core = core.clone();
                tokio::spawn(async move { connection(tcp, peer, core).await });
            }
            Err(e) => {
                warn!(error = %e, "cluster listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(tcp: TcpStream, peer: SocketAddr, core: Arc<Core>) {
    let ctx = core.net.clone();
    let _ = tcp.set_nodelay(true);
    let mut io: BoxIo = match &ctx.tls {
        None => Box::new(tcp),
        Some(tls) => {
            match tokio::time::timeout(ctx.handshake_timeout, tls.acceptor.accept(tcp)).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    NetStats::bump(&ctx.stats.tls_failed);
                    warn!(%peer, error = %e, "cluster peer refused: tls handshake failed");
                    return;
                }
                Err(_) => {
                    NetStats::bump(&ctx.stats.tls_failed);
                    warn!(%peer, "cluster peer refused: tls handshake timed out");
                    return;
                }
            }
        }
    };
    let Some(from) = handshake(&mut io, peer, &ctx).await else {
        return;
    };
    NetStats::bump(&ctx.stats.accepted);
    debug!(%peer, from, "cluster peer connected");
    loop {
        let raw = match read_frame(&mut io, ctx.max_frame).await {
            Ok(raw) => raw,
            Err(FrameError::Closed) => return,
            Err(FrameError::TooLarge { len, max }) => {
                NetStats::bump(&ctx.stats.oversized);
                warn!(%peer, from, len, max, "cluster peer dropped: frame over the size limit");
                return;
            }
            Err(FrameError::Io(e)) => {
                debug!(%peer, from, error = %e, "cluster peer connection lost");
                return;
            }
        };
        if ctx.faults.is_blocked(from) {
            return;
        }
        let req: Request = match wire::decode(&raw) {
            Ok(req) => req,
            Err(e) => {
                NetStats::bump(&ctx.stats.malformed);
                warn!(%peer, from, error = %e, "cluster peer dropped: malformed message");
                return;
            }
        };
        NetStats::bump(&ctx.stats.requests);
        if matches!(req, Request::AppendStream) {
            return append_stream(io, peer, from, core).await;
        }
        let resp = dispatch(&core, req).await;
        let body = match wire::encode(&resp) {
            Ok(b) => b,
            Err(e) => {
                warn!(%peer, from, error = %e, "cluster: cannot encode a response");
                return;
            }
        };
        if write_frame(&mut io, &body).await.is_err() {
            return;
        }
    }
}

/// Reads and checks the peer's hello; answers it. The peer's node id when accepted.
async fn handshake(io: &mut BoxIo, peer: SocketAddr, ctx: &NetCtx) -> Option<NodeId> {
    let raw = match tokio::time::timeout(ctx.handshake_timeout, read_frame(io, 4096)).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(FrameError::TooLarge { len, .. })) => {
            NetStats::bump(&ctx.stats.malformed);
            warn!(%peer, len, "cluster peer refused: not a ringmq cluster handshake (oversized first frame)");
            return None;
        }
        Ok(Err(_)) => return None,
        Err(_) => {
            NetStats::bump(&ctx.stats.malformed);
            warn!(%peer, "cluster peer refused: no handshake within the timeout");
            return None;
        }
    };
    let refusal = match Hello::decode(&raw) {
        Err(e) => {
            NetStats::bump(&ctx.stats.malformed);
            Some(e.to_string())
        }
        Ok(h) if h.version != PROTOCOL_VERSION => {
            NetStats::bump(&ctx.stats.refused_version);
            Some(format!(
                "protocol version {} not supported (this node speaks {PROTOCOL_VERSION})",
                h.version
            ))
        }
        Ok(h) if h.cluster_id != ctx.cluster_id => {
            NetStats::bump(&ctx.stats.refused_cluster);
            Some(format!(
                "cluster id {:?} is not this cluster ({:?})",
                h.cluster_id, ctx.cluster_id
            ))
        }
        Ok(h) if h.to != ctx.node_id || h.from == ctx.node_id || h.from == 0 => {
            NetStats::bump(&ctx.stats.refused_node);
            Some(format!(
                "addressed to node {} from node {}; this is node {}",
                h.to, h.from, ctx.node_id
            ))
        }
        Ok(h) if ctx.faults.is_blocked(h.from) => return None,
        Ok(h) => {
            let _ = write_frame(io, &answer(None)).await;
            return Some(h.from);
        }
    };
    let reason = refusal.unwrap_or_default();
    warn!(%peer, "cluster peer refused: {reason}");
    let _ = write_frame(io, &answer(Some(&reason))).await;
    None
}

async fn dispatch(core: &Core, req: Request) -> Response {
    let raft = &core.raft;
    match req {
        Request::Append(r) => match raft.append_entries(r).await {
            Ok(r) => Response::Append(r),
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::Vote(r) => match raft.vote(r).await {
            Ok(r) => Response::Vote(r),
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::PreVote(r) => match raft.pre_vote(r).await {
            Ok(r) => Response::Vote(r),
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::Snapshot { vote, meta, data } => {
            let snap = Snapshot {
                meta,
                snapshot: Cursor::new(data),
            };
            match raft.install_full_snapshot(vote, snap).await {
                Ok(r) => Response::Snapshot(r),
                Err(e) => Response::Failed(e.to_string()),
            }
        }
        Request::TransferLeader(r) => match raft.handle_transfer_leader(r).await {
            Ok(r) => Response::TransferLeader(r),
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::Forward(cmd) => core.answer_forward(cmd).await,
        Request::Read(key) => core.answer_read(key).await,
        Request::AppendStream => Response::Failed("append stream already open".into()),
    }
}

/// A connection in stream mode: every frame is an `Append`, fed to
/// `Raft::stream_append` (queued for the log without waiting for each
/// flush), every answer written back in order as it comes. Ends when the
/// peer closes, sends anything else, or an answer is an error.
async fn append_stream(io: BoxIo, peer: SocketAddr, from: NodeId, core: Arc<Core>) {
    let ctx = core.net.clone();
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, rx) = tokio::sync::mpsc::channel(super::pipeline::DEPTH);
    let rctx = ctx.clone();
    let reader = tokio::spawn(async move {
        loop {
            let raw = match read_frame(&mut rd, rctx.max_frame).await {
                Ok(raw) => raw,
                Err(FrameError::TooLarge { len, max }) => {
                    NetStats::bump(&rctx.stats.oversized);
                    warn!(%peer, from, len, max, "cluster peer dropped: frame over the size limit");
                    return;
                }
                Err(_) => return,
            };
            if rctx.faults.is_blocked(from) {
                return;
            }
            match wire::decode::<Request>(&raw) {
                Ok(Request::Append(r)) => {
                    NetStats::bump(&rctx.stats.requests);
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
                Ok(other) => {
                    NetStats::bump(&rctx.stats.malformed);
                    warn!(%peer, from, "cluster peer dropped: {other:?} inside an append stream");
                    return;
                }
                Err(e) => {
                    NetStats::bump(&rctx.stats.malformed);
                    warn!(%peer, from, error = %e, "cluster peer dropped: malformed message");
                    return;
                }
            }
        }
    });
    let input =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut output = std::pin::pin!(core.raft.stream_append(input));
    while let Some(item) = output.next().await {
        let (resp, last) = match item {
            Ok(r) => {
                let last = r.is_err();
                (Response::Streamed(r), last)
            }
            Err(fatal) => (Response::Failed(fatal.to_string()), true),
        };
        let Ok(body) = wire::encode(&resp) else {
            break;
        };
        if ctx.faults.is_blocked(from) || write_frame(&mut wr, &body).await.is_err() || last {
            break;
        }
    }
    reader.abort();
}
