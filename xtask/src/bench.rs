//! `cargo xtask bench`: runs every benchmark group in release mode, side by side, and writes one
//! report (`target/bench/report.json`) with the machine it ran on.
//!
//! Each group is a program that prints one JSON object per result line (`--json`):
//! `{"name","unit","median","min","max","baseline","ratio"}`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// A benchmark group: the package and target that implement it.
struct Group {
    name: &'static str,
    package: &'static str,
    /// `None` for the package's binary, `Some(example)` for an example.
    example: Option<&'static str>,
    args: &'static [&'static str],
}

const GROUPS: &[Group] = &[
    Group {
        name: "host",
        package: "p2pnet-bench",
        example: None,
        args: &["host"],
    },
    Group {
        name: "dispatcher",
        package: "p2pnet-dispatcher",
        example: Some("dispatcher_bench"),
        args: &[],
    },
    Group {
        name: "messaging",
        package: "p2pnet-messaging",
        example: Some("messaging_bench"),
        args: &[],
    },
    Group {
        name: "forward",
        package: "p2pnet-bench",
        example: None,
        args: &["forward"],
    },
    Group {
        name: "scale",
        package: "p2pnet-bench",
        example: None,
        args: &["scale"],
    },
];

fn available(group: &Group) -> bool {
    match group.example {
        None => true,
        Some(example) => {
            let dir = group.package.trim_start_matches("p2pnet-");
            Path::new("crates")
                .join(dir)
                .join("examples")
                .join(format!("{example}.rs"))
                .exists()
        }
    }
}

pub(crate) fn run(which: &str, quick: bool) -> Result<()> {
    let selected: Vec<&Group> = GROUPS
        .iter()
        .filter(|g| which == "all" || g.name == which)
        .collect();
    if selected.is_empty() {
        bail!(
            "unknown group {which:?}; expected one of host, dispatcher, messaging, forward, scale, all"
        );
    }
    let mut results = Vec::new();
    for group in selected {
        if !available(group) {
            eprintln!(
                "xtask bench: skipping {} (its benchmark does not exist yet)",
                group.name
            );
            continue;
        }
        eprintln!(
            "xtask bench: running {}{}",
            group.name,
            if quick { " (quick)" } else { "" }
        );
        let mut cmd = Command::new(crate::cargo());
        cmd.args(["run", "--quiet", "--release", "--package", group.package]);
        if let Some(example) = group.example {
            cmd.args(["--example", example]);
        }
        cmd.arg("--").args(group.args).arg("--json");
        if quick {
            cmd.arg("--quick");
        }
        let out = cmd
            .output()
            .with_context(|| format!("running the {} benchmark", group.name))?;
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            bail!("the {} benchmark failed", group.name);
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line)
                && v.get("name").is_some()
            {
                results.push(v);
            }
        }
    }
    let report = json!({ "machine": machine(), "quick": quick, "results": results });
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(
        "target/bench/report.json",
        serde_json::to_string_pretty(&report)?,
    )?;
    print_table(&report);
    eprintln!("xtask bench: wrote target/bench/report.json");
    Ok(())
}

fn machine() -> Value {
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
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    json!({ "cpu": cpu, "cores": cores, "kernel": kernel })
}

fn print_table(report: &Value) {
    let m = &report["machine"];
    println!(
        "machine: {} · {} cores · kernel {}",
        m["cpu"], m["cores"], m["kernel"]
    );
    println!(
        "{:<42} {:>14} {:<9} {:>23}  ratio (>1 is better for us)",
        "name", "median", "unit", "min – max"
    );
    for r in report["results"].as_array().into_iter().flatten() {
        let num = |k: &str| r[k].as_f64().map_or("-".into(), |v| format!("{v:.1}"));
        let ratio = match (r["ratio"].as_f64(), r["baseline"].as_str()) {
            (Some(x), Some(b)) => format!("{x:.2}× vs {b}"),
            _ => String::new(),
        };
        println!(
            "{:<42} {:>14} {:<9} {:>23}  {}",
            r["name"].as_str().unwrap_or("?"),
            num("median"),
            r["unit"].as_str().unwrap_or(""),
            format!("{} – {}", num("min"), num("max")),
            ratio
        );
    }
}
