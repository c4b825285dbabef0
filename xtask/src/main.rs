//! `cargo xtask`: the single entry point for the project's automation.
//!
//! `cargo xtask ci` runs exactly what CI runs: if it passes locally, CI is green.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: printing is its job

use std::process::Command;
use std::time::Instant;

mod bench;
mod fuzz;
mod interop_js;
mod netns;
mod sim;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "p2pnet project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Format check, clippy, the whole test suite, doc tests, docs, netns, the kad simulation
    /// (`sim kad --quick`) and js interop (netns and js skip, saying why, where they cannot
    /// run), failing on the first failure.
    Ci,
    /// Side-by-side benchmarks in release mode; writes `target/bench/report.json`.
    Bench {
        /// `host`, `dispatcher`, `messaging`, `forward`, `scale` or `all`.
        #[arg(default_value = "all")]
        group: String,
        /// Shorter runs (the whole of `all --quick` stays under 3 minutes).
        #[arg(long)]
        quick: bool,
    },
    /// A network simulation (`p2pnet-sim`): N real hosts over worker processes, a seeded plan;
    /// writes `target/sim/<scenario>.json` and SVG plots and prints a goal table.
    Sim {
        /// The scenario: `kad`.
        scenario: String,
        /// The CI size (kad: 200 nodes instead of 1,000).
        #[arg(long)]
        quick: bool,
        /// The seed of the topology, lookup and churn plan (default 1).
        #[arg(long)]
        seed: Option<u64>,
        /// Build and run the debug binary instead of the release one.
        #[arg(long)]
        debug: bool,
        /// Fail when a goal is missed (by default only harness errors fail).
        #[arg(long)]
        check: bool,
        /// Also run the same plan on rust-libp2p nodes and report both side by side.
        #[arg(long)]
        with_rust_libp2p: bool,
        /// Worker processes (default 4).
        #[arg(long)]
        workers: Option<usize>,
        /// Nodes (overrides the scenario's size).
        #[arg(long)]
        nodes: Option<u32>,
        /// Lookups per phase (default 1,000).
        #[arg(long)]
        lookups: Option<usize>,
    },
    /// The multi-host test in network namespaces (skips, saying why, where it cannot run).
    Netns,
    /// The interop tests against js-libp2p: checks Node.js ≥ 20, runs `npm ci` in interop/js, then
    /// the ignored tests of `interop_js_libp2p`.
    InteropJs {
        /// Skip, saying why, when Node.js ≥ 20 is missing or `npm ci` cannot install the peer
        /// (no registry): how `ci` runs it. A failing test always fails.
        #[arg(long)]
        if_available: bool,
    },
    /// Runs every cargo-fuzz target for a while; fails on any crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Ci => ci(),
        Cmd::Bench { group, quick } => bench::run(&group, quick),
        Cmd::Fuzz { seconds, target } => fuzz::run(seconds, target.as_deref()),
        Cmd::Sim {
            scenario,
            quick,
            seed,
            debug,
            check,
            with_rust_libp2p,
            workers,
            nodes,
            lookups,
        } => sim::run(&sim::SimArgs {
            scenario,
            quick,
            seed,
            debug,
            check,
            with_rust_libp2p,
            workers,
            nodes,
            lookups,
        }),
        Cmd::Netns => netns::run(),
        Cmd::InteropJs { if_available } => interop_js::run(if_available),
    }
}

/// One CI step: a name and the cargo invocation that implements it.
struct Step {
    name: &'static str,
    args: Vec<&'static str>,
    env: Vec<(&'static str, &'static str)>,
}

impl Step {
    fn new(name: &'static str, args: &[&'static str]) -> Self {
        Self {
            name,
            args: args.to_vec(),
            env: Vec::new(),
        }
    }

    fn env(mut self, key: &'static str, value: &'static str) -> Self {
        self.env.push((key, value));
        self
    }
}

fn has_nextest() -> bool {
    Command::new(cargo())
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs the ignored tests of one test binary of `p2pnet-tests` (`what` names them in errors).
pub(crate) fn run_ignored_tests(test: &str, what: &str) -> Result<()> {
    let status = Command::new(cargo())
        .args(["test", "--package", "p2pnet-tests", "--test", test])
        .args(["--", "--ignored"])
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed");
    }
    Ok(())
}

fn ci() -> Result<()> {
    let tests = if has_nextest() {
        Step::new(
            "tests (nextest)",
            &[
                "nextest",
                "run",
                "--workspace",
                "--exclude",
                "p2pnet-bench",
                "--all-targets",
                "--no-fail-fast",
            ],
        )
    } else {
        Step::new(
            "tests (cargo test)",
            &[
                "test",
                "--workspace",
                "--exclude",
                "p2pnet-bench",
                "--all-targets",
            ],
        )
    };
    let steps = [
        Step::new("fmt", &["fmt", "--all", "--", "--check"]),
        Step::new(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--exclude",
                "p2pnet-bench",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        tests,
        Step::new(
            "doc tests",
            &["test", "--workspace", "--exclude", "p2pnet-bench", "--doc"],
        ),
        Step::new(
            "docs",
            &[
                "doc",
                "--workspace",
                "--exclude",
                "p2pnet-bench",
                "--no-deps",
            ],
        )
        .env("RUSTDOCFLAGS", "-D warnings"),
        // The multi-host test runs where namespaces can be created and says why it skips where not.
        Step::new("netns", &["xtask", "netns"]),
        // The kad simulation at CI size (200 nodes, release build); a missed goal is reported,
        // only a harness error fails.
        Step::new("sim kad --quick", &["xtask", "sim", "kad", "--quick"]),
        // Interop with js-libp2p where Node.js and the npm registry are there; says why it skips.
        Step::new("interop-js", &["xtask", "interop-js", "--if-available"]),
    ];
    let started = Instant::now();
    for step in &steps {
        run_step(step)?;
    }
    eprintln!(
        "xtask ci: all {} steps passed in {:.1}s",
        steps.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_step(step: &Step) -> Result<()> {
    let started = Instant::now();
    let mut cmd = Command::new(cargo());
    cmd.args(&step.args);
    for (k, v) in &step.env {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .with_context(|| format!("could not run cargo for step `{}`", step.name))?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        eprintln!("xtask ci: FAILED {:<20} ({secs:.1}s)", step.name);
        bail!("step `{}` failed: cargo {}", step.name, step.args.join(" "));
    }
    eprintln!("xtask ci: ok     {:<20} ({secs:.1}s)", step.name);
    Ok(())
}
