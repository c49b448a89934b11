//! The command line: `ringmq [FLAGS]` runs the broker, `ringmq config check
//! FILE` validates a file, `ringmq ctl ...` talks to a running broker.
//!
//! Every run flag also reads `RINGMQ_<FLAG_NAME>` (added here, from the flag's
//! id, so names cannot drift). Errors are printed as one line.

use crate::config::{self, Config};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

/// ringmq: a thread-per-core MQTT broker (3.1, 3.1.1, 5.0).
///
/// Every flag is also RINGMQ_<FLAG_NAME> in the environment and a key of the
/// TOML file given with --config (see ringmq.example.toml).
/// Precedence: flag > environment > file > default.
#[derive(Debug, Parser)]
#[command(name = "ringmq", version, max_term_width = 100)]
pub struct Cli {
    /// TOML configuration file
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub run: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands (none: run the broker).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configuration files
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Talk to a running broker over its admin socket
    Ctl(CtlArgs),
    /// Add, update or delete a user of a password file (like mosquitto_passwd)
    Passwd(crate::passwd::PasswdArgs),
}

/// `ringmq config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (unknown keys, bad values, CPUs present)
    Check {
        /// The TOML file
        file: PathBuf,
    },
    /// Print the effective configuration (flags, environment, file) as TOML
    Show,
    /// Print every key with its default and help (ringmq.example.toml)
    Example,
}

/// `ringmq ctl [--admin-socket PATH | --data-dir DIR] COMMAND`
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Admin socket (default: DATA_DIR/ringmq.sock)
    #[arg(long, value_name = "PATH", env = "RINGMQ_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// The broker's data directory, to find its admin socket
    #[arg(long, value_name = "DIR", env = "RINGMQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print raw JSON responses (`cluster status --json`: the status object itself)
    // Its own id: `ctl raw JSON`'s positional is also called `json`.
    #[arg(long = "json", id = "json_output", global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The admin commands (see docs/admin-protocol.md).
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Version, uptime, shards, connections, message rates
    Status,
    /// Connected clients
    Clients {
        /// Only this shard
        #[arg(long)]
        shard: Option<usize>,
        /// Only client ids matching this pattern (`*` and `?` wildcards)
        #[arg(long = "match", value_name = "PATTERN")]
        pattern: Option<String>,
        /// In a cluster: only this node (default: every node, each row naming its node)
        #[arg(long)]
        node: Option<u64>,
        /// Rows per node at most
        #[arg(long)]
        limit: Option<u32>,
        /// How long to wait for the other nodes' answers, in milliseconds
        #[arg(long, default_value_t = 2000)]
        wait_ms: u64,
    },
    /// One client
    #[command(subcommand)]
    Client(ClientCommand),
    /// Every session, connected or not
    Sessions,
    /// Subscriptions
    Subscriptions {
        /// Only subscriptions matching this topic name
        #[arg(long)]
        topic: Option<String>,
    },
    /// Retained messages
    #[command(subcommand)]
    Retained(RetainedCommand),
    /// Counters of every shard (JSON)
    Metrics,
    /// Change the log filter live (error, warn, info, debug, trace or directives)
    LogLevel {
        /// The new filter
        level: String,
    },
    /// Stop accepting connections and shed existing ones gradually
    Drain,
    /// Graceful shutdown
    Shutdown,
    /// Access control list
    #[command(subcommand)]
    Acl(AclCommand),
    /// Bans by client id, username or address
    #[command(subcommand)]
    Ban(BanCommand),
    /// Re-read the ACL file, password file and certificates (as SIGHUP does)
    Reload,
    /// The cluster: status and membership changes
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Send one raw JSON request line
    Raw {
        /// The request, e.g. '{"cmd":"status"}'
        json: String,
    },
}

/// `ringmq ctl cluster ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Nodes, roles, leader, term, log indexes, lag and liveness
    Status,
    /// The owner node and epoch of a client's session, as this node has applied them
    Owner {
        /// Client identifier
        client_id: String,
    },
    /// Add a node: a learner first (it catches up), then a voter (ask the leader)
    AddNode {
        /// Its node id
        id: u64,
        /// Its cluster address, HOST:PORT
        addr: String,
    },
    /// Remove a node (refused when the voters left would lose quorum; ask the leader)
    RemoveNode {
        /// Its node id
        id: u64,
    },
    /// Hand leadership to another voter (ask the leader)
    TransferLeader {
        /// The new leader's node id
        id: u64,
    },
}

/// `ringmq ctl client ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Show one client's session
    Show {
        /// Client identifier
        id: String,
    },
    /// Disconnect a client (v5: DISCONNECT 0x98 Administrative action)
    Kick {
        /// Client identifier
        id: String,
    },
}

/// `ringmq ctl acl ...`
#[derive(Debug, Clone, Subcommand)]
pub enum AclCommand {
    /// The decision for one client, topic and access, and the rule that made it
    Check {
        /// Username (`-`: an anonymous client)
        user: String,
        /// Client id
        client_id: String,
        /// Topic name
        topic: String,
        /// read or write
        #[arg(value_parser = ["read", "write"])]
        access: String,
    },
}

/// `ringmq ctl ban ...`
#[derive(Debug, Clone, Subcommand)]
pub enum BanCommand {
    /// Ban a client id, username or address (CIDR, v4 or v6)
    Add {
        /// client-id, username or address
        #[arg(value_parser = ["client-id", "username", "address"])]
        kind: String,
        /// The client id, username or address block (e.g. 10.0.0.0/8)
        value: String,
        /// How long: seconds, or with a suffix s, m, h, d (absent: until removed)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<u64>,
    },
    /// Lift a ban
    Remove {
        /// client-id, username or address
        #[arg(value_parser = ["client-id", "username", "address"])]
        kind: String,
        /// As given to `ban add`
        value: String,
    },
    /// Bans in force
    List,
}

/// `90`, `90s`, `15m`, `2h`, `7d` as seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let (n, mul) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("\"{s}\" is not a duration (e.g. 90, 15m, 2h, 7d)"))
}

/// `ringmq ctl retained ...`
#[derive(Debug, Clone, Subcommand)]
pub enum RetainedCommand {
    /// List retained messages
    List {
        /// Topic filter (default `#`)
        #[arg(long, default_value = "#")]
        filter: String,
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Delete the retained message of a topic
    Delete {
        /// Topic name
        topic: String,
    },
}

/// Ids of run flags that get no environment variable.
const NO_ENV: &[&str] = &["help", "version"];

/// The clap command with `RINGMQ_<FLAG>` variables attached to every run flag.
pub fn command() -> clap::Command {
    Cli::command().mut_args(|a| {
        let id = a.get_id().as_str();
        if NO_ENV.contains(&id) {
            return a;
        }
        let name: &'static str = Box::leak(config::env_name(id).into_boxed_str());
        a.env(name)
    })
}

/// Parses `args` (the first is the program name). On a usage error returns
/// its one-line message; `--help`/`--version` print and exit.
pub fn parse_from<I, T>(args: I) -> Result<(Cli, clap::ArgMatches), String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(e.kind(), DisplayHelp | DisplayVersion) {
                e.exit();
            }
            if e.kind() == DisplayHelpOnMissingArgumentOrSubcommand {
                e.exit();
            }
            return Err(first_line(&e.to_string()));
        }
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| first_line(&e.to_string()))?;
    Ok((cli, matches))
}

fn first_line(s: &str) -> String {
    let l = s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s);
    l.trim_start_matches("error: ").to_string()
}
