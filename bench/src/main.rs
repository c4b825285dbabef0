//! `p2pnet-bench`: side-by-side measurements of plain TCP, `p2pnet-host` and rust-libp2p on
//! loopback, alternated round by round in one process run so that their ratios are meaningful
//! on a noisy machine. Run through `cargo xtask bench host`.
//!
//! Prints one JSON object per result line with `--json`, else a table.
#![allow(clippy::print_stdout)]

mod host_bench;
mod report;
mod rust_libp2p;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(about = "p2pnet side-by-side benchmarks")]
struct Args {
    /// Which group to run.
    #[arg(default_value = "host")]
    group: String,
    /// Fewer rounds and bytes (under a minute).
    #[arg(long)]
    quick: bool,
    /// One JSON object per result on stdout.
    #[arg(long)]
    json: bool,
    /// Override the host's yamux frame size (bytes), to measure its effect.
    #[arg(long)]
    yamux_split_send_size: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = match args.group.as_str() {
        "host" => rt.block_on(host_bench::run(args.quick, args.yamux_split_send_size))?,
        other => anyhow::bail!("unknown group {other:?} (this binary runs: host)"),
    };
    report::print(&results, args.json);
    Ok(())
}
