//! Pipelined replication: openraft's `stream_append` over one connection per
//! follower, many AppendEntries in flight.
//!
//! The leader's replication task produces a stream of AppendEntries requests
//! (a new one as soon as new entries are submitted to its log, without
//! waiting for the previous answer). The sender here writes each request as
//! a frame the moment it is produced, up to [`DEPTH`] unanswered, and yields
//! the answers in order as they come back. The connection was switched to
//! stream mode by a [`Request::AppendStream`] frame after the handshake; the
//! follower feeds the frames into `Raft::stream_append`, which queues them
//! for its log without waiting for each flush (so the follower group-commits
//! them too) and answers each once its entries are durable. TCP keeps the
//! order; the follower answers in order.
//!
//! A session that ended cleanly (every request answered, the input
//! exhausted) leaves the connection open for the next one (the heartbeat
//! worker opens one session per heartbeat); any error or an abandoned
//! session drops it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::{CallError, Conn};
use super::frame::{read_frame, write_frame};
use super::wire::{self, Request, Response};
use super::{BoxIo, NetCtx};
use crate::types::{NodeId, TypeConfig};

/// Most AppendEntries sent and not yet answered on one stream.
pub const DEPTH: usize = 64;
/// Shortest wait for the next answer while requests are outstanding: an
/// answer waits for the follower's fsync behind the ones queued before it,
/// and a timeout resends everything on a new connection.
const MIN_ANSWER_WAIT: Duration = Duration::from_secs(1);

type Req = AppendEntriesRequest<TypeConfig>;
type Item = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// Aborts the sending task when the session is dropped mid-way: it may be
/// parked inside openraft's request stream, holding its lock.
struct Sender(Option<JoinHandle<(WriteHalf<BoxIo>, bool)>>);

impl Drop for Sender {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

struct Session<'s> {
    slot: &'s mut Conn,
    ctx: Arc<NetCtx>,
    target: NodeId,
    rd: Option<ReadHalf<BoxIo>>,
    sent: mpsc::Receiver<()>,
    sender: Sender,
    wait: Duration,
    done: bool,
}

fn net_err(e: impl ToString) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(e.to_string()))
}

/// The connection in stream mode: the pipe's open one, or a new one.
async fn stream_conn(pipe: &mut Conn) -> Result<BoxIo, CallError> {
    if let Some(io) = pipe.take_stream() {
        return Ok(io);
    }
    let mut io = pipe.open().await?;
    let body = wire::encode(&Request::AppendStream).map_err(|e| pipe.io_err(e.to_string()))?;
    write_frame(&mut io, &body)
        .await
        .map_err(|e| pipe.io_err(e.to_string()))?;
    Ok(io)
}

/// openraft's `stream_append` for one follower (see the module docs).
pub fn stream_append<'s, S>(
    pipe: &'s mut Conn,
    input: S,
    option: RPCOption,
) -> BoxFuture<'s, Result<BoxStream<'s, Item>, RPCError<TypeConfig>>>
where
    S: futures::Stream<Item = Req> + Send + Unpin + 'static,
{
    Box::pin(async move {
        let ctx = pipe.ctx().clone();
        let target = pipe.target();
        if ctx.faults.is_blocked(target) {
            pipe.drop_stream();
            return Err(RPCError::Unreachable(Unreachable::new(
                &CallError::Blocked(target),
            )));
        }
        let io = stream_conn(pipe).await.map_err(|e| match e {
            CallError::Blocked(_) | CallError::Connect { .. } | CallError::Refused { .. } => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            other => net_err(other),
        })?;
        let (rd, wr) = tokio::io::split(io);
        let (sent_tx, sent) = mpsc::channel(DEPTH);
        let task = tokio::spawn(send(wr, input, sent_tx, ctx.clone(), target));
        let session = Session {
            slot: pipe,
            ctx,
            target,
            rd: Some(rd),
            sent,
            sender: Sender(Some(task)),
            wait: option.soft_ttl().max(MIN_ANSWER_WAIT),
            done: false,
        };
        let out: BoxStream<'s, Item> = Box::pin(futures::stream::unfold(session, next));
        Ok(out)
    })
}

/// Writes each request as it is produced; `true` when the input ran out
/// (the connection is then clean: nothing half written).
async fn send<S>(
    mut wr: WriteHalf<BoxIo>,
    mut input: S,
    sent: mpsc::Sender<()>,
    ctx: Arc<NetCtx>,
    target: NodeId,
) -> (WriteHalf<BoxIo>, bool)
where
    S: futures::Stream<Item = Req> + Send + Unpin + 'static,
{
    while let Some(req) = input.next().await {
        if ctx.faults.is_blocked(target) {
            return (wr, false);
        }
        let Ok(body) = wire::encode(&Request::Append(req)) else {
            return (wr, false);
        };
        // A slot first: at most DEPTH requests unanswered.
        if sent.send(()).await.is_err() {
            return (wr, false);
        }
        if write_frame(&mut wr, &body).await.is_err() {
            return (wr, false);
        }
    }
    (wr, true)
}

/// The next answer, in order; the end of the session when everything sent
/// was answered and the input is exhausted.
async fn next<'s>(mut s: Session<'s>) -> Option<(Item, Session<'s>)> {
    if s.done {
        return None;
    }
    match s.sent.recv().await {
        None => {
            // The sender ended and every request it wrote was answered.
            let task = s.sender.0.take()?;
            match (task.await, s.rd.take()) {
                (Ok((wr, true)), Some(rd)) => {
                    s.slot.put_stream(rd.unsplit(wr));
                    None
                }
                _ => {
                    s.done = true;
                    Some((Err(net_err("append stream: sending failed")), s))
                }
            }
        }
        Some(()) => {
            let item = answer(&mut s).await;
            s.done = !matches!(item, Ok(Ok(_)));
            Some((item, s))
        }
    }
}

async fn answer(s: &mut Session<'_>) -> Item {
    let rd = s.rd.as_mut().ok_or_else(|| net_err("stream closed"))?;
    if s.ctx.faults.is_blocked(s.target) {
        return Err(RPCError::Unreachable(Unreachable::new(
            &CallError::Blocked(s.target),
        )));
    }
    let raw = match tokio::time::timeout(s.wait, read_frame(rd, s.ctx.max_frame)).await {
        Err(_) => return Err(net_err(format!("no answer within {:?}", s.wait))),
        Ok(Err(e)) => return Err(net_err(e)),
        Ok(Ok(raw)) => raw,
    };
    match wire::decode::<Response>(&raw) {
        Ok(Response::Streamed(r)) => Ok(r),
        Ok(Response::Failed(m)) => Err(net_err(m)),
        Ok(other) => Err(net_err(format!("unexpected answer {other:?}"))),
        Err(e) => Err(net_err(format!("malformed answer: {e}"))),
    }
}
