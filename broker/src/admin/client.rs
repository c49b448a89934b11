//! `ringmq ctl`: sends one request to the admin socket and prints the answer
//! (a table or `key value` lines; `--json` prints the response line as is).
//!
//! Exit status: 0 on `ok`, 1 when the broker answered with an error, 2 when
//! the socket cannot be reached.

use super::protocol::{Request, Response};
use crate::cli::{
    AclCommand, BanCommand, ClientCommand, ClusterCommand, CtlArgs, CtlCommand, RetainedCommand,
};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `ctl` waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The request a `ctl` command sends.
pub fn request_for(cmd: &CtlCommand) -> Result<serde_json::Value, String> {
    let req = match cmd.clone() {
        CtlCommand::Status => Request::Status,
        CtlCommand::Clients {
            shard,
            pattern,
            node,
            limit,
            wait_ms,
        } => Request::Clients {
            shard,
            pattern,
            node,
            limit,
            wait_ms: Some(wait_ms),
        },
        CtlCommand::Client(ClientCommand::Show { id }) => Request::ClientShow { client_id: id },
        CtlCommand::Client(ClientCommand::Kick { id }) => Request::ClientKick { client_id: id },
        CtlCommand::Sessions => Request::Sessions,
        CtlCommand::Subscriptions { topic } => Request::Subscriptions { topic },
        CtlCommand::Retained(RetainedCommand::List { filter, limit }) => {
            Request::RetainedList { filter, limit }
        }
        CtlCommand::Retained(RetainedCommand::Delete { topic }) => {
            Request::RetainedDelete { topic }
        }
        CtlCommand::Metrics => Request::Metrics,
        CtlCommand::LogLevel { level } => Request::LogLevel { level },
        CtlCommand::Drain => Request::Drain,
        CtlCommand::Shutdown => Request::Shutdown,
        CtlCommand::Acl(AclCommand::Check {
            user,
            client_id,
            topic,
            access,
        }) => Request::AclCheck {
            username: (user != "-").then_some(user),
            client_id,
            topic,
            access,
        },
        CtlCommand::Ban(BanCommand::Add {
            kind,
            value,
            duration,
        }) => Request::BanAdd {
            kind: kind.replace('-', "_"),
            value,
            duration_secs: duration,
        },
        CtlCommand::Ban(BanCommand::Remove { kind, value }) => Request::BanRemove {
            kind: kind.replace('-', "_"),
            value,
        },
        CtlCommand::Ban(BanCommand::List) => Request::BanList,
        CtlCommand::Reload => Request::Reload,
        CtlCommand::Cluster(ClusterCommand::Status) => Request::ClusterStatus,
        CtlCommand::Cluster(ClusterCommand::Owner { client_id }) => {
            Request::ClusterOwner { client_id }
        }
        CtlCommand::Cluster(ClusterCommand::AddNode { id, addr }) => {
            Request::ClusterAddNode { node_id: id, addr }
        }
        CtlCommand::Cluster(ClusterCommand::RemoveNode { id }) => {
            Request::ClusterRemoveNode { node_id: id }
        }
        CtlCommand::Cluster(ClusterCommand::TransferLeader { id }) => {
            Request::ClusterTransferLeader { node_id: id }
        }
        CtlCommand::Raw { json } => {
            return serde_json::from_str(&json).map_err(|e| format!("raw request is not JSON: {e}"))
        }
    };
    Ok(serde_json::to_value(req).expect("requests serialize"))
}

/// Sends one request line and reads one response line.
pub fn call(socket: &Path, req: &serde_json::Value) -> io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut resp = String::new();
    BufReader::new(stream).read_line(&mut resp)?;
    if resp.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the broker closed the admin connection",
        ));
    }
    Ok(resp.trim_end().to_string())
}

/// Where `ctl` looks for the socket: `--admin-socket`, else `--data-dir`'s
/// socket, else the broker configuration's (`fallback`).
pub fn socket_path(args: &CtlArgs, fallback: PathBuf) -> PathBuf {
    if let Some(p) = &args.admin_socket {
        return p.clone();
    }
    if let Some(d) = &args.data_dir {
        return d.join(crate::config::ADMIN_SOCKET_NAME);
    }
    fallback
}

/// Runs `ringmq ctl`; returns the exit status.
pub fn run(args: &CtlArgs, fallback_socket: PathBuf) -> i32 {
    let socket = socket_path(args, fallback_socket);
    let req = match request_for(&args.command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let line = match call(&socket, &req) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: admin socket {}: {e} (is ringmq running? see --data-dir, --admin-socket)",
                socket.display()
            );
            return 2;
        }
    };
    // `cluster status --json` prints the status object itself (`leader`, `nodes`, ...).
    let bare = matches!(args.command, CtlCommand::Cluster(ClusterCommand::Status));
    if args.json && !bare {
        println!("{line}");
    }
    match serde_json::from_str::<Response>(&line) {
        Ok(Response {
            ok: true,
            result,
            nodes,
            ..
        }) => {
            let v = result.unwrap_or(serde_json::Value::Null);
            if args.json && bare {
                println!("{v}");
            } else if bare {
                print!("{}", super::format::cluster_status(&v));
            } else if !args.json {
                print!("{}", super::format::human(&v));
                if let Some(n) = &nodes {
                    print!("{}", super::format::node_answers(n));
                }
            }
            // A reload whose part failed kept that part's old material: say so in the status.
            let failed =
                |p: &serde_json::Value| p.get("ok") == Some(&serde_json::Value::Bool(false));
            match (&args.command, v.as_array()) {
                (CtlCommand::Reload, Some(parts)) if parts.iter().any(failed) => 1,
                _ => 0,
            }
        }
        Ok(Response { error: Some(e), .. }) => {
            eprintln!("error: {e}");
            1
        }
        _ => {
            eprintln!("error: unreadable answer from the broker: {line}");
            1
        }
    }
}
