//! The admin protocol: one JSON object per line each way (docs/admin-protocol.md).
//!
//! Request: `{"cmd": "client.kick", "client_id": "c1", "id": 7}` (`id` is
//! optional and echoed). Response: `{"id": 7, "ok": true, "result": ...}` or
//! `{"id": 7, "ok": false, "error": {"code": "not_found", "message": "..."}}`.

use super::backend::{AdminBackend, AdminError, ClientsScope, ErrorCode};
use crate::logging::SetLevel;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Every command, as sent on the wire (`cmd` is the tag).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd")]
pub enum Request {
    #[serde(rename = "status")]
    Status,
    #[serde(rename = "clients")]
    Clients {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<usize>,
        #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
        /// In a cluster: only this node (absent: every node).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<u64>,
        /// Rows per node at most (absent: 1,000,000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        /// How long to wait for other nodes, in ms (absent: 2000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    #[serde(rename = "client.show")]
    ClientShow { client_id: String },
    #[serde(rename = "client.kick")]
    ClientKick { client_id: String },
    #[serde(rename = "sessions")]
    Sessions,
    #[serde(rename = "subscriptions")]
    Subscriptions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    #[serde(rename = "retained.list")]
    RetainedList {
        #[serde(default = "all_topics")]
        filter: String,
        #[serde(default = "default_limit")]
        limit: usize,
    },
    #[serde(rename = "retained.delete")]
    RetainedDelete { topic: String },
    #[serde(rename = "metrics")]
    Metrics,
    #[serde(rename = "log-level")]
    LogLevel { level: String },
    #[serde(rename = "drain")]
    Drain,
    #[serde(rename = "shutdown")]
    Shutdown,
    #[serde(rename = "acl.check")]
    AclCheck {
        /// Absent: an anonymous client.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        client_id: String,
        topic: String,
        /// `read` or `write`.
        access: String,
    },
    #[serde(rename = "ban.add")]
    BanAdd {
        /// `client_id`, `username` or `address` (CIDR).
        kind: String,
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_secs: Option<u64>,
    },
    #[serde(rename = "ban.remove")]
    BanRemove { kind: String, value: String },
    #[serde(rename = "ban.list")]
    BanList,
    #[serde(rename = "reload")]
    Reload,
    #[serde(rename = "cluster.status")]
    ClusterStatus,
    #[serde(rename = "cluster.owner")]
    ClusterOwner { client_id: String },
    #[serde(rename = "cluster.add_node")]
    ClusterAddNode { node_id: u64, addr: String },
    #[serde(rename = "cluster.remove_node")]
    ClusterRemoveNode { node_id: u64 },
    #[serde(rename = "cluster.transfer_leader")]
    ClusterTransferLeader { node_id: u64 },
}

fn all_topics() -> String {
    "#".into()
}

fn default_limit() -> usize {
    100
}

/// Every `cmd` this protocol knows, for the `unknown_command` answer.
pub const COMMANDS: &[&str] = &[
    "status",
    "clients",
    "client.show",
    "client.kick",
    "sessions",
    "subscriptions",
    "retained.list",
    "retained.delete",
    "metrics",
    "log-level",
    "drain",
    "shutdown",
    "acl.check",
    "ban.add",
    "ban.remove",
    "ban.list",
    "reload",
    "cluster.status",
    "cluster.owner",
    "cluster.add_node",
    "cluster.remove_node",
    "cluster.transfer_leader",
];

/// A response line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AdminError>,
    /// Cluster-wide `clients`: how each node answered (`NodeAnswer`s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Value>,
}

/// What the admin server answers with: the backend, the live log filter and
/// the last `status` sample (for rates).
pub struct Handler {
    backend: Arc<dyn AdminBackend>,
    set_level: Option<SetLevel>,
    last: Mutex<Option<(Instant, u64, u64)>>,
    started: Instant,
}

impl Handler {
    pub fn new(backend: Arc<dyn AdminBackend>, set_level: Option<SetLevel>) -> Self {
        Handler {
            backend,
            set_level,
            last: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// Answers one request line with one response line (no newline).
    pub fn handle_line(&self, line: &str) -> String {
        let resp = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut obj)) => {
                let id = obj.remove("id");
                let result = parse_request(Value::Object(obj)).and_then(|r| self.run(r));
                match result {
                    Ok((v, nodes)) => Response {
                        id,
                        ok: true,
                        result: Some(v),
                        error: None,
                        nodes,
                    },
                    Err(e) => Response {
                        id,
                        ok: false,
                        result: None,
                        error: Some(e),
                        nodes: None,
                    },
                }
            }
            Ok(_) => error_response(ErrorCode::BadJson, "a request is a JSON object".into()),
            Err(e) => error_response(ErrorCode::BadJson, format!("not JSON: {e}")),
        };
        serde_json::to_string(&resp).expect("responses serialize")
    }

    /// Runs one command.
    pub fn execute(&self, req: Request) -> Result<Value, AdminError> {
        self.run(req).map(|(v, _)| v)
    }

    /// Runs one command: its result and, for a cluster-wide `clients`, how each node answered.
    fn run(&self, req: Request) -> Result<(Value, Option<Value>), AdminError> {
        if let Request::Clients {
            shard,
            pattern,
            node,
            limit,
            wait_ms,
        } = req
        {
            let scope = ClientsScope {
                node,
                shard,
                pattern,
                limit: limit.unwrap_or(1_000_000),
                wait: std::time::Duration::from_millis(wait_ms.unwrap_or(2000).min(60_000)),
            };
            let (rows, answers) = self.backend.clients_everywhere(&scope)?;
            let nodes = (!answers.is_empty())
                .then(|| to_value(answers))
                .transpose()?;
            return Ok((to_value(rows)?, nodes));
        }
        self.execute_one(req).map(|v| (v, None))
    }

    fn execute_one(&self, req: Request) -> Result<Value, AdminError> {
        let b = &*self.backend;
        match req {
            Request::Status => to_value(self.status()?),
            Request::Clients { .. } => self.run(req).map(|(v, _)| v),
            Request::ClientShow { client_id } => to_value(b.client_show(&client_id)?),
            Request::ClientKick { client_id } => {
                b.kick(&client_id)?;
                Ok(json!({ "kicked": client_id }))
            }
            Request::Sessions => to_value(b.sessions()?),
            Request::Subscriptions { topic } => to_value(b.subscriptions(topic.as_deref())?),
            Request::RetainedList { filter, limit } => to_value(b.retained_list(&filter, limit)?),
            Request::RetainedDelete { topic } => {
                b.retained_delete(&topic)?;
                Ok(json!({ "deleted": topic }))
            }
            Request::Metrics => to_value(b.metrics()?),
            Request::LogLevel { level } => {
                let set = self
                    .set_level
                    .as_ref()
                    .ok_or_else(|| AdminError::unavailable("this broker has no live log filter"))?;
                set(&level).map_err(|e| AdminError::new(ErrorCode::BadRequest, e))?;
                Ok(json!({ "log_level": level }))
            }
            Request::Drain => {
                b.drain()?;
                Ok(json!({ "draining": true }))
            }
            Request::Shutdown => {
                b.shutdown()?;
                Ok(json!({ "shutting_down": true }))
            }
            Request::AclCheck {
                username,
                client_id,
                topic,
                access,
            } => {
                let a = self.access()?;
                to_value(super::access::acl_check(
                    &a,
                    username.as_deref(),
                    &client_id,
                    &topic,
                    &access,
                )?)
            }
            Request::BanAdd {
                kind,
                value,
                duration_secs,
            } => to_value(super::access::ban_add(
                &*self.access()?,
                &kind,
                &value,
                duration_secs,
            )?),
            Request::BanRemove { kind, value } => {
                super::access::ban_remove(&*self.access()?, &kind, &value)?;
                Ok(json!({ "removed": { "kind": kind, "value": value } }))
            }
            Request::BanList => to_value(super::access::ban_list(&*self.access()?)),
            Request::Reload => to_value(super::access::reload_parts(b.reload()?)),
            Request::ClusterStatus => {
                let mut v = self.cluster()?.status_json().map_err(cluster_err)?;
                // The data plane's node links beside the metadata (docs/cluster-data-plane.md).
                if let Value::Object(m) = &mut v {
                    m.insert("links".into(), to_value(b.metrics()?.links)?);
                }
                Ok(v)
            }
            Request::ClusterOwner { client_id } => {
                self.cluster()?.owner_json(&client_id).map_err(cluster_err)
            }
            Request::ClusterAddNode { node_id, addr } => {
                if node_id == 0 {
                    return Err(AdminError::new(
                        ErrorCode::BadRequest,
                        "node_id must be 1 or more",
                    ));
                }
                self.cluster()?
                    .add_node(node_id, &addr)
                    .map_err(cluster_err)
            }
            Request::ClusterRemoveNode { node_id } => {
                self.cluster()?.remove_node(node_id).map_err(cluster_err)
            }
            Request::ClusterTransferLeader { node_id } => self
                .cluster()?
                .transfer_leader(node_id)
                .map_err(cluster_err),
        }
    }

    fn cluster(&self) -> Result<std::sync::Arc<crate::cluster::Cluster>, AdminError> {
        self.backend.cluster().ok_or_else(|| {
            AdminError::unavailable("this node is not in a cluster (no --cluster-peers)")
        })
    }

    fn access(&self) -> Result<std::sync::Arc<ringmq_shard::access::Shared>, AdminError> {
        self.backend
            .access()
            .ok_or_else(|| AdminError::unavailable("this broker has no access control state"))
    }

    /// `status` with message rates since the previous `status` (or start).
    fn status(&self) -> Result<super::backend::BrokerStatus, AdminError> {
        let mut st = self.backend.status()?;
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (t0, in0, out0) = last.unwrap_or((self.started, 0, 0));
        let dt = now.duration_since(t0).as_secs_f64().max(1e-3);
        st.messages_in_per_sec = st.messages_in.saturating_sub(in0) as f64 / dt;
        st.messages_out_per_sec = st.messages_out.saturating_sub(out0) as f64 / dt;
        *last = Some((now, st.messages_in, st.messages_out));
        Ok(st)
    }
}

/// A refused or failed cluster operation (the message says why).
fn cluster_err(e: String) -> AdminError {
    AdminError::unavailable(e)
}

fn to_value<T: Serialize>(v: T) -> Result<Value, AdminError> {
    serde_json::to_value(v).map_err(|e| AdminError::new(ErrorCode::Internal, e.to_string()))
}

fn error_response(code: ErrorCode, message: String) -> Response {
    Response {
        id: None,
        ok: false,
        result: None,
        error: Some(AdminError::new(code, message)),
        nodes: None,
    }
}

/// Parses a request object: an unknown `cmd` and bad arguments are told apart.
pub fn parse_request(v: Value) -> Result<Request, AdminError> {
    let cmd = match v.get("cmd") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(AdminError::new(
                ErrorCode::BadRequest,
                "\"cmd\" must be a string",
            ))
        }
        None => return Err(AdminError::new(ErrorCode::BadRequest, "missing \"cmd\"")),
    };
    if !COMMANDS.contains(&cmd.as_str()) {
        return Err(AdminError::new(
            ErrorCode::UnknownCommand,
            format!("unknown command \"{cmd}\" (known: {})", COMMANDS.join(", ")),
        ));
    }
    serde_json::from_value(v)
        .map_err(|e| AdminError::new(ErrorCode::BadRequest, format!("{cmd}: {e}")))
}
