//! `cargo xtask interop-js`: the interoperability tests against js-libp2p
//! (`tests/tests/interop_js_libp2p.rs`, peer in `interop/js/`). Needs Node.js ≥ 20 and npm; `cargo
//! xtask ci` runs it with `--if-available`, skipping (and saying why) without them.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The longest `npm ci` may take.
const NPM_CI_LIMIT: Duration = Duration::from_secs(180);

/// The oldest Node.js major version the js peer runs on.
const NODE_MIN_MAJOR: u32 = 20;

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("interop")
        .join("js")
}

/// The `node` command (`NODE` overrides it, as in the tests).
fn node() -> String {
    std::env::var("NODE").unwrap_or_else(|_| "node".to_owned())
}

/// Checks that Node.js ≥ 20 is installed; returns its version.
fn check_node() -> Result<String> {
    let out = Command::new(node()).arg("--version").output().with_context(|| {
        format!(
            "Node.js is not installed (could not run `{}`); install Node.js {NODE_MIN_MAJOR} or \
             newer, or point NODE at it",
            node()
        )
    })?;
    if !out.status.success() {
        bail!(
            "`{} --version` failed: {}",
            node(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .with_context(|| format!("cannot read the Node.js version from `{version}`"))?;
    if major < NODE_MIN_MAJOR {
        bail!(
            "Node.js {version} is too old: the js-libp2p peer needs Node.js {NODE_MIN_MAJOR} or newer"
        );
    }
    Ok(version)
}

/// Node.js checked and the js peer installed: its Node.js version.
fn prepare() -> Result<String> {
    let version = check_node()?;
    eprintln!("xtask interop-js: Node.js {version}");
    let dir = js_dir();
    eprintln!("xtask interop-js: npm ci in {}", dir.display());
    // Bounded: a registry that cannot be reached must not hold CI for npm's default 5-minute
    // fetch timeouts and retries.
    let mut child = Command::new("npm")
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--fetch-timeout=30000",
            "--fetch-retries=1",
        ])
        .current_dir(&dir)
        .spawn()
        .context("could not run `npm` (it comes with Node.js)")?;
    let deadline = Instant::now() + NPM_CI_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`npm ci` did not finish within {NPM_CI_LIMIT:?} (no npm registry?)");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        bail!("`npm ci` failed in {}", dir.display());
    }
    Ok(version)
}

pub(crate) fn run(if_available: bool) -> Result<()> {
    match prepare() {
        Ok(_) => {}
        Err(e) if if_available => {
            eprintln!("xtask interop-js: skipped: {e:#}");
            return Ok(());
        }
        Err(e) => return Err(e),
    }

    crate::run_ignored_tests("interop_js_libp2p", "the js-libp2p interop tests")?;
    eprintln!("xtask interop-js: ok");
    Ok(())
}
