//! `ringmq-bench`: the bundled load generator. See `ringmq_bench` (lib.rs) for the layout
//! and docs/benchmarking.md for usage.

use clap::Parser;
use ringmq_bench::cli::{Cli, Command};
use ringmq_bench::{compare, report, run_scenario, sweep, takeover};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Scenario(s) => run_scenario(&s).map(|sum| {
            if s.common().run.json {
                println!("{}", report::json(&sum));
            } else {
                print!("{}", report::table(&sum));
            }
        }),
        Command::Compare(c) => compare::run(&c),
        Command::Sweep(a) => sweep::run(&a),
        Command::Selfcheck(a) => compare::selfcheck(&a),
        Command::Takeover(a) => takeover::run(&a).map(|r| {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", takeover::table(&r));
            }
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmq-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
