//! `compare`: the same scenario against ringmq, Mosquitto (as configured and with
//! TCP_NODELAY), FlashMQ and rumqttd, one after the other in one run, with the ratios;
//! and `selfcheck`: the generator's own ceiling against the relay TEST FIXTURE.

use crate::brokers::{
    find_bin, start_flashmq, start_mosquitto_tls, start_ringmq_backend, start_ringmq_with,
    start_rumqttd, BrokerProc, TlsFiles,
};
use crate::cli::Transport;
use crate::cli::{Cli, Command, CompareArgs, MqttVersion, PeerArgs, Scenario, SelfcheckArgs};
use crate::relay::{Faults, RelayFixture};
use crate::stats::{proc_memory, BrokerMemory, Summary};
use crate::{cpus, report, run_scenario};
use clap::Parser;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Runs the comparison, prints it, and writes the results file.
pub fn run(args: &CompareArgs) -> Result<(), String> {
    let c = &args.peers;
    // Before any broker starts, so the brokers inherit the same open-files limit.
    crate::runner::raise_fd_limit();
    let cpus = Some(c.broker_cpus.as_str());
    let mut results: Vec<(String, Summary)> = Vec::new();
    let mut flags: Vec<(String, String, String)> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for name in &c.brokers {
        let started = start_peer(c, name, cpus, args.scenario.common().broker.transport());
        let b = match started {
            Ok(b) => b,
            Err(e) => {
                println!("== {name}: skipped: {e} ==");
                skipped.push(format!("{name}: {e}"));
                continue;
            }
        };
        println!("== {name} (pid {}, port {}) ==", b.pid(), b.port);
        println!("{}", b.flags);
        if !b.config.is_empty() {
            println!("--- {name} config ---\n{}---", b.config);
        }
        match run_against(&b, &args.scenario) {
            Ok(s) => {
                print!("{}", report::table(&s));
                println!();
                flags.push((name.clone(), b.flags.clone(), b.config.clone()));
                results.push((name.clone(), s));
            }
            Err(e) => {
                eprintln!("ringmq-bench: {name} run failed: {e}");
                skipped.push(format!("{name}: run failed: {e}"));
            }
        }
        b.stop();
        std::thread::sleep(Duration::from_millis(500));
    }
    if results.is_empty() {
        return Err(format!("no broker could be run: {}", skipped.join("; ")));
    }
    let table = report::comparison(&results);
    println!("{table}");
    for s in &skipped {
        println!("not run: {s}");
    }
    let name = scenario_name(c, &args.scenario);
    let mut md_path = None;
    if let Some(dir) = &c.results_dir {
        let path = write_results(c, dir, &name, &results, &flags, &skipped, &table)?;
        println!("results written to {path}");
        md_path = Some(path);
    }
    // A connection storm is about connects/s; every other scenario about deliveries/s.
    let storm = matches!(args.scenario, Scenario::Conn(_));
    let (what, metric): (&str, fn(&Summary) -> f64) = if storm {
        ("connects/s", |s| s.connects_per_sec)
    } else {
        ("deliveries/s", |s| s.delivered_per_sec)
    };
    let chart = || {
        let bars = results
            .iter()
            .map(|(b, s)| {
                let mark = if s.generator_limited {
                    " (generator-limited)"
                } else {
                    ""
                };
                (format!("{b}{mark}"), metric(s))
            })
            .collect();
        crate::chart::throughput_svg(
            &format!("{name}: {what} per broker ({})", results[0].1.mqtt),
            what,
            &[(describe_load(&results[0].1), bars)],
        )
    };
    write_svgs(c, md_path.as_deref(), chart)
}

/// `<scenario>` or `<scenario>-<label>`, the stem of the results files.
pub fn scenario_name(c: &PeerArgs, s: &Scenario) -> String {
    match &c.label {
        Some(l) => format!("{}-{l}", s.name()),
        None => s.name().to_string(),
    }
}

/// "50 pub -> 50 sub, QoS 0, 64 B": a chart's group label.
fn describe_load(s: &Summary) -> String {
    if s.scenario == "conn" {
        return format!("{} connections, {}", s.connections, s.mqtt);
    }
    format!(
        "{} pub -> {} sub, QoS {}, {} B",
        s.publishers, s.subscribers, s.qos, s.payload_bytes
    )
}

/// Writes the chart next to the results file (same stem, .svg) and to --svg.
pub fn write_svgs(
    c: &PeerArgs,
    md_path: Option<&str>,
    chart: impl Fn() -> Result<String, String>,
) -> Result<(), String> {
    let mut paths: Vec<String> = c.svg.iter().cloned().collect();
    if let Some(md) = md_path {
        paths.push(format!("{}.svg", md.trim_end_matches(".md")));
    }
    if paths.is_empty() {
        return Ok(());
    }
    let svg = chart()?;
    for p in paths {
        std::fs::write(&p, &svg).map_err(|e| format!("write {p}: {e}"))?;
        println!("chart written to {p}");
    }
    Ok(())
}

/// Starts peer `name` with its binary from the flags or PATH.
pub fn start_peer(
    c: &PeerArgs,
    name: &str,
    cpus: Option<&str>,
    transport: Transport,
) -> Result<BrokerProc, String> {
    let bin = |flag: &Option<String>, names: &[&str], hint: &str| {
        find_bin(flag.as_deref(), names, hint).map(|p| p.to_string_lossy().into_owned())
    };
    let tls = match (&c.server_cert, &c.server_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        _ => return Err("--server-cert and --server-key go together".into()),
    };
    let tls = tls.as_ref();
    match name {
        "ringmq" => start_ringmq_with(&c.ringmq_bin, cpus, tls, transport),
        n if ringmq_variant(n).is_some() => {
            let (backend, spin) = ringmq_variant(n).expect("matched");
            start_ringmq_backend(&c.ringmq_bin, cpus, tls, transport, Some(backend), spin)
        }
        "mosquitto" | "mosquitto-nodelay" => {
            let b = bin(
                &c.mosquitto_bin,
                &["mosquitto"],
                "apt-get install mosquitto, or --mosquitto-bin",
            )?;
            start_mosquitto_tls(&b, cpus, name == "mosquitto-nodelay", tls)
        }
        "flashmq" => {
            let b = bin(
                &c.flashmq_bin,
                &["flashmq"],
                "docs/benchmarking.md says how to build it; --flashmq-bin",
            )?;
            start_flashmq(&b, cpus, tls)
        }
        "rumqttd" if tls.is_some() => {
            Err("compare does not configure rumqttd's TLS/WebSocket listeners".into())
        }
        "rumqttd" => {
            let b = bin(
                &c.rumqttd_bin,
                &["rumqttd"],
                "cargo install rumqttd, or --rumqttd-bin",
            )?;
            start_rumqttd(&b, cpus)
        }
        other => Err(format!(
            "unknown broker `{other}` (known: {})",
            crate::brokers::PEERS.join(", ") + ", ringmq-epoll-spinUS, ringmq-io_uring-spinUS"
        )),
    }
}

/// `ringmq-BACKEND` or `ringmq-BACKEND-spinUS` (BACKEND epoll or io_uring; US the
/// broker's `--idle-spin-us`): the backend and the spin, if given.
fn ringmq_variant(name: &str) -> Option<(&str, Option<u64>)> {
    let rest = name.strip_prefix("ringmq-")?;
    let (backend, spin) = match rest.split_once("-spin") {
        Some((b, us)) => (b, Some(us.parse().ok()?)),
        None => (rest, None),
    };
    matches!(backend, "epoll" | "io_uring").then_some((backend, spin))
}

/// Whether broker `name` (as `compare` starts it) sets `TCP_NODELAY` on client sockets:
/// ringmq does, and the `mosquitto-nodelay` and `flashmq` configurations ask for it.
/// Against the others a fixed-rate run wakes for every delivery (`--wake-on-delivery`):
/// reading on the pace grid moves the ACKs a Nagle sender waits for, and Mosquitto as
/// shipped measured a different p50 that way (docs/benchmarking.md, sixth pass).
pub fn sets_tcp_nodelay(name: &str) -> bool {
    name.starts_with("ringmq") || name == "mosquitto-nodelay" || name == "flashmq"
}

/// Points the scenario at `b`, runs it, and adds the broker's memory.
pub fn run_against(b: &BrokerProc, scenario: &Scenario) -> Result<Summary, String> {
    let mut s = scenario.clone();
    let pid = b.pid();
    {
        let common = s.common_mut();
        common.broker.apply_url(); // the broker's address is ours to set; keep the scheme
        common.broker.host = "127.0.0.1".into();
        let transport = common.broker.transport();
        let none = |what: &str| {
            format!(
                "{} has no {what} listener (compare needs --server-cert/--server-key)",
                b.name
            )
        };
        common.broker.port = match transport {
            Transport::Tcp => match (common.broker.mqtt, b.port_v5) {
                (MqttVersion::V5, Some(p)) => p,
                _ => b.port,
            },
            Transport::Tls => b.port_tls.ok_or_else(|| none("TLS"))?,
            Transport::Ws => b.port_ws.ok_or_else(|| none("WebSocket"))?,
            Transport::Wss => b.port_wss.ok_or_else(|| none("WebSocket-over-TLS"))?,
        };
    }
    if let Scenario::Conn(a) = &mut s {
        a.broker_pid = Some(pid);
    }
    if !sets_tcp_nodelay(&b.name) {
        if let Some(l) = s.load_mut() {
            // A broker with Nagle on holds small deliveries until the previous one is
            // acknowledged, so its latency depends on when the subscriber's ACKs leave:
            // measured as before, each delivery read (and acknowledged) as it comes.
            l.wake_on_delivery = true;
        }
    }
    let before = proc_memory(pid);
    let mut sum = run_scenario(&s)?;
    if sum.connections == 0 && sum.connect_failures > 0 {
        return Err(format!(
            "no client could connect ({} failed): {}",
            sum.connect_failures,
            sum.errors.first().map_or("", String::as_str)
        ));
    }
    if sum.broker_memory.is_none() {
        if let (Some((rss0, _)), Some((rss1, hwm))) = (before, proc_memory(pid)) {
            sum.broker_memory = Some(BrokerMemory {
                pid,
                rss_before_kb: rss0,
                rss_after_kb: rss1,
                hwm_kb: hwm,
                per_connection_bytes: (hwm.saturating_sub(rss0) * 1024) / sum.connections.max(1),
            });
        }
    }
    Ok(sum)
}

fn write_results(
    c: &PeerArgs,
    dir: &str,
    scenario: &str,
    results: &[(String, Summary)],
    flags: &[(String, String, String)],
    skipped: &[String],
    table: &str,
) -> Result<String, String> {
    let (date, time) = utc_now();
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut path = format!("{dir}/{date}-{scenario}.md");
    let mut n = 2;
    while std::path::Path::new(&path).exists() {
        path = format!("{dir}/{date}-{scenario}-{n}.md");
        n += 1;
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# {scenario}: {}\n",
        results
            .iter()
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>()
            .join(" vs ")
    );
    let _ = writeln!(md, "{}", machine_header(&date, &time));
    let args: Vec<String> = std::env::args().collect();
    let _ = writeln!(md, "- generator: `{}`", args.join(" "));
    for (name, f, _) in flags {
        let _ = writeln!(md, "- {name}: `{f}`");
    }
    for s in skipped {
        let _ = writeln!(md, "- not run: {s}");
    }
    if let Some(note) = &c.note {
        let _ = writeln!(md, "- note: {note}");
    }
    let _ = writeln!(
        md,
        "\n## Comparison (ratios: {} / other)\n\n{table}",
        results[0].0
    );
    for (name, s) in results {
        let _ = writeln!(md, "## {name}\n\n```\n{}```\n", report::table(s));
        if let Some((_, _, conf)) = flags.iter().find(|f| &f.0 == name) {
            if !conf.is_empty() {
                let _ = writeln!(md, "{name} config:\n\n```\n{conf}```\n");
            }
        }
    }
    std::fs::write(&path, md).map_err(|e| format!("write {path}: {e}"))?;
    Ok(path)
}

/// Header lines naming the machine: CPU model, cores, kernel, commit.
pub fn machine_header(date: &str, time: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = out("git", &["rev-parse", "--short", "HEAD"]);
    format!(
        "- date: {date} {time} UTC\n- CPU: {cpu}, {} CPUs online (allowed here: {:?})\n- kernel: {}\n- commit: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpus::allowed(),
        kernel.trim(),
        if commit.is_empty() { "unknown".into() } else { commit }
    )
}

/// ("YYYY-MM-DD", "HH:MM") now, UTC.
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}", rem / 3600, rem % 3600 / 60),
    )
}

/// Runs the scenario (default: `pairs` for 5 s, plus a publish-only run) against the
/// relay fixture and prints the generator's ceiling.
pub fn selfcheck(a: &SelfcheckArgs) -> Result<(), String> {
    let cpu = cpus::parse_list(&a.relay_cpu)?[0];
    let cpu = cpus::allowed().contains(&cpu).then_some(cpu);
    let relay = RelayFixture::start(0, cpu, Faults::default()).map_err(|e| e.to_string())?;
    let mut runs = Vec::new();
    match &a.scenario {
        Some(s) => runs.push(s.clone()),
        None => {
            for args in [
                &[
                    "pubsub",
                    "--publishers",
                    "50",
                    "--subscribers",
                    "0",
                    "--duration",
                    "5",
                    "--warmup",
                    "1",
                ][..],
                &["pairs", "--pairs", "50", "--duration", "5", "--warmup", "1"][..],
            ] {
                let cli = Cli::try_parse_from(
                    std::iter::once("ringmq-bench").chain(args.iter().copied()),
                )
                .map_err(|e| e.to_string())?;
                if let Command::Scenario(s) = cli.command {
                    runs.push(s);
                }
            }
        }
    }
    let mut out = format!(
        "SELF-CHECK: generator against the built-in relay TEST FIXTURE on CPU {} (NOT a broker).\n\
         These figures are the tool's ceiling on this machine, relay included.\n\n",
        cpu.map_or("(unpinned)".to_string(), |c| c.to_string())
    );
    print!("{out}");
    for mut s in runs {
        let c = s.common_mut();
        c.broker.host = "127.0.0.1".into();
        c.broker.port = relay.addr.port();
        let sum = run_scenario(&s)?;
        let text = if s.common().run.json {
            format!("{}\n", report::json(&sum))
        } else {
            format!("{}{}\n\n", report::table(&sum), verdict(&sum))
        };
        print!("{text}");
        out.push_str(&text);
    }
    relay.stop();
    if let Some(dir) = &a.results_dir {
        let (date, time) = utc_now();
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let path = format!("{dir}/{date}-selfcheck.md");
        let args: Vec<String> = std::env::args().collect();
        let md = format!(
            "# Self-check: the generator's own ceiling (relay TEST FIXTURE, not a broker)\n\n{}\n- generator: `{}`\n{}\n```\n{out}```\n",
            machine_header(&date, &time),
            args.join(" "),
            a.note.as_ref().map(|n| format!("- note: {n}\n")).unwrap_or_default(),
        );
        std::fs::write(&path, md).map_err(|e| format!("write {path}: {e}"))?;
        eprintln!("ringmq-bench: self-check written to {path}");
    }
    Ok(())
}

/// One line saying whether the tool or the relay fixture was the limit.
fn verdict(sum: &Summary) -> String {
    let moved = sum.sent_per_sec + sum.delivered_per_sec;
    let verdict = if !sum.generator_limited {
        "the relay fixture was the limit, so the tool's ceiling is above this"
    } else {
        "the generator is near its own limit here: add --cores"
    };
    format!(
        "=> generator moved {:.2}M msg/s (out + in) using {:.0}% of {} core(s): {verdict}",
        moved / 1e6,
        sum.generator_busy_percent,
        sum.cores,
    )
}
