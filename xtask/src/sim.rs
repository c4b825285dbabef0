//! `cargo xtask sim <scenario>`: builds `p2pnet-sim` (release unless `--debug`) and runs one of
//! its scenarios, which writes `target/sim/<scenario>.json` and its SVG plots and prints a
//! summary table. A missed goal fails only with `--check`; a harness error always fails.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A scenario of `p2pnet-sim`: its name and what it runs.
struct SimScenario {
    name: &'static str,
    about: &'static str,
}

const SCENARIOS: &[SimScenario] = &[SimScenario {
    name: "kad",
    about: "Kademlia: 1,000 nodes (200 with --quick) join, refresh, 1,000 find_peer lookups, 20 % churn, lookups again",
}];

/// What `cargo xtask sim` was asked.
pub(crate) struct SimArgs {
    pub(crate) scenario: String,
    pub(crate) quick: bool,
    pub(crate) seed: Option<u64>,
    pub(crate) debug: bool,
    pub(crate) check: bool,
    pub(crate) with_rust_libp2p: bool,
    pub(crate) workers: Option<usize>,
    pub(crate) nodes: Option<u32>,
    pub(crate) lookups: Option<usize>,
}

/// The workspace root (xtask lives in `<root>/xtask`).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn run(args: &SimArgs) -> Result<()> {
    let Some(scenario) = SCENARIOS.iter().find(|s| s.name == args.scenario) else {
        let names: Vec<String> = SCENARIOS
            .iter()
            .map(|s| format!("{} ({})", s.name, s.about))
            .collect();
        bail!(
            "unknown scenario {:?}; expected one of: {}",
            args.scenario,
            names.join(", ")
        );
    };
    let root = root();
    let profile = if args.debug { "debug" } else { "release" };
    eprintln!("xtask sim: building p2pnet-sim ({profile})");
    let mut build = Command::new(crate::cargo());
    build
        .current_dir(&root)
        .args(["build", "--quiet", "--package", "p2pnet-sim"]);
    if !args.debug {
        build.arg("--release");
    }
    let status = build.status().context("running cargo build")?;
    if !status.success() {
        bail!("building p2pnet-sim failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let exe = target.join(profile).join("p2pnet-sim");
    let mut cmd = Command::new(&exe);
    cmd.current_dir(&root)
        .args(["run", scenario.name, "--out-dir"])
        .arg(target.join("sim"));
    if args.quick {
        cmd.arg("--quick");
    }
    if args.check {
        cmd.arg("--check");
    }
    if args.with_rust_libp2p {
        cmd.arg("--with-rust-libp2p");
    }
    let numbers = [
        ("--seed", args.seed.map(|v| v.to_string())),
        ("--workers", args.workers.map(|v| v.to_string())),
        ("--nodes", args.nodes.map(|v| v.to_string())),
        ("--lookups", args.lookups.map(|v| v.to_string())),
    ];
    for (flag, value) in numbers {
        if let Some(v) = value {
            cmd.args([flag, &v]);
        }
    }
    eprintln!(
        "xtask sim: running {} {}",
        exe.display(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let status = cmd
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(2) if args.check => bail!("sim {}: goals missed (--check)", scenario.name),
        _ => bail!("sim {} failed ({status})", scenario.name),
    }
}
