//! `p2pnet-bench`: side-by-side measurements of plain TCP, `p2pnet-host` and rust-libp2p on
//! loopback, alternated round by round in one process run so that their ratios are meaningful
//! on a noisy machine. Run through `cargo xtask bench host|forward|scale`.
//!
//! `p2pnet-bench quic [--quick]` runs only what QUIC adds to `host` and `forward` (with the TCP
//! figures its ratios need), `p2pnet-bench connect-rtt [--quick]` only the connect times through
//! the delay relay (see [`connect_rtt`]).
//!
//! Prints one JSON object per result line with `--json`, else a table.
#![allow(clippy::print_stdout)]

mod connect_rtt;
mod delay_relay;
mod forward_bench;
mod host_bench;
mod report;
mod rust_libp2p;
mod scale;

use anyhow::{Context, Result};
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
    /// `scale` only: how many connections (default 1,000; 200 with --quick).
    #[arg(long)]
    connections: Option<usize>,
    /// `scale` only: how many idle forwarded streams (default 10,000; 2,000 with --quick).
    #[arg(long)]
    streams: Option<usize>,
    /// Tokio worker threads (0: a current-thread runtime). The report always uses 2.
    #[arg(long, default_value_t = 2, hide = true)]
    worker_threads: usize,
    /// `forward-rtt`, `forward-tput`, `stream-open`, `connect` (profiling aids, not in the report): which route,
    /// `tcp`, `ours` or `rust`.
    #[arg(long, default_value = "ours", hide = true)]
    route: String,
    /// `forward-rtt`: how many 64-byte ping-pongs; `forward-tput`: how many MiB; `connect`: how
    /// many connections; `stream-open`: how many streams.
    #[arg(long, default_value_t = 20_000, hide = true)]
    pings: usize,
    /// `connect` (profiling aid): the p2pnet server does not run identify.
    #[arg(long, hide = true)]
    no_server_identify: bool,
    /// Internal: the TCP port a `scale-stream-*` child process uses.
    #[arg(long, hide = true)]
    port: Option<u16>,
    /// Internal: the address a `scale-clients` child process dials.
    #[arg(long, hide = true)]
    target: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = match args.worker_threads {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    let results = match args.group.as_str() {
        "host" => rt.block_on(host_bench::run(
            args.quick,
            args.yamux_split_send_size,
            false,
        ))?,
        "forward" => rt.block_on(forward_bench::run(args.quick, false))?,
        // Only what QUIC adds to `host` and `forward` (with the TCP figures its ratios need).
        "quic" => {
            let mut figures = rt.block_on(host_bench::run(
                args.quick,
                args.yamux_split_send_size,
                true,
            ))?;
            figures.extend(rt.block_on(forward_bench::run(args.quick, true))?);
            figures
        }
        "connect-rtt" => rt.block_on(connect_rtt::run(args.quick))?,
        "stream-open" => rt.block_on(host_bench::stream_open_only(&args.route, args.pings))?,
        "connect" => rt.block_on(host_bench::connect_only(
            &args.route,
            args.pings,
            !args.no_server_identify,
        ))?,
        "forward-rtt" => rt.block_on(forward_bench::rtt_only(&args.route, args.pings))?,
        "forward-tput" => rt.block_on(forward_bench::tput_only(
            &args.route,
            args.pings,
            args.yamux_split_send_size,
        ))?,
        "scale" => {
            let n = args
                .connections
                .unwrap_or(if args.quick { 200 } else { 1000 });
            let streams = args
                .streams
                .unwrap_or(if args.quick { 2_000 } else { 10_000 });
            let mut figures = rt.block_on(scale::run(n))?;
            figures.extend(rt.block_on(scale::stream_memory(streams))?);
            figures
        }
        "scale-stream-node" => {
            let port = args.port.context("--port")?;
            let n = args.connections.context("--connections")?;
            return rt.block_on(scale::stream_node(port, n));
        }
        "scale-stream-target" => return rt.block_on(scale::stream_target()),
        "scale-stream-clients" => {
            let port = args.port.context("--port")?;
            let n = args.connections.context("--connections")?;
            return rt.block_on(scale::stream_clients(port, n));
        }
        "scale-clients" => {
            let target = args.target.as_deref().unwrap_or_default();
            let n = args.connections.unwrap_or(1000);
            return rt.block_on(scale::clients(target, n));
        }
        other => anyhow::bail!(
            "unknown group {other:?} (this binary runs: host, forward, quic, connect-rtt, forward-rtt, scale)"
        ),
    };
    report::print(&results, args.json);
    Ok(())
}
