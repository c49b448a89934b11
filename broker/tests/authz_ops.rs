//! Access control from the operator's side, against the real binary:
//! `ringmq ctl acl check`, `ctl reload` and SIGHUP (each part reported, a
//! bad file keeps the rules), `ctl ban add|remove|list` with CONNACK 0x8A /
//! 0x05 from rumqttc's point of view, ban expiry, auto-bans, metrics, and
//! logs written to a pipe without colour codes.
#[macro_use]
mod common;
#[path = "ctl_support/mod.rs"]
mod support;

use common::{check_for, Client, Opts, Proto, QUIET, WAIT};
use std::io::{Read, Write};
use std::time::Duration;
use support::OpsBroker;

const ACL: &str = "\
topic read public/#
topic deny public/secret

user alice
topic readwrite alice/#
";

fn acl_broker(name: &str, extra: &[&str]) -> (OpsBroker, std::path::PathBuf) {
    let f = support::scratch(&format!("{name}-acl")).join("acl");
    std::fs::write(&f, ACL).unwrap();
    let mut args = vec!["--acl-file", f.to_str().unwrap()];
    args.extend_from_slice(extra);
    (OpsBroker::start(name, &args), f)
}

fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| {
        l.strip_prefix(key)
            .filter(|r| r.starts_with(' '))
            .map(str::trim)
    })
}

#[test]
fn ctl_acl_check_prints_the_decision_and_the_rule() {
    let (b, f) = acl_broker("aclcheck", &[]);
    let (code, out, err) = b.ctl(&["acl", "check", "alice", "c1", "alice/x", "write"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(field(&out, "allowed"), Some("true"), "{out}");
    let rule = format!("{}:5: topic readwrite alice/#", f.display());
    assert_eq!(field(&out, "rule"), Some(rule.as_str()), "{out}");
    let (_, out, _) = b.ctl(&["acl", "check", "-", "c2", "public/secret", "read"]);
    assert_eq!(field(&out, "allowed"), Some("false"), "{out}");
    let rule = format!("{}:2: topic deny public/secret", f.display());
    assert_eq!(field(&out, "rule"), Some(rule.as_str()), "{out}");
    let (_, out, _) = b.ctl(&["acl", "check", "bob", "c3", "public/x", "read"]);
    assert_eq!(field(&out, "allowed"), Some("false"));
    assert!(
        field(&out, "reason").unwrap().contains("no rule matched"),
        "{out}"
    );
    let (code, _, err) = b.ctl(&["acl", "check", "alice", "c1", "alice/+", "read"]);
    assert_eq!(code, 1, "a filter is not a topic: {err}");
}

#[test]
fn ctl_reload_and_sighup_report_each_part_and_keep_rules_on_error() {
    let (b, f) = acl_broker("aclreload", &[]);
    let allowed = |b: &OpsBroker| {
        let (_, out, _) = b.ctl(&["acl", "check", "bob", "c", "bob/x", "write"]);
        field(&out, "allowed") == Some("true")
    };
    assert!(!allowed(&b));
    std::fs::write(&f, format!("{ACL}user bob\ntopic write bob/#\n")).unwrap();
    let (code, out, err) = b.ctl(&["--json", "reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("\"part\":\"acl\"") && out.contains("\"ok\":true"),
        "{out}"
    );
    assert!(allowed(&b), "reloaded rules in force");
    // A bad line: exit 1, file:line in the answer, previous rules kept.
    std::fs::write(&f, "user bob\ntopic wrte bob/#\n").unwrap();
    let (code, out, _) = b.ctl(&["reload"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{}:2: ", f.display())), "{out}");
    assert!(allowed(&b), "old rules kept after a failed reload");
    // SIGHUP reloads the same way.
    std::fs::write(&f, ACL).unwrap();
    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(b.child.id() as libc::pid_t, libc::SIGHUP) };
    support::check_for(Duration::from_secs(10), "SIGHUP reload", || !allowed(&b));
    assert!(b.child.id() > 0);
}

#[tokio::test]
async fn ctl_ban_add_remove_list_refuse_connects_and_expire() {
    let b = OpsBroker::start("bans", &[]);
    for proto in [Proto::V4, Proto::V5] {
        let (code, _, err) = b.ctl(&["ban", "add", "client-id", "banned-1"]);
        assert_eq!(code, 0, "{err}");
        let c = Client::try_connect(Opts::new(proto, b.addr, "banned-1")).await;
        let want = if proto == Proto::V5 { 0x8A } else { 0x05 };
        assert_eq!(c.connack.1, want, "{proto:?}: v5 0x8A Banned, 3.1.1 0x05");
        Client::connect(Opts::new(proto, b.addr, "other-1")).await;
        let (_, out, _) = b.ctl(&["ban", "list"]);
        assert!(out.contains("banned-1"), "{out}");
        let (code, _, _) = b.ctl(&["ban", "remove", "client-id", "banned-1"]);
        assert_eq!(code, 0);
        Client::connect(Opts::new(proto, b.addr, "banned-1")).await;
        let (code, _, _) = b.ctl(&["ban", "remove", "client-id", "banned-1"]);
        assert_eq!(code, 1, "removing what is not banned is an error");
    }
    // Username and address (CIDR) bans; an address ban that expires.
    b.ctl(&["ban", "add", "username", "mallory"]);
    let c = Client::try_connect(Opts::new(Proto::V5, b.addr, "m1").user("mallory")).await;
    assert_eq!(c.connack.1, 0x8A);
    let (code, _, err) = b.ctl(&["ban", "add", "address", "127.0.0.0/8", "--duration", "2s"]);
    assert_eq!(code, 0, "{err}");
    let c = Client::try_connect(Opts::new(Proto::V4, b.addr, "anyone")).await;
    assert_eq!(c.connack.1, 0x05);
    let (_, out, _) = b.ctl(&["--json", "ban", "list"]);
    assert!(
        out.contains("127.0.0.0/8") && out.contains("expires_in_secs"),
        "{out}"
    );
    let (code, _, _) = b.ctl(&["ban", "add", "address", "10.0.0.0/33"]);
    assert_eq!(code, 1, "bad CIDR refused");
    check_for(WAIT, "address ban expired", || async {
        let c = Client::try_connect(Opts::new(Proto::V4, b.addr, "anyone")).await;
        (c.connack.1 == 0).then_some(())
    })
    .await;
}

/// Repeated authentication failures from one address ban it (the password
/// check calls `Bans::auth_failed`; here the counter is driven directly).
#[tokio::test]
async fn auth_failures_from_one_address_ban_it_for_a_while() {
    for shards in [1, 2] {
        let b = common::Broker::start_with(shards, |c| {
            c.access.auto_ban = ringmq_shard::access::bans::AutoBan {
                max_failures: 3,
                window: Duration::from_secs(60),
                ban_for: Duration::from_secs(1),
            };
        });
        let bans = &b.handle().access().bans;
        let ip = "127.0.0.1".parse().unwrap();
        assert!(!bans.auth_failed(ip));
        assert!(!bans.auth_failed(ip));
        Client::connect(Opts::new(Proto::V5, b.addr, "before")).await;
        assert!(bans.auth_failed(ip), "third failure bans");
        for proto in [Proto::V4, Proto::V5] {
            let c = Client::try_connect(Opts::new(proto, b.addr, "after")).await;
            assert_eq!(c.connack.1, if proto == Proto::V5 { 0x8A } else { 0x05 });
        }
        assert_eq!(
            bans.stats
                .auto_bans
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        check_for(WAIT, "auto-ban expired", || async {
            let c = Client::try_connect(Opts::new(Proto::V4, b.addr, "later")).await;
            (c.connack.1 == 0).then_some(())
        })
        .await;
    }
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test]
async fn metrics_count_acl_denials_by_action_and_bans() {
    let (b, _) = acl_broker("aclmetrics", &["--metrics-listen", "127.0.0.1:0"]);
    let mut c = Client::connect(Opts::new(Proto::V5, b.addr, "m-1").user("alice")).await;
    assert_eq!(c.subscribe("public/#", 0).await, vec![0x87]);
    c.publish("public/x", 1, false, "x").await;
    c.wait_acked(1).await;
    b.ctl(&["ban", "add", "client-id", "nobody"]);
    let m = b.metrics.unwrap();
    support::check_for(WAIT, "denials in /metrics", || {
        let text = scrape(m);
        text.contains("ringmq_acl_denied_total{shard=\"0\",action=\"subscribe\"}")
            && text.lines().any(|l| {
                l.starts_with("ringmq_acl_denied_total")
                    && l.contains("action=\"publish\"")
                    && l.ends_with(" 1")
            })
            && text.contains("ringmq_bans_active 1")
    });
    c.expect_none(QUIET, "nothing delivered").await;
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let mut b = OpsBroker::start("nocolour", &["--log-format", "text", "--log-level", "info"]);
    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(b.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(b.wait_exit(Duration::from_secs(15)), Some(0));
    let mut err = String::new();
    b.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("broker started"), "{err}");
    assert!(!err.contains('\x1b'), "ANSI escape in a piped log: {err:?}");
}

/// Behind a proxy (PROXY protocol listener), an address ban applies to the
/// client's address the header carries, not to the proxy's; 1 and 2 shards.
#[tokio::test]
async fn address_bans_apply_to_the_address_a_proxy_header_carries() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for shards in [1, 2] {
        let b = common::Broker::start_with(shards, |c| {
            c.listen = vec![ringmq_shard::config::Listener {
                addr: "127.0.0.1:0".parse().unwrap(),
                transport: ringmq_shard::config::Transport::Mqtt,
                tls: Default::default(),
                proxy_protocol: true,
                allow_anonymous: None,
            }];
        });
        b.handle().access().bans.add(
            ringmq_shard::access::bans::Target::Address("203.0.113.0/24".parse().unwrap()),
            None,
        );
        let connack = |src: &'static str, id: &'static str| {
            let addr = b.addrs()[0];
            async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                let mut bytes = format!("PROXY TCP4 {src} 127.0.0.1 40001 1883\r\n").into_bytes();
                bytes.extend(common::raw::bytes_of::connect_ok(4, id));
                s.write_all(&bytes).await.unwrap();
                let mut buf = [0u8; 4];
                tokio::time::timeout(WAIT, s.read_exact(&mut buf))
                    .await
                    .expect("CONNACK in time")
                    .expect("CONNACK");
                buf[3]
            }
        };
        assert_eq!(
            connack("203.0.113.9", "behind-1").await,
            0x05,
            "banned block"
        );
        assert_eq!(
            connack("198.51.100.7", "behind-2").await,
            0x00,
            "other address"
        );
    }
}

/// IPv6 address bans: a `::1/128` ban refuses a client on `[::1]`, a v4
/// block does not; both protocols.
#[tokio::test]
async fn ipv6_address_bans() {
    let b = common::Broker::start_with(1, |c| {
        c.listen = vec!["[::1]:0".parse().unwrap()];
    });
    let bans = &b.handle().access().bans;
    bans.add(
        ringmq_shard::access::bans::Target::Address("127.0.0.0/8".parse().unwrap()),
        None,
    );
    Client::connect(Opts::new(Proto::V5, b.addr, "v6-before")).await;
    bans.add(
        ringmq_shard::access::bans::Target::Address("::1/128".parse().unwrap()),
        None,
    );
    for proto in [Proto::V4, Proto::V5] {
        let c = Client::try_connect(Opts::new(proto, b.addr, "v6-after")).await;
        assert_eq!(c.connack.1, if proto == Proto::V5 { 0x8A } else { 0x05 });
    }
}
