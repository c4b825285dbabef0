//! `p2pnet-sim`: a network in one machine. N real hosts on 127.0.0.1, each with its own
//! identity and port, spread over a few worker processes (this binary re-executed as
//! `p2pnet-sim worker`, driven over stdin/stdout JSON lines), a topology and churn plan from a
//! seed, scenarios as code ([`scenario::Scenario`]), a progress bar on stderr and a report:
//! `<out-dir>/<scenario>.json`, SVG plots beside it and a summary table on stdout.
//!
//! ```text
//! p2pnet-sim run kad --quick --seed 1 [--with-rust-libp2p] [--check]
//! ```
//!
//! The exit status is non-zero on a harness error (a worker died, a call timed out, the run
//! exceeded its time); a missed goal fails only with `--check`. `cargo xtask sim` builds and
//! runs it.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: the report is its output

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod ours;
mod plan;
mod plot;
mod pool;
mod proto;
mod rust_libp2p;
mod scenario;
mod stats;
mod worker;

use proto::Backend;
use scenario::{Options, Report, Scenario, ScenarioName};

#[derive(Parser)]
#[command(
    name = "p2pnet-sim",
    about = "p2pnet network simulations on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs a scenario and writes its report.
    Run {
        /// The scenario.
        scenario: ScenarioName,
        /// The small network CI runs (kad: 200 nodes instead of 1,000).
        #[arg(long)]
        quick: bool,
        /// The seed of the topology, lookup and churn plan.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Worker processes per network.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Nodes (overrides the scenario's size).
        #[arg(long)]
        nodes: Option<u32>,
        /// Lookups per phase (overrides the scenario's 1,000).
        #[arg(long)]
        lookups: Option<usize>,
        /// Also run the same plan on rust-libp2p kad nodes and report both side by side.
        #[arg(long)]
        with_rust_libp2p: bool,
        /// Fail (exit 2) when a goal is missed.
        #[arg(long)]
        check: bool,
        /// Where the JSON and the plots go.
        #[arg(long, default_value = "target/sim")]
        out_dir: PathBuf,
        /// The longest the whole run may take, in seconds.
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
        /// The workers' log filter (`RUST_LOG` syntax).
        #[arg(long, default_value = "warn")]
        worker_log: String,
    },
    /// A worker process (started by `run`; serves JSON lines on stdin/stdout).
    #[command(hide = true)]
    Worker {
        /// Which implementation its nodes run.
        #[arg(long, value_enum)]
        backend: Backend,
        /// Its index (for logs).
        #[arg(long)]
        index: usize,
    },
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Raises the open-file limit to the hard limit: every connection is a descriptor.
fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%e, "could not raise RLIMIT_NOFILE");
            0
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Worker { backend, index } => {
            let log = std::env::var("P2PNET_SIM_LOG").unwrap_or_else(|_| "warn".into());
            init_tracing(&log);
            let nofile = raise_nofile();
            tracing::debug!(index, nofile, ?backend, "worker starting");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(worker::run(backend))
        }
        Cmd::Run {
            scenario,
            quick,
            seed,
            workers,
            nodes,
            lookups,
            with_rust_libp2p,
            check,
            out_dir,
            timeout_secs,
            worker_log,
        } => {
            init_tracing(&std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
            raise_nofile();
            if workers == 0 {
                bail!("--workers must be at least 1");
            }
            let opts = Options {
                quick,
                seed,
                workers,
                nodes,
                lookups,
                with_rust_libp2p,
                worker_log,
                out_dir,
                timeout: Duration::from_secs(timeout_secs),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let started = Instant::now();
            let report = rt.block_on(async {
                let run = async {
                    match scenario {
                        ScenarioName::Kad => run(&scenario::kad::Kad, &opts).await,
                    }
                };
                match tokio::time::timeout(opts.timeout, run).await {
                    Ok(r) => r,
                    Err(_) => bail!("the scenario did not finish within {:?}", opts.timeout),
                }
            })?;
            // Workers are gone by now (each pool is closed before its scenario returns; on an
            // early return their children are killed on drop).
            rt.shutdown_timeout(Duration::from_secs(5));
            println!("{}", report.summary);
            println!(
                "wrote {} and {} plots in {:.1}s",
                opts.out_dir
                    .join(format!("{}.json", scenario_name(scenario)))
                    .display(),
                report.plots.len(),
                started.elapsed().as_secs_f64()
            );
            let missed: Vec<&str> = report
                .goals
                .iter()
                .filter(|g| !g.met)
                .map(|g| g.name.as_str())
                .collect();
            if check && !missed.is_empty() {
                eprintln!("p2pnet-sim: goals missed: {}", missed.join(", "));
                std::process::exit(2);
            }
            Ok(())
        }
    }
}

fn scenario_name(s: ScenarioName) -> &'static str {
    match s {
        ScenarioName::Kad => scenario::kad::Kad.name(),
    }
}

/// Runs `scenario` and writes its JSON (with the run's time and machine).
async fn run(scenario: &impl Scenario, opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let mut report = scenario.run(opts).await?;
    report.json["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    report.json["machine"] = machine();
    let path = opts.out_dir.join(format!("{}.json", scenario.name()));
    std::fs::create_dir_all(&opts.out_dir)?;
    std::fs::write(&path, serde_json::to_string_pretty(&report.json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(report)
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    serde_json::json!({ "cpu": cpu, "cores": cores, "os": std::env::consts::OS })
}
