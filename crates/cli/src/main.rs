//! `p2pnet`: run a p2pnet node and drive it.
//!
//! ```text
//! p2pnet [--data-dir DIR] [--log-format text|json] [--json] <command>
//!   daemon [--config FILE] [--listen ADDR]... [--bootstrap ADDR]... [--metrics ADDR]
//!   id | peers | connect ADDR | disconnect PEER | ping PEER
//!   forward PROTO LISTEN_ADDR PEER [--persist] | listen PROTO TARGET_ADDR [--persist] …
//!   ls | streams | close [--all|--protocol P|--listen A|--target A] | stream-close ID
//!   send PEER KIND DATA | broadcast KIND DATA | subscribe KIND | metrics
//!   demo
//! ```
//!
//! With no flags the daemon works: it creates the data directory and an identity on first start,
//! listens on `/ip4/0.0.0.0/tcp/4001` (or on a free port, with a clear log line, if 4001 is
//! taken), prints its peer id and addresses, serves the control socket `<data-dir>/p2pnet.sock`
//! (mode 0600, owner only) and runs until SIGINT or SIGTERM. The other commands talk to it there.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program: stdout is its interface

mod commands;
mod control;
mod daemon;
mod demo;
mod output;
mod strict;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "p2pnet", version, about = "A p2pnet node and its tools")]
struct Cli {
    /// Where the node keeps its identity, configuration and control socket.
    #[arg(long, global = true, env = "P2PNET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log format (filter with RUST_LOG, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Print results as JSON (one value per line) instead of tables.
    #[arg(long, global = true)]
    json: bool,
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
    /// Three nodes in this process: a forwarded TCP echo service and broadcast messages.
    Demo,
    #[command(flatten)]
    Client(commands::ClientCommand),
}

fn default_data_dir() -> Result<PathBuf> {
    dirs::data_dir()
        .map(|d| d.join("p2pnet"))
        .context("no user data directory on this system; pass --data-dir")
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cli: Cli) -> Result<()> {
    // The daemon logs what it does; the client and the demo only warnings.
    let default_level = match cli.command {
        Command::Daemon(_) => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
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
        Command::Demo => runtime.block_on(demo::run()),
        Command::Client(command) => runtime.block_on(commands::run(&data_dir, command, cli.json)),
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
