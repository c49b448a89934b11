//! Outgoing connections: one per (peer, purpose), opened lazily, handshaken,
//! then used for one request at a time; any error drops the connection and
//! the next call opens a new one.
//!
//! A connection that could not be opened waits before the next attempt
//! (20 ms, doubling to [`MAX_RETRY`]): openraft backs off from an unreachable
//! follower only inside a stream session's request stream, which a
//! `stream_append` that fails to connect never polls, so without this a
//! leader retried a dead follower every ~25 µs on its Raft thread (one
//! million `Unreachable` warnings in 15 s, Raft commits of ~0.5 s and
//! publishes stalled for seconds on a node of a three-node cluster with one
//! node down: bench/results/2026-12-05-cluster-outbox.md).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::StreamAppendResult;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use tokio::net::TcpStream;

use super::frame::{parse_answer, read_frame, write_frame, Hello, PROTOCOL_VERSION};
use super::wire::{self, Request, Response};
use super::{BoxIo, NetCtx};
use crate::types::{BasicNode, NodeId, Snapshot, SnapshotData, TypeConfig, Vote};

/// Why a call to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("peer {0} is blocked (test partition)")]
    Blocked(NodeId),
    #[error("connect to {addr}: {msg}")]
    Connect { addr: String, msg: String },
    #[error("peer {addr} refused the handshake: {reason}")]
    Refused { addr: String, reason: String },
    #[error("i/o with {addr}: {msg}")]
    Io { addr: String, msg: String },
    #[error("no answer from {addr} within {ms} ms")]
    Timeout { addr: String, ms: u128 },
}

/// First wait after a failed connect; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(20);
/// Longest wait between connects to a peer that keeps failing (below the
/// election timeout, so a returning node is reached within one).
const MAX_RETRY: Duration = Duration::from_millis(250);

/// One connection to one peer.
pub struct Conn {
    target: NodeId,
    addr: String,
    ctx: Arc<NetCtx>,
    stream: Option<BoxIo>,
    /// After a failed connect: no new attempt before this, and the next wait.
    retry: Mutex<Option<(tokio::time::Instant, Duration)>>,
}

impl Conn {
    pub fn new(ctx: Arc<NetCtx>, target: NodeId, addr: String) -> Self {
        Conn {
            target,
            addr,
            ctx,
            stream: None,
            retry: Mutex::new(None),
        }
    }

    pub(crate) fn ctx(&self) -> &Arc<NetCtx> {
        &self.ctx
    }

    pub(crate) fn target(&self) -> NodeId {
        self.target
    }

    pub(crate) fn io_err(&self, msg: String) -> CallError {
        CallError::Io {
            addr: self.addr.clone(),
            msg,
        }
    }

    /// The open connection, taken out (a stream session gives it back with
    /// [`Conn::put_stream`] when it ends cleanly).
    pub(crate) fn take_stream(&mut self) -> Option<BoxIo> {
        self.stream.take()
    }

    pub(crate) fn put_stream(&mut self, io: BoxIo) {
        self.stream = Some(io);
    }

    pub(crate) fn drop_stream(&mut self) {
        self.stream = None;
    }

    /// Connects and handshakes, first waiting out the backoff of an earlier
    /// failure (module docs).
    pub(crate) async fn open(&self) -> Result<BoxIo, CallError> {
        let not_before = self
            .retry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|r| r.0);
        if let Some(at) = not_before {
            tokio::time::sleep_until(at).await;
        }
        let res = self.connect().await;
        let mut retry = self.retry.lock().unwrap_or_else(|e| e.into_inner());
        *retry = match (&res, *retry) {
            (Ok(_), _) => None,
            (Err(_), None) => Some((tokio::time::Instant::now() + FIRST_RETRY, FIRST_RETRY * 2)),
            (Err(_), Some((_, next))) => Some((
                tokio::time::Instant::now() + next,
                (next * 2).min(MAX_RETRY),
            )),
        };
        res
    }

    async fn connect(&self) -> Result<BoxIo, CallError> {
        let addr = self.addr.clone();
        let err = |msg: String| CallError::Connect {
            addr: addr.clone(),
            msg,
        };
        let tcp = tokio::time::timeout(self.ctx.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| err("timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| err(e.to_string()))?;
        let mut io: BoxIo = match &self.ctx.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let fut = tls.connector.connect(tls.server_name.clone(), tcp);
                let s = tokio::time::timeout(self.ctx.handshake_timeout, fut)
                    .await
                    .map_err(|_| err("tls handshake timed out".into()))?
                    .map_err(|e| err(format!("tls: {e}")))?;
                Box::new(s)
            }
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            from: self.ctx.node_id,
            to: self.target,
            cluster_id: self.ctx.cluster_id.clone(),
        };
        let shake = async {
            write_frame(&mut io, &hello.encode())
                .await
                .map_err(|e| err(e.to_string()))?;
            read_frame(&mut io, 4096)
                .await
                .map_err(|e| err(e.to_string()))
        };
        let answer = tokio::time::timeout(self.ctx.handshake_timeout, shake)
            .await
            .map_err(|_| err("handshake timed out".into()))??;
        parse_answer(&answer).map_err(|reason| CallError::Refused {
            addr: self.addr.clone(),
            reason,
        })?;
        Ok(io)
    }

    /// Sends `req` and waits for its answer for at most `timeout`.
    pub async fn call(&mut self, req: &Request, timeout: Duration) -> Result<Response, CallError> {
        if self.ctx.faults.is_blocked(self.target) {
            self.stream = None;
            return Err(CallError::Blocked(self.target));
        }
        let body = wire::encode(req).map_err(|e| CallError::Io {
            addr: self.addr.clone(),
            msg: e.to_string(),
        })?;
        let addr = self.addr.clone();
        let max = self.ctx.max_frame;
        let fut = async {
            if self.stream.is_none() {
                self.stream = Some(self.open().await?);
            }
            let io_err = |e: String| CallError::Io {
                addr: addr.clone(),
                msg: e,
            };
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| io_err("no stream".into()))?;
            write_frame(stream, &body)
                .await
                .map_err(|e| io_err(e.to_string()))?;
            let raw = read_frame(stream, max)
                .await
                .map_err(|e| io_err(e.to_string()))?;
            wire::decode::<Response>(&raw).map_err(|e| io_err(format!("malformed response: {e}")))
        };
        let res = match tokio::time::timeout(timeout, fut).await {
            Ok(res) => res,
            Err(_) => Err(CallError::Timeout {
                addr: self.addr.clone(),
                ms: timeout.as_millis(),
            }),
        };
        if res.is_err() {
            self.stream = None;
        }
        res
    }
}

/// openraft's view of the network: a [`PeerClient`] per target.
pub struct NetworkFactory {
    ctx: Arc<NetCtx>,
}

/// A vote or pre-vote request: both are answered by `Response::Vote`.
async fn vote_call(
    conn: &mut Conn,
    req: Request,
    option: RPCOption,
) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
    match conn.call(&req, option.soft_ttl()).await.map_err(rpc_err)? {
        Response::Vote(r) => Ok(r),
        other => Err(unexpected(other)),
    }
}

impl NetworkFactory {
    pub fn new(ctx: Arc<NetCtx>) -> Self {
        NetworkFactory { ctx }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            conn: Conn::new(self.ctx.clone(), target, node.addr.clone()),
            pipe: Conn::new(self.ctx.clone(), target, node.addr.clone()),
        }
    }
}

/// The RPCs openraft sends to one peer: unary ones on `conn`, pipelined
/// appends on `pipe` (a connection in stream mode).
pub struct PeerClient {
    conn: Conn,
    pipe: Conn,
}

type StreamItem = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

fn rpc_err(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Blocked(_) | CallError::Connect { .. } | CallError::Refused { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        CallError::Io { .. } | CallError::Timeout { .. } => {
            RPCError::Network(NetworkError::new(&e))
        }
    }
}

fn unexpected(resp: Response) -> RPCError<TypeConfig> {
    let msg = match resp {
        Response::Failed(m) => m,
        other => format!("unexpected response {other:?}"),
    };
    RPCError::Network(NetworkError::from_string(msg))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .conn
            .call(&Request::Append(rpc), option.soft_ttl())
            .await
            .map_err(rpc_err)?
        {
            Response::Append(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, StreamItem>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        super::pipeline::stream_append(&mut self.pipe, input, option)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        vote_call(&mut self.conn, Request::Vote(rpc), option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        vote_call(&mut self.conn, Request::PreVote(rpc), option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let call = self.conn.call(&req, option.hard_ttl());
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = call => match res {
                Ok(Response::Snapshot(r)) => Ok(r),
                Ok(other) => Err(StreamingError::Network(NetworkError::from_string(format!("{:?}", unexpected(other))))),
                Err(e @ (CallError::Blocked(_) | CallError::Connect { .. } | CallError::Refused { .. })) => {
                    Err(StreamingError::Unreachable(Unreachable::new(&e)))
                }
                Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
            },
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .conn
            .call(&Request::TransferLeader(req), option.soft_ttl())
            .await
            .map_err(rpc_err)?
        {
            Response::TransferLeader(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that keeps failing is not retried in a loop: between the
    /// attempts `open` waits 20 ms, doubling to 250 ms, so 600 ms of calls
    /// make at most 6 connects (a hot loop made thousands).
    #[test]
    fn failed_connects_back_off() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Accepts and hangs up at once: every handshake fails.
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap().to_string();
            let accepts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let n = accepts.clone();
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    drop(s);
                }
            });
            let ctx = Arc::new(NetCtx {
                node_id: 1,
                cluster_id: "t".into(),
                tls: None,
                faults: Default::default(),
                stats: Default::default(),
                max_frame: 1 << 20,
                connect_timeout: Duration::from_secs(1),
                handshake_timeout: Duration::from_secs(1),
            });
            let conn = Conn::new(ctx, 2, addr);
            let mut failures = 0;
            let end = tokio::time::Instant::now() + Duration::from_millis(600);
            while tokio::time::Instant::now() < end {
                assert!(conn.open().await.is_err());
                failures += 1;
            }
            let accepts = accepts.load(std::sync::atomic::Ordering::Relaxed);
            assert!((2..=7).contains(&failures), "{failures} connects in 600 ms");
            assert!(accepts <= failures, "{accepts} accepted");
        });
    }
}
