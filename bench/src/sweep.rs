//! `sweep`: the same scenario at rising fixed rates against each broker, for latency
//! (p50 / p99 / p99.9) against offered load, as a Markdown table and an SVG chart.
//! A broker's sweep stops after the first rate it cannot carry (deliveries below 90% of
//! the offered load, or messages lost): past saturation latency is the queue's.

use crate::brokers::BrokerProc;
use crate::chart::{latency_svg, LatencySeries};
use crate::cli::SweepArgs;
use crate::compare::{machine_header, run_against, scenario_name, start_peer, utc_now, write_svgs};
use crate::stats::Summary;
use std::fmt::Write;

/// Offered deliveries per second: rate x publishers x subscribers reached per message.
fn offered(s: &Summary, rate: f64) -> f64 {
    let per_msg = if s.sent > 0 {
        s.expected as f64 / s.sent as f64
    } else {
        1.0
    };
    rate * s.publishers as f64 * per_msg
}

pub fn run(a: &SweepArgs) -> Result<(), String> {
    let c = &a.peers;
    if a.rates.iter().any(|&r| r <= 0.0 || !r.is_finite()) {
        return Err("--rates: every rate must be > 0 (a sweep is at fixed rates)".into());
    }
    if a.scenario.clone().load_mut().is_none() {
        return Err(format!(
            "sweep needs a message scenario, not `{}`",
            a.scenario.name()
        ));
    }
    crate::runner::raise_fd_limit();
    let cpus = Some(c.broker_cpus.as_str());
    let mut table = String::from(
        "| broker | rate/publisher | offered deliveries/s | deliveries/s | p50 µs | p99 µs | p99.9 µs | max µs | lost | generator busy % |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut series: Vec<LatencySeries> = Vec::new();
    let mut skipped = Vec::new();
    let mut flags = Vec::new();
    for name in &c.brokers {
        let b: BrokerProc = match start_peer(c, name, cpus) {
            Ok(b) => b,
            Err(e) => {
                println!("== {name}: skipped: {e} ==");
                skipped.push(format!("{name}: {e}"));
                continue;
            }
        };
        println!(
            "== {name} (pid {}, port {}) ==\n{}",
            b.pid(),
            b.port,
            b.flags
        );
        if !b.config.is_empty() {
            println!("--- {name} config ---\n{}---", b.config);
        }
        flags.push((name.clone(), b.flags.clone(), b.config.clone()));
        let mut pts = Vec::new();
        for &rate in &a.rates {
            let mut s = a.scenario.clone();
            if let Some(l) = s.load_mut() {
                l.rate = Some(rate);
            }
            let sum = match run_against(&b, &s) {
                Ok(sum) => sum,
                Err(e) => {
                    println!("{name} at {rate}/s: run failed: {e}");
                    break;
                }
            };
            let off = offered(&sum, rate);
            let l = &sum.latency;
            let row = format!(
                "| {name} | {rate} | {off:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0}{} |",
                sum.delivered_per_sec,
                l.p50_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                sum.lost,
                sum.generator_busy_percent,
                if sum.generator_limited { " (generator-limited)" } else { "" }
            );
            println!("{row}");
            let _ = writeln!(table, "{row}");
            for w in &sum.warnings {
                println!("WARNING {w}");
            }
            let saturated = sum.lost > 0 || sum.delivered_per_sec < 0.9 * off;
            if l.samples > 0 {
                pts.push((off, l.p50_us, l.p99_us, l.p999_us));
            }
            if saturated {
                println!("{name}: saturated at {rate}/s per publisher; higher rates skipped");
                let _ = writeln!(table, "| {name} | saturated at {rate}/s | | | | | | | | |");
                break;
            }
        }
        b.stop();
        std::thread::sleep(std::time::Duration::from_millis(300));
        series.push((name.clone(), pts));
    }
    if series.is_empty() {
        return Err(format!("no broker could be run: {}", skipped.join("; ")));
    }
    println!("\n{table}");
    let stem = format!("sweep-{}", scenario_name(c, &a.scenario));
    let mut md_path = None;
    if let Some(dir) = &c.results_dir {
        let (date, time) = utc_now();
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let path = format!("{dir}/{date}-{stem}.md");
        let args: Vec<String> = std::env::args().collect();
        let mut md = format!(
            "# {stem}: latency against offered load\n\n{}\n- generator: `{}`\n",
            machine_header(&date, &time),
            args.join(" ")
        );
        for (n, f, _) in &flags {
            let _ = writeln!(md, "- {n}: `{f}`");
        }
        for s in &skipped {
            let _ = writeln!(md, "- not run: {s}");
        }
        if let Some(note) = &c.note {
            let _ = writeln!(md, "- note: {note}");
        }
        let _ = writeln!(md, "\n{table}");
        for (n, _, conf) in &flags {
            if !conf.is_empty() {
                let _ = writeln!(md, "{n} config:\n\n```\n{conf}```\n");
            }
        }
        std::fs::write(&path, md).map_err(|e| format!("write {path}: {e}"))?;
        println!("results written to {path}");
        md_path = Some(path);
    }
    let title = format!("{stem}: latency p50 (thick) / p99 / p99.9 (thin) against offered load");
    write_svgs(c, md_path.as_deref(), || latency_svg(&title, &series))
}
