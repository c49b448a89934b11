//! What the control-plane thread does for callers: writes (forwarded to the
//! leader when this node is not it), reads, and the answers to forwarded
//! requests from other nodes.

use openraft::async_runtime::WatchReceiver as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::ReadPolicy;

use crate::command::{Command, CommandResult, Versioned};
use crate::error::Error;
use crate::net::client::{CallError, Conn};
use crate::net::wire::{Request, Response};
use crate::net::NetCtx;
use crate::node::NodeConfig;
use crate::payload::Payload;
use crate::store::{sm, Store};
use crate::types::{NodeId, Raft};

/// Connections kept per leader for forwarded writes (batches in flight overlap).
const FORWARD_CONNS: usize = 4;

/// The node's shared state on the control-plane thread.
pub struct Core {
    pub id: NodeId,
    pub raft: Raft,
    pub store: Arc<Store>,
    pub net: Arc<NetCtx>,
    pub cfg: NodeConfig,
    forward: Mutex<HashMap<NodeId, Vec<Arc<tokio::sync::Mutex<Conn>>>>>,
    next_conn: AtomicUsize,
}

/// How one attempt at a write ended.
enum Attempt {
    Done(Result<CommandResult, Error>),
    /// Not accepted anywhere yet: safe to try again (leader given if known).
    Retry(Option<NodeId>),
}

impl Core {
    pub fn new(
        id: NodeId,
        raft: Raft,
        store: Arc<Store>,
        net: Arc<NetCtx>,
        cfg: NodeConfig,
    ) -> Self {
        Core {
            id,
            raft,
            store,
            net,
            cfg,
            forward: Mutex::new(HashMap::new()),
            next_conn: AtomicUsize::new(0),
        }
    }

    /// Commits `cmd` on this node if it leads, else on the leader; waits at
    /// most the configured write timeout. Retries only when nothing was
    /// appended (no leader yet, or a leader that refused before appending).
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, Error> {
        let started = Instant::now();
        let ops = cmd.ops.len() as u64;
        let res = self.write_inner(Payload::new(cmd)).await;
        let c = &self.store.counters;
        match &res {
            Ok(_) => {
                crate::counters::add(&c.commits, 1);
                crate::counters::add(&c.committed_ops, ops);
                crate::counters::add(&c.commit_us_total, started.elapsed().as_micros() as u64);
            }
            Err(_) => crate::counters::add(&c.write_errors, 1),
        }
        res
    }

    async fn write_inner(&self, cmd: Payload) -> Result<CommandResult, Error> {
        let deadline = Instant::now() + self.cfg.write_timeout;
        let mut leader_hint = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            let target =
                leader_hint.or_else(|| self.raft.metrics().borrow_watched().current_leader);
            let attempt = match target {
                None => Attempt::Retry(None),
                Some(l) if l == self.id => self.attempt_local(cmd.clone(), left).await,
                Some(l) => self.attempt_forward(l, cmd.clone(), left).await,
            };
            match attempt {
                Attempt::Done(res) => return res,
                Attempt::Retry(hint) => {
                    leader_hint = hint.filter(|h| Some(*h) != target);
                    if leader_hint.is_none() {
                        let pause = Duration::from_millis(10)
                            .min(deadline.saturating_duration_since(Instant::now()));
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }

    async fn attempt_local(&self, cmd: Payload, left: Duration) -> Attempt {
        match tokio::time::timeout(left, self.raft.client_write(cmd)).await {
            Err(_) => Attempt::Done(Err(Error::Timeout)),
            Ok(Ok(resp)) => Attempt::Done(Ok(resp.data)),
            Ok(Err(e)) => match map_write_err(e) {
                Err(Error::NotLeader { leader }) => Attempt::Retry(leader),
                other => Attempt::Done(other),
            },
        }
    }

    async fn attempt_forward(&self, leader: NodeId, cmd: Payload, left: Duration) -> Attempt {
        let Some(conn) = self.forward_conn(leader) else {
            return Attempt::Retry(None);
        };
        let mut conn = conn.lock().await;
        match conn.call(&Request::Forward(cmd), left).await {
            Ok(Response::Forward(r)) => Attempt::Done(Ok(r)),
            Ok(Response::NotLeader { leader }) => Attempt::Retry(leader),
            Ok(Response::Indeterminate) => Attempt::Done(Err(Error::Indeterminate)),
            Ok(Response::Failed(m)) => Attempt::Done(Err(Error::Raft(m))),
            Ok(other) => Attempt::Done(Err(Error::Network(format!("unexpected answer {other:?}")))),
            // Never sent: safe to try again (with a fresh address next time,
            // in case the leader moved).
            Err(CallError::Blocked(_) | CallError::Connect { .. } | CallError::Refused { .. }) => {
                drop(conn);
                self.forget_leader(leader);
                Attempt::Retry(None)
            }
            Err(CallError::Timeout { .. }) => Attempt::Done(Err(Error::Timeout)),
            Err(CallError::Io { .. }) => Attempt::Done(Err(Error::Indeterminate)),
        }
    }

    fn forward_conn(&self, leader: NodeId) -> Option<Arc<tokio::sync::Mutex<Conn>>> {
        let addr = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config
                .membership()
                .get_node(&leader)?
                .addr
                .clone()
        };
        let mut map = self.forward.lock().unwrap_or_else(|e| e.into_inner());
        let pool = map.entry(leader).or_insert_with(|| {
            (0..FORWARD_CONNS)
                .map(|_| {
                    Arc::new(tokio::sync::Mutex::new(Conn::new(
                        self.net.clone(),
                        leader,
                        addr.clone(),
                    )))
                })
                .collect()
        });
        let i = self.next_conn.fetch_add(1, Ordering::Relaxed) % pool.len();
        Some(pool[i].clone())
    }

    fn forget_leader(&self, leader: NodeId) {
        self.forward
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&leader);
    }

    /// A forwarded write: commit here if leading, never forward again.
    pub async fn answer_forward(&self, cmd: Payload) -> Response {
        match tokio::time::timeout(self.cfg.write_timeout, self.raft.client_write(cmd)).await {
            Err(_) => Response::Failed("timed out on the leader".into()),
            Ok(Ok(resp)) => Response::Forward(resp.data),
            Ok(Err(e)) => match map_write_err(e) {
                Ok(r) => Response::Forward(r),
                Err(Error::NotLeader { leader }) => Response::NotLeader { leader },
                Err(Error::Indeterminate) => Response::Indeterminate,
                Err(e) => Response::Failed(e.to_string()),
            },
        }
    }

    /// A linearizable read served by this node as leader (read index: the
    /// leader confirms it still leads with a quorum round, then waits until
    /// it has applied up to its commit index, then reads locally).
    pub async fn read_leader(&self, key: &[u8]) -> Result<Option<Versioned>, Error> {
        let fut = self.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        match tokio::time::timeout(self.cfg.write_timeout, fut).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(Error::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(Error::Raft(e.to_string())),
            Ok(Err(RaftError::Fatal(_))) => Err(Error::Stopped),
            Ok(Ok(_)) => {
                sm::read_local(&self.store, key).map_err(|e| Error::Storage(e.to_string()))
            }
        }
    }

    /// A linearizable read from any node: served by the leader.
    pub async fn read_linearizable(&self, key: Vec<u8>) -> Result<Option<Versioned>, Error> {
        let deadline = Instant::now() + self.cfg.write_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            let leader = self.raft.metrics().borrow_watched().current_leader;
            let res = match leader {
                Some(l) if l == self.id => self.read_leader(&key).await,
                Some(l) => match self.forward_conn(l) {
                    None => Err(Error::NoLeader),
                    Some(conn) => match conn
                        .lock()
                        .await
                        .call(&Request::Read(key.clone()), left)
                        .await
                    {
                        Ok(Response::Read(v)) => Ok(v),
                        Ok(Response::NotLeader { leader }) => Err(Error::NotLeader { leader }),
                        Ok(Response::Failed(m)) => Err(Error::Raft(m)),
                        Ok(other) => Err(Error::Network(format!("unexpected answer {other:?}"))),
                        Err(CallError::Timeout { .. }) => Err(Error::Timeout),
                        Err(e) => Err(Error::Network(e.to_string())),
                    },
                },
                None => Err(Error::NoLeader),
            };
            match res {
                Err(Error::NoLeader | Error::NotLeader { .. } | Error::Network(_)) => {
                    let pause = Duration::from_millis(10)
                        .min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// A forwarded linearizable read.
    pub async fn answer_read(&self, key: Vec<u8>) -> Response {
        match self.read_leader(&key).await {
            Ok(v) => Response::Read(v),
            Err(Error::NotLeader { leader }) => Response::NotLeader { leader },
            Err(e) => Response::Failed(e.to_string()),
        }
    }
}

/// openraft's write errors as ours.
pub(crate) fn map_write_err(
    e: RaftError<crate::types::TypeConfig, ClientWriteError<crate::types::TypeConfig>>,
) -> Result<CommandResult, Error> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Err(Error::NotLeader {
            leader: f.leader_id,
        }),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => Err(Error::Indeterminate),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Err(Error::Membership(e.to_string()))
        }
        RaftError::APIError(e) => Err(Error::Raft(e.to_string())),
        RaftError::Fatal(_) => Err(Error::Stopped),
    }
}
