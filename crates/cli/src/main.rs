//! `p2pnet`: run a p2pnet node.
//!
//! ```text
//! p2pnet [--data-dir DIR] [--log-format text|json] daemon [--listen ADDR]... [--bootstrap ADDR]...
//! ```
//!
//! With no flags the daemon works: it creates the data directory and an identity on first start,
//! listens on `/ip4/0.0.0.0/tcp/4001` (or on a free port, with a clear log line, if 4001 is
//! taken), prints its peer id and addresses, and runs until SIGINT or SIGTERM.
#![allow(clippy::print_stdout)] // a command-line program: stdout is its interface

mod daemon;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "p2pnet", version, about = "A p2pnet node and its tools")]
struct Cli {
    /// Where the node keeps its identity and state.
    #[arg(long, global = true, env = "P2PNET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log format (filter with RUST_LOG, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node until interrupted.
    Daemon(daemon::DaemonArgs),
}

fn default_data_dir() -> Result<PathBuf> {
    dirs::data_dir()
        .map(|d| d.join("p2pnet"))
        .context("no user data directory on this system; pass --data-dir")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let data_dir = match cli.data_dir {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Daemon(args) => runtime.block_on(daemon::run(data_dir, args)),
    }
}
