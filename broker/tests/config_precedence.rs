//! Precedence flag > environment > file > default, through the real parser
//! and (for the environment) the real binary's `ringmq config show`.

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

const FILE: &str = r#"
[listeners]
listen = ["mqtt://127.0.0.1:2000", "mqtt://127.0.0.1:2001"]
backlog = 100

[limits]
max_packet_size = 5000
receive_maximum = 10

[logging]
log_format = "json"
"#;

/// Whether this host can bind the IPv6 loopback (the default listener list drops ::1 otherwise).
fn has_v6_loopback() -> bool {
    std::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)).is_ok()
}

#[test]
fn no_flags_no_file_gives_the_defaults() {
    let (cfg, src) = resolve(&[]).unwrap();
    // Mosquitto 2.0's rule: no listener named, so loopback only and anonymous allowed.
    let mut expected = Config::default();
    expected.auth.allow_anonymous = true;
    if !has_v6_loopback() {
        expected.listeners.listen.truncate(1);
    }
    assert_eq!(cfg, expected);
    assert_eq!(src.source("cores"), Source::Default);
    assert_eq!(cfg.listeners.listen[0].to_string(), "mqtt://127.0.0.1:1883");
    if has_v6_loopback() {
        assert_eq!(cfg.listeners.listen[1].to_string(), "mqtt://[::1]:1883");
    }
    assert_eq!(
        cfg.admin_socket_path(),
        std::path::Path::new("./data/ringmq.sock")
    );
}

#[test]
fn file_overrides_defaults_and_flags_override_the_file() {
    let dir = scratch("prec");
    let f = dir.join("ringmq.toml");
    std::fs::write(&f, FILE).unwrap();
    let f = f.to_str().unwrap();
    let (cfg, src) = resolve(&[
        "--config",
        f,
        "--backlog",
        "7",
        "--listen",
        "mqtt://127.0.0.1:3000",
    ])
    .unwrap();
    assert_eq!(cfg.listeners.backlog, 7, "flag beats file");
    assert_eq!(src.source("backlog"), Source::Flag);
    assert_eq!(
        cfg.listeners.listen.len(),
        1,
        "a listen flag replaces the file's list"
    );
    assert_eq!(cfg.limits.max_packet_size, 5000, "file beats default");
    assert_eq!(src.source("max_packet_size"), Source::File);
    assert_eq!(cfg.limits.receive_maximum, 10);
    assert_eq!(cfg.logging.log_format.to_string(), "json");
    assert_eq!(
        cfg.limits.max_topic_levels,
        Config::default().limits.max_topic_levels
    );
}

#[test]
fn listen_is_repeatable_and_maps_to_the_shard_config() {
    let (cfg, _) = resolve(&[
        "--listen",
        "mqtt://127.0.0.1:1",
        "--listen",
        "127.0.0.1:2",
        "--durability",
        "batch",
        "--batch-interval-ms",
        "25",
        "--cpu-list",
        "0",
        "--cores",
        "1",
    ])
    .unwrap();
    let sc = cfg.to_shard_config();
    assert_eq!(
        sc.listen,
        vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap()
        ]
    );
    assert!(matches!(
        sc.durability,
        ringmq_shard::config::Durability::Batch { interval_ms: 25 }
    ));
    assert_eq!(sc.cpu_list, Some(vec![0]));
    assert_eq!(sc.cores, 1);
}

/// The defaults handed to the core are the core's own defaults, except
/// where the operator's default deliberately differs (durability: sync).
#[test]
fn default_config_maps_to_the_core_defaults() {
    let mine = Config::default().to_shard_config();
    let core = ringmq_shard::config::ShardConfig::default();
    let strip = |s: String| {
        s.split(", ")
            .filter(|f| !f.starts_with("durability:"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    assert_eq!(strip(format!("{mine:?}")), strip(format!("{core:?}")));
}

#[test]
fn environment_sits_between_flag_and_file() {
    let dir = scratch("env");
    let f = dir.join("ringmq.toml");
    std::fs::write(&f, FILE).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args([
            "--config",
            f.to_str().unwrap(),
            "--receive-maximum",
            "3",
            "config",
            "show",
        ])
        .env("RINGMQ_BACKLOG", "55") // env beats file (100)
        .env("RINGMQ_RECEIVE_MAXIMUM", "4") // flag (3) beats env
        .env("RINGMQ_MAX_TOPIC_LEVELS", "9") // env beats default
        .env("RINGMQ_LISTEN", "mqtt://127.0.0.1:1,mqtt://127.0.0.1:2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Config = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(shown.listeners.backlog, 55);
    assert_eq!(shown.limits.receive_maximum, 3);
    assert_eq!(shown.limits.max_topic_levels, 9);
    assert_eq!(shown.limits.max_packet_size, 5000);
    assert_eq!(shown.listeners.listen.len(), 2);
}

/// Secure defaults: anonymous clients only while no listener is named
/// anywhere; `allow_anonymous` given anywhere is obeyed as given.
#[test]
fn naming_a_listener_anywhere_refuses_anonymous_clients() {
    let dir = scratch("posture");
    let listen_file = dir.join("listen.toml");
    std::fs::write(
        &listen_file,
        "[listeners]\nlisten = [\"mqtt://127.0.0.1:2000\"]\n",
    )
    .unwrap();
    let lf = listen_file.to_str().unwrap();
    let anon = |args: &[&str]| resolve(args).unwrap().0.auth.allow_anonymous;
    assert!(anon(&[]), "no listener named: anonymous allowed");
    assert!(!anon(&["--listen", "mqtt://127.0.0.1:1"]), "flag names one");
    assert!(!anon(&["--config", lf]), "file names one");
    assert!(anon(&[
        "--listen",
        "mqtt://127.0.0.1:1",
        "--allow-anonymous",
        "true"
    ]));
    assert!(
        !anon(&["--allow-anonymous", "false"]),
        "explicit false on the default listeners"
    );
    // The environment names one too (through the binary: clap reads it).
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["config", "show"])
        .env("RINGMQ_LISTEN", "mqtt://127.0.0.1:1")
        .output()
        .unwrap();
    let shown: Config = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert!(!shown.auth.allow_anonymous);
}

/// flag > environment > file > default for `allow_anonymous` and `password_file`.
#[test]
fn auth_keys_follow_precedence() {
    let dir = scratch("authprec");
    let pw = |name: &str| {
        let p = dir.join(name);
        std::fs::write(&p, "u:$6$IFkyTixPbdfbFvE3$0WyRs+Ees1fRdLmcUm4ZGtOnmSXlRrvhz3oL2Pc9z2pLj/FIK3D3seXKQxdXfT7BzJUP1SgU2NCLV4H5uW7KbQ==\n").unwrap();
        p.to_str().unwrap().to_string()
    };
    let (file_pw, env_pw, flag_pw) = (pw("file.pw"), pw("env.pw"), pw("flag.pw"));
    let f = dir.join("ringmq.toml");
    std::fs::write(
        &f,
        format!("[listeners]\nlisten = [\"mqtt://127.0.0.1:2000\"]\n[auth]\nallow_anonymous = true\npassword_file = \"{file_pw}\"\n"),
    )
    .unwrap();
    let f = f.to_str().unwrap();
    // File over default.
    let (cfg, src) = resolve(&["--config", f]).unwrap();
    assert!(cfg.auth.allow_anonymous);
    assert_eq!(cfg.auth.password_file.to_string(), file_pw);
    assert_eq!(src.source("password_file"), Source::File);
    // Flag over file.
    let (cfg, _) = resolve(&[
        "--config",
        f,
        "--allow-anonymous",
        "false",
        "--password-file",
        &flag_pw,
    ])
    .unwrap();
    assert!(!cfg.auth.allow_anonymous);
    assert_eq!(cfg.auth.password_file.to_string(), flag_pw);
    assert_eq!(
        cfg.to_shard_config().authn.password_file.as_deref(),
        Some(std::path::Path::new(&flag_pw))
    );
    // Environment over file, flag over environment (the real binary).
    let show = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(["--config", f])
            .args(extra)
            .args(["config", "show"])
            .env("RINGMQ_ALLOW_ANONYMOUS", "false")
            .env("RINGMQ_PASSWORD_FILE", &env_pw)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        toml::from_str::<Config>(&String::from_utf8_lossy(&out.stdout)).unwrap()
    };
    let shown = show(&[]);
    assert!(!shown.auth.allow_anonymous);
    assert_eq!(shown.auth.password_file.to_string(), env_pw);
    let shown = show(&["--allow-anonymous", "true", "--password-file", &flag_pw]);
    assert!(shown.auth.allow_anonymous);
    assert_eq!(shown.auth.password_file.to_string(), flag_pw);
}

/// Every `[authz]` key: flag > environment > file > default.
#[test]
fn authz_keys_follow_flag_env_file_default() {
    let dir = scratch("authz");
    let acl = dir.join("acl");
    let acl2 = dir.join("acl2");
    std::fs::write(&acl, "topic read a/#\n").unwrap();
    std::fs::write(&acl2, "topic read b/#\n").unwrap();
    let f = dir.join("ringmq.toml");
    std::fs::write(
        &f,
        format!(
            "[authz]\nacl_file = \"{}\"\nauth_fail_max = 3\nauth_fail_window_secs = 30\nauth_fail_ban_secs = 40\n",
            acl.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args([
            "--config",
            f.to_str().unwrap(),
            "--auth-fail-max",
            "5",
            "config",
            "show",
        ])
        .env("RINGMQ_AUTH_FAIL_MAX", "4") // flag (5) beats env
        .env("RINGMQ_AUTH_FAIL_WINDOW_SECS", "7") // env beats file (30)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Config = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(shown.authz.auth_fail_max, 5);
    assert_eq!(shown.authz.auth_fail_window_secs, 7);
    assert_eq!(shown.authz.auth_fail_ban_secs, 40, "file beats default");
    assert_eq!(shown.authz.acl_file.0.as_deref(), Some(acl.as_path()));
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--config", f.to_str().unwrap(), "config", "show"])
        .env("RINGMQ_ACL_FILE", &acl2) // env beats file
        .env("RINGMQ_AUTH_FAIL_BAN_SECS", "9")
        .output()
        .unwrap();
    let shown: Config = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(shown.authz.acl_file.0.as_deref(), Some(acl2.as_path()));
    assert_eq!(shown.authz.auth_fail_ban_secs, 9);
    let (cfg, src) = resolve(&[
        "--config",
        f.to_str().unwrap(),
        "--acl-file",
        acl2.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(cfg.authz.acl_file.0.as_deref(), Some(acl2.as_path()));
    assert_eq!(src.source("acl_file"), Source::Flag);
    assert_eq!(src.source("auth_fail_window_secs"), Source::File);
    let (cfg, _) = resolve(&[]).unwrap();
    assert_eq!(cfg.authz.acl_file.0, None);
    assert_eq!(cfg.authz.auth_fail_max, 10);
    let core = cfg.to_shard_config();
    assert_eq!(core.access.auto_ban.max_failures, 10);
}

/// Issue 17's keys (`max_client_id_length`, `max_session_expiry`, `packet_timeout_ms`,
/// `partial_packet_budget`): flag > env > file > default,
/// through the real binary, handed to the core, and out-of-range values refused in one line
/// naming the key as given.
#[test]
fn hostile_client_keys_follow_precedence_and_are_validated() {
    let dir = scratch("hostile");
    let f = dir.join("ringmq.toml");
    std::fs::write(
        &f,
        "[limits]\nmax_client_id_length = 40\npacket_timeout_ms = 7000\n\
         partial_packet_budget = 2000000\n[sessions]\nmax_session_expiry = 3600\n",
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
    assert_eq!(file.limits.max_client_id_length, 40, "file beats default");
    assert_eq!(file.sessions.max_session_expiry, 3600);
    assert_eq!(file.limits.packet_timeout_ms, 7000);
    assert_eq!(file.limits.partial_packet_budget, 2_000_000);
    let env = [
        ("RINGMQ_MAX_CLIENT_ID_LENGTH", "50"),
        ("RINGMQ_MAX_SESSION_EXPIRY", "60"),
        ("RINGMQ_PACKET_TIMEOUT_MS", "8000"),
        ("RINGMQ_PARTIAL_PACKET_BUDGET", "3000000"),
    ];
    let by_env = show(&[], &env);
    assert_eq!(by_env.limits.max_client_id_length, 50, "env beats file");
    assert_eq!(by_env.sessions.max_session_expiry, 60);
    assert_eq!(by_env.limits.packet_timeout_ms, 8000);
    assert_eq!(by_env.limits.partial_packet_budget, 3_000_000);
    let by_flag = show(
        &[
            "--max-client-id-length",
            "64",
            "--max-session-expiry",
            "5",
            "--packet-timeout-ms",
            "9000",
            "--partial-packet-budget",
            "4000000",
        ],
        &env,
    );
    assert_eq!(by_flag.limits.max_client_id_length, 64, "flag beats env");
    assert_eq!(by_flag.sessions.max_session_expiry, 5);
    assert_eq!(by_flag.limits.packet_timeout_ms, 9000);
    assert_eq!(by_flag.limits.partial_packet_budget, 4_000_000);
    let sc = by_flag.to_shard_config();
    assert_eq!((sc.max_client_id_length, sc.max_session_expiry), (64, 5));
    assert_eq!(sc.packet_timeout, std::time::Duration::from_secs(9));
    assert_eq!(sc.partial_packet_budget, 4_000_000);
    let d = Config::default();
    assert_eq!(d.limits.max_client_id_length, 128, "a production default");
    assert_eq!(d.sessions.max_session_expiry, 604_800, "7 days");

    // [MQTT-3.1.3-5]: 23 bytes must always be allowed.
    let err = resolve(&["--max-client-id-length", "22"]).unwrap_err();
    assert_eq!(
        err, "--max-client-id-length 22: must be in 23..=65535",
        "one line naming the flag"
    );
    let err = resolve(&["--packet-timeout-ms", "0"]).unwrap_err();
    assert_eq!(err, "--packet-timeout-ms 0: must be at least 1");
    let err = resolve(&["--partial-packet-budget", "1000"]).unwrap_err();
    assert_eq!(
        err,
        "--partial-packet-budget 1000: must be at least max_packet_size (1048576)"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["config", "show"])
        .env("RINGMQ_MAX_CLIENT_ID_LENGTH", "70000")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: RINGMQ_MAX_CLIENT_ID_LENGTH=70000: must be in 23..=65535"
    );
}

/// `allow_anonymous=` in a listener's URL (flag, environment or file, like the rest of the URL)
/// reaches that listener only and overrides `auth.allow_anonymous` both ways; a bad value is a
/// one-line error naming the listener.
#[test]
fn allow_anonymous_per_listener_rides_on_the_listener_url() {
    let dir = scratch("anonlistener");
    let file = dir.join("l.toml");
    std::fs::write(
        &file,
        "[listeners]\nlisten = [\"mqtt://127.0.0.1:2000?allow_anonymous=true\", \
         \"mqtt://127.0.0.1:2001\"]\n[auth]\nallow_anonymous = false\n",
    )
    .unwrap();
    let per_listener = |cfg: &Config| -> Vec<Option<bool>> {
        cfg.to_shard_config()
            .listen
            .iter()
            .map(|l| l.allow_anonymous)
            .collect()
    };
    let (cfg, _) = resolve(&["--config", file.to_str().unwrap()]).unwrap();
    assert!(!cfg.auth.allow_anonymous);
    assert_eq!(per_listener(&cfg), [Some(true), None]);
    // The flag replaces the file's list, options included.
    let (cfg, _) = resolve(&[
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "mqtt://127.0.0.1:2002?allow_anonymous=false",
        "--allow-anonymous",
        "true",
    ])
    .unwrap();
    assert!(cfg.auth.allow_anonymous);
    assert_eq!(per_listener(&cfg), [Some(false)]);
    // The environment, through the binary.
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["config", "show"])
        .env("RINGMQ_LISTEN", "mqtt://127.0.0.1:1?allow_anonymous=true")
        .output()
        .unwrap();
    let shown: Config = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert!(!shown.auth.allow_anonymous);
    assert_eq!(per_listener(&shown), [Some(true)]);
    let err = resolve(&["--listen", "mqtt://127.0.0.1:1?allow_anonymous=maybe"]).unwrap_err();
    assert!(
        err.contains("allow_anonymous=maybe") && !err.contains('\n'),
        "{err}"
    );
}
