//! Every configuration mistake is one line naming the key, flag or variable.

#[path = "ctl_support/mod.rs"]
mod support;

use support::{ringmq, scratch};

fn check(name: &str, toml: &str) -> (i32, String) {
    let dir = scratch(&format!("err-{name}"));
    let f = dir.join("bad.toml");
    std::fs::write(&f, toml).unwrap();
    let (code, _, err) = ringmq(&["config", "check", f.to_str().unwrap()]);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    (code, err.trim_end().to_string())
}

fn cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) as usize }
}

#[test]
fn unknown_key_names_it() {
    let (code, err) = check("unknown", "[limits]\nmax_packet_sizee = 10\n");
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: config key \"limits.max_packet_sizee\" is unknown"
    );
}

#[test]
fn key_in_the_wrong_section_gets_a_hint() {
    let (_, err) = check("wrongsec", "[limits]\ncores = 1\n");
    assert_eq!(
        err,
        "error: config key \"limits.cores\" is unknown (did you mean \"placement.cores\"?)"
    );
    let (_, err) = check("nosec", "cores = 1\n");
    assert!(err.starts_with("error: config key \"cores\" "), "{err}");
    let (_, err) = check("badsec", "[limitz]\n");
    assert_eq!(err, "error: config key \"limitz\" is unknown");
}

#[test]
fn bad_value_names_the_key() {
    let (code, err) = check("type", "[limits]\nmax_packet_size = \"big\"\n");
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: config key \"limits.max_packet_size\": "),
        "{err}"
    );
    let (_, err) = check("enum", "[persistence]\ndurability = \"maybe\"\n");
    assert!(
        err.starts_with("error: config key \"persistence.durability\": "),
        "{err}"
    );
    assert!(err.contains("sync, batch, none"), "{err}");
    let (_, err) = check("listen", "[listeners]\nlisten = [\"http://0.0.0.0:80\"]\n");
    assert!(
        err.starts_with("error: config key \"listeners.listen\": "),
        "{err}"
    );
    let (_, err) = check("tls", "[listeners]\nlisten = [\"mqtts://127.0.0.1:0\"]\n");
    assert!(
        err.starts_with("error: config key \"listeners.listen\" = "),
        "{err}"
    );
    assert!(err.contains("tls_cert"), "{err}");
    let (_, err) = check(
        "opt",
        "[listeners]\nlisten = [\"mqtt://127.0.0.1:0?cert=x\"]\n",
    );
    assert!(
        err.starts_with("error: config key \"listeners.listen\": "),
        "{err}"
    );
    let (_, err) = check("range", "[limits]\nreceive_maximum = 0\n");
    assert_eq!(
        err,
        "error: config key \"limits.receive_maximum\" = 0: must be at least 1"
    );
    let (_, err) = check("spin", "[placement]\nidle_spin_us = 20000\n");
    assert_eq!(
        err,
        "error: config key \"placement.idle_spin_us\" = 20000: must be at most 10000 (10 ms)"
    );
    let (_, err) = check("zc", "[placement]\nio_uring_send_zc = 100\n");
    assert_eq!(
        err,
        "error: config key \"placement.io_uring_send_zc\" = 100: must be 0 (off) or at least 1024"
    );
    let (_, err) = check("syntax", "[limits\n");
    assert!(
        err.starts_with("error: config file ") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn too_many_cores_is_one_line_for_flag_env_and_file() {
    let n = cpus();
    let (code, _, err) = ringmq(&["--cores", "64", "config", "show"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim_end(),
        format!("error: --cores 64: only {n} CPUs present")
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["config", "show"])
        .env("RINGMQ_CORES", "64")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!("error: RINGMQ_CORES=64: only {n} CPUs present")
    );
    let (_, err) = check("cores", "[placement]\ncores = 64\n");
    assert_eq!(
        err,
        format!("error: config key \"placement.cores\" = 64: only {n} CPUs present")
    );
    // The broker itself refuses to start the same way.
    let (code, out, err) = ringmq(&["--cores", "64", "--listen", "mqtt://127.0.0.1:0"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bad_flag_value_is_one_line() {
    let (code, _, err) = ringmq(&["--backlog", "lots"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--backlog"), "{err}");
    let (code, _, err) = ringmq(&["--listen", "ws://x:1"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--listen") && err.lines().count() == 1,
        "{err}"
    );
    let (_, _, err) = ringmq(&["--log-level", "a=b=c", "config", "show"]);
    assert!(err.starts_with("error: --log-level a=b=c: "), "{err}");
}

#[test]
fn missing_file_is_one_line() {
    let (code, _, err) = ringmq(&["config", "check", "/nonexistent/ringmq.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: config file /nonexistent/ringmq.toml: "),
        "{err}"
    );
}

/// A password file that does not parse stops the start with file and line,
/// named as the operator gave it (flag, variable, file key).
#[test]
fn bad_password_file_is_one_line_with_its_line() {
    let dir = std::env::temp_dir().join(format!("ringmq-pwerr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("pw");
    std::fs::write(&f, "# users\nalice:plaintext\n").unwrap();
    let f = f.to_str().unwrap();
    let (code, out, err) = ringmq(&["--password-file", f, "--listen", "mqtt://127.0.0.1:0"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: --password-file {f}: line 2: user alice: not a hashed password"
        )),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["config", "show"])
        .env("RINGMQ_PASSWORD_FILE", format!("{f}.missing"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: RINGMQ_PASSWORD_FILE={f}.missing: No such file"
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn acl_file_errors_name_the_key_the_file_and_the_line() {
    let dir = scratch("aclfile-src");
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic read a/#\nuser bob\ntopic raed b\n").unwrap();
    let (code, err) = check(
        "acl",
        &format!("[authz]\nacl_file = \"{}\"\n", acl.display()),
    );
    assert_eq!(code, 1);
    assert!(err.contains("authz.acl_file"), "{err}");
    assert!(err.contains(&format!("{}:3: ", acl.display())), "{err}");
    let (_, err) = check("acl-missing", "[authz]\nacl_file = \"/nonexistent/acl\"\n");
    assert!(
        err.contains("authz.acl_file") && err.contains("cannot read"),
        "{err}"
    );
    let (_, err) = check("acl-window", "[authz]\nauth_fail_window_secs = 0\n");
    assert!(err.contains("authz.auth_fail_window_secs"), "{err}");
}
