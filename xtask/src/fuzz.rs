//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/` for a fixed time, failing on a crash.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

fn has_cargo_fuzz() -> bool {
    Command::new(crate::cargo())
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn targets() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("fuzz/fuzz_targets").context("reading fuzz/fuzz_targets")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem()
        {
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

pub(crate) fn run(seconds: u64, only: Option<&str>) -> Result<()> {
    if !has_cargo_fuzz() {
        eprintln!("xtask fuzz: installing cargo-fuzz");
        let status = Command::new(crate::cargo())
            .args(["install", "cargo-fuzz", "--locked"])
            .status()?;
        if !status.success() {
            bail!("could not install cargo-fuzz");
        }
    }
    let all = targets()?;
    let selected: Vec<&String> = all
        .iter()
        .filter(|t| only.is_none_or(|o| o == *t))
        .collect();
    if selected.is_empty() {
        bail!("no fuzz target matches; targets: {all:?}");
    }
    for target in selected {
        eprintln!("xtask fuzz: {target} for {seconds}s");
        let corpus = Path::new("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let status = Command::new(crate::cargo())
            .current_dir("fuzz")
            // cargo-fuzz passes nightly-only sanitizer flags; this is the stable toolchain.
            .env("RUSTC_BOOTSTRAP", "1")
            .args([
                "fuzz",
                "run",
                target,
                "--",
                &format!("-max_total_time={seconds}"),
            ])
            .status()
            .with_context(|| format!("running fuzz target {target}"))?;
        if !status.success() {
            bail!(
                "fuzz target {target} found a crash: see fuzz/artifacts/{target}/, copy the input to \
                 fuzz/regressions/{target}/ and fix it"
            );
        }
        eprintln!("xtask fuzz: ok {target}");
    }
    Ok(())
}
