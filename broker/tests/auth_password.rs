//! Password authentication with rumqttc (v4 and v5), in-process broker, 1 and 2 shards:
//! a named listener refuses anonymous clients (v5 0x87, 3.1.1 0x05), a password file with
//! every entry kind ($6$ and $7$ as Debian's `mosquitto_passwd` writes them, argon2id and
//! SCRAM entries as `ringmq passwd` writes them) accepts the right password and refuses a
//! wrong one or an unknown user (0x86 / 0x04), and every outcome is counted.

mod common;

use common::{Broker, Client, Opts, Proto};
use ringmq_shard::access::authn::AuthnConfig;
use ringmq_shard::access::passwd::Entry;
use ringmq_shard::stats::AuthOutcome;
use std::path::PathBuf;
use std::process::Command;

/// A password file: `alice` ($7$) and `bob` ($6$) written by Debian's mosquitto_passwd,
/// `dave` (argon2id) and `erin` (SCRAM) written by our own entries.
fn password_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-authpw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("passwd");
    let run = |args: &[&str]| {
        let st = Command::new("mosquitto_passwd")
            .args(args)
            .status()
            .expect("mosquitto_passwd (Debian's mosquitto package, installed by .ci/run)");
        assert!(st.success(), "mosquitto_passwd {args:?}");
    };
    let fs = f.to_str().unwrap();
    run(&["-c", "-b", fs, "alice", "secret"]);
    run(&["-H", "sha512", "-b", fs, "bob", "hunter2"]);
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(
        text.contains("alice:$7$") && text.contains("bob:$6$"),
        "{text}"
    );
    let more = format!(
        "{text}dave:{}\nerin:{}\n",
        Entry::new_argon2id(b"argon-pw"),
        Entry::new_scram(b"scram-pw", 4096)
    );
    std::fs::write(&f, more).unwrap();
    f
}

/// A broker on `name`'s password file; `max_failures` wrong logins from one
/// address ban it (0: never; these tests make many from 127.0.0.1).
fn broker_banning(name: &str, shards: usize, allow_anonymous: bool, max_failures: u32) -> Broker {
    let f = password_file(name);
    Broker::start_with(shards, |c| {
        c.authn = AuthnConfig {
            allow_anonymous,
            password_file: Some(f),
        };
        c.access.auto_ban.max_failures = max_failures;
    })
}

fn broker(name: &str, shards: usize, allow_anonymous: bool) -> Broker {
    broker_banning(name, shards, allow_anonymous, 0)
}

async fn code(proto: Proto, b: &Broker, id: &str, creds: Option<(&str, &str)>) -> u8 {
    let mut o = Opts::new(proto, b.addr, id);
    if let Some((u, p)) = creds {
        o = o.credentials(u, p);
    }
    Client::try_connect(o).await.connack.1
}

fn auth_count(b: &Broker, o: AuthOutcome) -> u64 {
    b.stat(|s| s.auth_for(o))
}

async fn passwords_decide(proto: Proto, shards: usize) {
    let b = broker(&format!("{proto:?}{shards}"), shards, false);
    let (refused_anon, bad_pw) = match proto {
        Proto::V5 => (0x87, 0x86),
        Proto::V4 => (0x05, 0x04),
    };
    assert_eq!(
        code(proto, &b, "anon", None).await,
        refused_anon,
        "anonymous"
    );
    for (user, pw) in [
        ("alice", "secret"),
        ("bob", "hunter2"),
        ("dave", "argon-pw"),
        ("erin", "scram-pw"),
    ] {
        // Several ids so both shards authenticate (the accepting shard checks).
        for i in 0..3 {
            let id = format!("{user}-{i}");
            assert_eq!(code(proto, &b, &id, Some((user, pw))).await, 0, "{user}");
            let id = format!("{user}-bad-{i}");
            assert_eq!(
                code(proto, &b, &id, Some((user, "wrong"))).await,
                bad_pw,
                "{user} wrong"
            );
        }
    }
    assert_eq!(code(proto, &b, "who", Some(("mallory", "x"))).await, bad_pw);
    assert_eq!(auth_count(&b, AuthOutcome::AnonymousRefused), 1);
    assert_eq!(auth_count(&b, AuthOutcome::Password), 12);
    assert_eq!(auth_count(&b, AuthOutcome::BadPassword), 12);
    assert_eq!(auth_count(&b, AuthOutcome::UnknownUser), 1);
    // Accepted clients publish and receive as usual.
    let mut sub =
        Client::connect(Opts::new(proto, b.addr, "sub").credentials("alice", "secret")).await;
    sub.subscribe("t/auth", 1).await;
    let publ =
        Client::connect(Opts::new(proto, b.addr, "pub").credentials("dave", "argon-pw")).await;
    publ.publish("t/auth", 1, false, "hi").await;
    assert_eq!(sub.recv("the publish").await.text(), "hi");
}

/// `allow_anonymous` with a password file: no user name gets in, a wrong password does not.
async fn anonymous_allowed_still_checks_passwords(proto: Proto, shards: usize) {
    let b = broker(&format!("anon{proto:?}{shards}"), shards, true);
    let bad_pw = if proto == Proto::V5 { 0x86 } else { 0x04 };
    assert_eq!(code(proto, &b, "anon", None).await, 0);
    assert_eq!(code(proto, &b, "x", Some(("alice", "nope"))).await, bad_pw);
    assert_eq!(code(proto, &b, "y", Some(("alice", "secret"))).await, 0);
    assert_eq!(auth_count(&b, AuthOutcome::Anonymous), 1);
}

/// No password file, anonymous refused: a user name alone does not get in.
async fn user_name_without_password_file_is_refused(proto: Proto, shards: usize) {
    let b = Broker::start_with(shards, |c| c.authn = AuthnConfig::default());
    let refused = if proto == Proto::V5 { 0x87 } else { 0x05 };
    assert_eq!(
        code(proto, &b, "u", Some(("alice", "secret"))).await,
        refused
    );
    assert_eq!(code(proto, &b, "v", None).await, refused);
    assert_eq!(auth_count(&b, AuthOutcome::AnonymousRefused), 2);
}

/// `allow_anonymous` per listener: the first listener opens to anonymous clients although
/// the broker-wide setting refuses them, the second follows the broker-wide setting; a user
/// name on the open listener is still checked against the password file.
async fn anonymous_per_listener(proto: Proto, shards: usize) {
    let f = password_file(&format!("perlistener{proto:?}{shards}"));
    let b = Broker::start_with(shards, |c| {
        c.authn = AuthnConfig {
            allow_anonymous: false,
            password_file: Some(f),
        };
        // Same transport as the harness runs (plain, TLS or WebSocket).
        let base = c.listen[0].clone();
        let open = ringmq_shard::config::Listener {
            allow_anonymous: Some(true),
            ..base.clone()
        };
        c.listen = vec![open, base];
    });
    let (open, strict) = (b.addrs()[0], b.addrs()[1]);
    let (refused, bad_pw) = match proto {
        Proto::V5 => (0x87, 0x86),
        Proto::V4 => (0x05, 0x04),
    };
    let code_at = |addr, id: &str, creds: Option<(&'static str, &'static str)>| {
        let mut o = Opts::new(proto, addr, id);
        if let Some((u, p)) = creds {
            o = o.credentials(u, p);
        }
        async move { Client::try_connect(o).await.connack.1 }
    };
    // Several ids so both shards authenticate (the accepting shard checks).
    for i in 0..3 {
        assert_eq!(code_at(open, &format!("anon-open-{i}"), None).await, 0);
        assert_eq!(
            code_at(strict, &format!("anon-strict-{i}"), None).await,
            refused
        );
    }
    assert_eq!(
        code_at(open, "wrong", Some(("alice", "nope"))).await,
        bad_pw
    );
    assert_eq!(code_at(strict, "right", Some(("alice", "secret"))).await, 0);
    assert_eq!(auth_count(&b, AuthOutcome::Anonymous), 3);
    assert_eq!(auth_count(&b, AuthOutcome::AnonymousRefused), 3);
    // An anonymous client on the open listener publishes to a user on the strict one.
    let mut sub =
        Client::connect(Opts::new(proto, strict, "sub").credentials("alice", "secret")).await;
    sub.subscribe("t/anon", 1).await;
    let publ = Client::connect(Opts::new(proto, open, "anon-pub")).await;
    publ.publish("t/anon", 1, false, "hi").await;
    assert_eq!(sub.recv("the publish").await.text(), "hi");
}

/// Wrong passwords feed the brute-force counter: the third from 127.0.0.1
/// bans the address, and then even the right password is refused as banned
/// (v5 0x8A, 3.1.1 0x05) before any hashing.
async fn wrong_passwords_ban_the_address(proto: Proto, shards: usize) {
    let b = broker_banning(&format!("ban{proto:?}{shards}"), shards, false, 3);
    let (bad_pw, banned) = match proto {
        Proto::V5 => (0x86, 0x8A),
        Proto::V4 => (0x04, 0x05),
    };
    assert_eq!(code(proto, &b, "ok0", Some(("alice", "secret"))).await, 0);
    for i in 0..3 {
        let id = format!("guess{i}");
        assert_eq!(code(proto, &b, &id, Some(("alice", "guess"))).await, bad_pw);
    }
    assert_eq!(
        code(proto, &b, "ok1", Some(("alice", "secret"))).await,
        banned
    );
    assert_eq!(
        code(proto, &b, "ok2", Some(("dave", "argon-pw"))).await,
        banned
    );
    assert_eq!(auth_count(&b, AuthOutcome::BadPassword), 3);
    assert_eq!(
        auth_count(&b, AuthOutcome::Password),
        1,
        "no check once banned"
    );
}

macro_rules! cases {
    ($($name:ident),*) => {$(
        mod $name {
            use super::*;
            #[tokio::test] async fn v311_1shard() { super::$name(Proto::V4, 1).await }
            #[tokio::test] async fn v311_2shards() { super::$name(Proto::V4, 2).await }
            #[tokio::test] async fn v5_1shard() { super::$name(Proto::V5, 1).await }
            #[tokio::test] async fn v5_2shards() { super::$name(Proto::V5, 2).await }
        }
    )*};
}

cases!(
    passwords_decide,
    wrong_passwords_ban_the_address,
    anonymous_allowed_still_checks_passwords,
    user_name_without_password_file_is_refused,
    anonymous_per_listener
);
