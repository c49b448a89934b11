//! The `[cluster]` keys: flag > environment > file > default through the real
//! binary, the mapping to the raft crate's node config, and one-line errors
//! naming the key as given.

#[path = "ctl_support/mod.rs"]
mod support;

use ringmq_broker::cli;
use ringmq_broker::config::{self, Config, Source};
use std::process::Command;
use support::scratch;

fn resolve(args: &[&str]) -> Result<(Config, config::Sources), String> {
    let mut argv = vec!["ringmq"];
    argv.extend_from_slice(args);
    let (cli, m) = cli::parse_from(argv)?;
    config::resolve(&m, &cli.run, cli.config.as_deref()).map_err(|e| e.to_string())
}

const PEERS: &str = "1@127.0.0.1:7101,2@127.0.0.1:7102,3@127.0.0.1:7103";

#[test]
fn without_peers_a_node_is_a_cluster_of_one() {
    let (cfg, _) = resolve(&[]).unwrap();
    assert!(!cfg.clustered());
    assert!(cfg.raft_node_config().is_none());
    assert_eq!(cfg.cluster.node_id, 0);
    assert_eq!(cfg.cluster.node_down_after.0, 3000);
    // This node alone in the list: still a cluster of one (no raft thread).
    let (cfg, _) = resolve(&["--node-id", "1", "--cluster-peers", "1@127.0.0.1:7101"]).unwrap();
    assert!(!cfg.clustered());
    assert!(cfg.raft_node_config().is_none());
}

#[test]
fn peers_map_to_the_raft_node_config() {
    let (cfg, src) = resolve(&[
        "--node-id",
        "2",
        "--cluster-peers",
        PEERS,
        "--node-down-after",
        "750ms",
        "--data-dir",
        "/tmp/ringmq-n2",
    ])
    .unwrap();
    assert!(cfg.clustered());
    assert_eq!(src.source("cluster_peers"), Source::Flag);
    let n = cfg.raft_node_config().unwrap();
    assert_eq!(n.node_id, 2);
    assert_eq!(n.cluster_id, "ringmq");
    assert_eq!(
        n.listen,
        "127.0.0.1:7102".parse().unwrap(),
        "own entry by default"
    );
    assert_eq!(n.advertise.as_deref(), Some("127.0.0.1:7102"));
    assert_eq!(n.bootstrap.len(), 3);
    assert_eq!(n.bootstrap[&3], "127.0.0.1:7103");
    assert_eq!(n.node_down_after, std::time::Duration::from_millis(750));
    assert_eq!(n.data_dir, std::path::Path::new("/tmp/ringmq-n2/cluster"));
    assert!(n.tls.is_none());
    n.validate().unwrap();
    let (cfg, _) = resolve(&[
        "--node-id",
        "2",
        "--cluster-peers",
        PEERS,
        "--cluster-listen",
        "0.0.0.0:9000",
    ])
    .unwrap();
    let n = cfg.raft_node_config().unwrap();
    assert_eq!(n.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(n.advertise.as_deref(), Some("127.0.0.1:7102"));
}

#[test]
fn cluster_keys_follow_flag_env_file_default() {
    let dir = scratch("cluster-prec");
    let f = dir.join("ringmq.toml");
    std::fs::write(
        &f,
        format!(
            "[cluster]\nnode_id = 3\ncluster_peers = [{}]\ncluster_id = \"prod\"\n\
             node_down_after = \"5s\"\ncluster_claim_timeout = \"2s\"\ncluster_snapshot_every = 77\n",
            PEERS
                .split(',')
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .unwrap();
    let show = |flags: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .arg("--config")
            .arg(&f)
            .args(flags)
            .args(["config", "show"])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        toml::from_str::<Config>(&String::from_utf8_lossy(&out.stdout)).unwrap()
    };
    let file = show(&[], &[]);
    assert_eq!(file.cluster.node_id, 3, "file beats default");
    assert_eq!(file.cluster.cluster_peers.len(), 3);
    assert_eq!(file.cluster.cluster_id, "prod");
    assert_eq!(file.cluster.node_down_after.0, 5000);
    assert_eq!(file.cluster.cluster_claim_timeout.0, 2000);
    assert_eq!(file.cluster.cluster_snapshot_every, 77);
    assert_eq!(file.cluster.cluster_keep_logs, 1000, "default");
    let env = [
        ("RINGMQ_NODE_ID", "1"),
        ("RINGMQ_CLUSTER_ID", "staging"),
        ("RINGMQ_NODE_DOWN_AFTER", "1s"),
        ("RINGMQ_CLUSTER_PEERS", "1@127.0.0.1:8101,2@127.0.0.1:8102"),
    ];
    let by_env = show(&[], &env);
    assert_eq!(by_env.cluster.node_id, 1, "env beats file");
    assert_eq!(by_env.cluster.cluster_id, "staging");
    assert_eq!(by_env.cluster.node_down_after.0, 1000);
    assert_eq!(by_env.cluster.cluster_peers[1].addr, "127.0.0.1:8102");
    assert_eq!(by_env.cluster.cluster_claim_timeout.0, 2000, "file still");
    let by_flag = show(&["--node-id", "2", "--node-down-after", "400ms"], &env);
    assert_eq!(by_flag.cluster.node_id, 2, "flag beats env");
    assert_eq!(by_flag.cluster.node_down_after.0, 400);
    assert_eq!(by_flag.cluster.cluster_id, "staging");
}

#[test]
fn bad_cluster_values_are_one_line_naming_the_key() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--cluster-peers", PEERS],
            "--node-id 0: cluster_peers is set: give this node's id (1 or more)",
        ),
        (
            &["--node-id", "4", "--cluster-peers", PEERS],
            "must include this node (node_id 4)",
        ),
        (
            &[
                "--node-id",
                "1",
                "--cluster-peers",
                "1@127.0.0.1:1,1@127.0.0.1:2",
            ],
            "node id 1 listed twice",
        ),
        (
            &[
                "--node-id",
                "1",
                "--cluster-peers",
                PEERS,
                "--node-down-after",
                "10ms",
            ],
            "--node-down-after 10ms: must be at least 200ms",
        ),
        (
            &["--cluster-claim-timeout", "2m"],
            "--cluster-claim-timeout 120s: must be in 100ms..=60s",
        ),
        (
            &["--cluster-tls-cert", "/nonexistent/c.pem"],
            "cluster TLS needs cluster_tls_cert, cluster_tls_key and cluster_tls_ca together",
        ),
        (
            &["--cluster-id", ""],
            "--cluster-id : must be 1 to 256 bytes",
        ),
    ];
    for (args, want) in cases {
        let err = resolve(args).unwrap_err();
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // Bad syntax is refused by the parser, naming the flag.
    let err = resolve(&["--cluster-peers", "one@host"]).unwrap_err();
    assert!(err.contains("--cluster-peers"), "{err}");
    let err = resolve(&["--node-down-after", "soon"]).unwrap_err();
    assert!(err.contains("--node-down-after"), "{err}");
    // The environment is named as such.
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["config", "show"])
        .env("RINGMQ_NODE_DOWN_AFTER", "50ms")
        .env("RINGMQ_NODE_ID", "1")
        .env("RINGMQ_CLUSTER_PEERS", PEERS)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: RINGMQ_NODE_DOWN_AFTER=50ms: must be at least 200ms"
    );
}
