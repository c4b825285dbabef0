//! Scenario `kad`: N nodes (200 with `--quick`, 1,000 without) join one by one, each
//! bootstrapping from 3 random earlier nodes; every node then bootstraps again (the refresh
//! round, so that early nodes learn of later ones); then random `find_peer` lookups (random
//! source, random target, the connection between them closed first so the lookup goes through
//! the DHT). Then 20 % of the nodes are killed and living targets are looked up again. The
//! same plan runs on rust-libp2p nodes with `--with-rust-libp2p`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Goal, Options, Report, Scenario};
use crate::plan::KadPlan;
use crate::plot;
use crate::pool::WorkerPool;
use crate::proto::{Backend, LookupStats, PeerAddr, Request, Response};
use crate::stats::{Dist, int_histogram};

/// Nodes with `--quick` and without.
const QUICK_NODES: u32 = 200;
const FULL_NODES: u32 = 1000;
/// Random lookups per phase.
const LOOKUPS: usize = 1000;
/// Bootstrap peers per joining node.
const FANOUT: usize = 3;
/// Percentage of nodes killed by the churn.
const KILL_PERCENT: u32 = 20;
/// Joins (and refresh bootstraps) running at once.
const JOIN_CONCURRENCY: usize = 8;
/// Lookups running at once.
const LOOKUP_CONCURRENCY: usize = 16;
/// Nodes started per `Spawn` request.
const SPAWN_BATCH: usize = 50;
/// The longest one request to a worker may take (a query is bounded by 30 s in both backends).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);
/// Success goals.
const GOAL_FOUND: f64 = 100.0;
const GOAL_FOUND_AFTER_CHURN: f64 = 99.0;

/// The `kad` scenario.
pub(crate) struct Kad;

/// One lookup's outcome.
#[derive(Debug, Clone, Serialize)]
struct Lookup {
    ok: bool,
    stats: LookupStats,
    latency_ms: f64,
    error: Option<String>,
}

/// Everything one backend's run measured.
#[derive(Debug)]
struct BackendRun {
    backend: Backend,
    spawn_secs: f64,
    join_secs: f64,
    refresh_secs: f64,
    join: Vec<Lookup>,
    refresh: Vec<Lookup>,
    tables: Vec<usize>,
    before: Vec<Lookup>,
    churn_secs: f64,
    after: Vec<Lookup>,
    total_secs: f64,
}

fn ceil_log2(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>22} [{bar:40}] {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_owned());
    pb
}

fn lookup_of(r: Response) -> Result<Lookup> {
    match r {
        Response::Lookup {
            ok,
            stats,
            latency_us,
            error,
        } => Ok(Lookup {
            ok,
            stats,
            latency_ms: latency_us as f64 / 1000.0,
            error,
        }),
        other => bail!("expected a lookup result, got {other:?}"),
    }
}

/// Which worker runs node `i`.
fn worker_of(i: u32, workers: usize) -> usize {
    i as usize % workers
}

async fn spawn_all(pool: &WorkerPool, n: u32, pb: &ProgressBar) -> Result<Vec<PeerAddr>> {
    let mut peers: Vec<Option<PeerAddr>> = vec![None; n as usize];
    let mut batches = Vec::new();
    for w in 0..pool.len() {
        let mine: Vec<u32> = (0..n).filter(|&i| worker_of(i, pool.len()) == w).collect();
        for chunk in mine.chunks(SPAWN_BATCH) {
            batches.push((w, chunk.to_vec()));
        }
    }
    // One batch per worker at a time, the workers in parallel.
    let mut calls = futures::stream::iter(batches)
        .map(|(w, nodes)| async move { pool.call(w, Request::Spawn { nodes }, CALL_TIMEOUT).await })
        .buffer_unordered(pool.len());
    while let Some(r) = calls.next().await {
        match r? {
            Response::Spawned { nodes } => {
                pb.inc(nodes.len() as u64);
                for s in nodes {
                    let slot = peers
                        .get_mut(s.node as usize)
                        .context("spawned an unplanned node")?;
                    *slot = Some(s.peer);
                }
            }
            other => bail!("expected spawned nodes, got {other:?}"),
        }
    }
    peers
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.with_context(|| format!("node {i} was not started")))
        .collect()
}

async fn bootstrap_all(
    pool: &WorkerPool,
    nodes: impl Iterator<Item = u32>,
    add: Option<(&KadPlan, &[PeerAddr])>,
    pb: &ProgressBar,
) -> Result<Vec<Lookup>> {
    let w = pool.len();
    let mut calls = futures::stream::iter(nodes)
        .map(|i| async move {
            if let Some((plan, peers)) = add {
                let seeds = plan.seeds[i as usize]
                    .iter()
                    .map(|&s| peers[s as usize].clone())
                    .collect();
                pool.call(
                    worker_of(i, w),
                    Request::AddPeers {
                        node: i,
                        peers: seeds,
                    },
                    CALL_TIMEOUT,
                )
                .await?;
            }
            let r = pool
                .call(
                    worker_of(i, w),
                    Request::Bootstrap { node: i },
                    CALL_TIMEOUT,
                )
                .await?;
            lookup_of(r)
        })
        .buffered(JOIN_CONCURRENCY);
    let mut out = Vec::new();
    while let Some(r) = calls.next().await {
        out.push(r?);
        pb.inc(1);
    }
    Ok(out)
}

async fn lookups(
    pool: &WorkerPool,
    pairs: &[(u32, u32)],
    peers: &[PeerAddr],
    pb: &ProgressBar,
) -> Result<Vec<Lookup>> {
    let w = pool.len();
    let mut calls = futures::stream::iter(pairs.iter().copied())
        .map(|(s, t)| async move {
            let r = pool
                .call(
                    worker_of(s, w),
                    Request::FindPeer {
                        node: s,
                        target: peers[t as usize].peer.clone(),
                        cold: true,
                    },
                    CALL_TIMEOUT,
                )
                .await?;
            lookup_of(r)
        })
        .buffer_unordered(LOOKUP_CONCURRENCY);
    let mut out = Vec::with_capacity(pairs.len());
    let mut found = 0usize;
    while let Some(r) = calls.next().await {
        let l = r?;
        found += usize::from(l.ok);
        out.push(l);
        pb.inc(1);
        pb.set_message(format!("{found} found"));
    }
    Ok(out)
}

async fn tables(pool: &WorkerPool, n: u32) -> Result<Vec<usize>> {
    let w = pool.len();
    let calls = (0..w).map(|k| {
        let nodes: Vec<u32> = (0..n).filter(|&i| worker_of(i, w) == k).collect();
        pool.call(k, Request::Tables { nodes }, CALL_TIMEOUT)
    });
    let mut sizes = vec![0usize; n as usize];
    for r in futures::future::join_all(calls).await {
        match r? {
            Response::Tables { sizes: s } => {
                for (i, size) in s {
                    if let Some(slot) = sizes.get_mut(i as usize) {
                        *slot = size;
                    }
                }
            }
            other => bail!("expected table sizes, got {other:?}"),
        }
    }
    Ok(sizes)
}

async fn kill(pool: &WorkerPool, killed: &[u32]) -> Result<()> {
    let w = pool.len();
    let calls = (0..w).map(|k| {
        let nodes: Vec<u32> = killed
            .iter()
            .copied()
            .filter(|&i| worker_of(i, w) == k)
            .collect();
        pool.call(k, Request::Kill { nodes }, CALL_TIMEOUT)
    });
    for r in futures::future::join_all(calls).await {
        r?;
    }
    Ok(())
}

async fn run_on(pool: &WorkerPool, plan: &KadPlan, backend: Backend) -> Result<BackendRun> {
    let name = backend.name();
    let started = Instant::now();
    let pb = bar(plan.n as usize, &format!("{name}: start"));
    let peers = spawn_all(pool, plan.n, &pb).await?;
    pb.finish();
    let spawn_secs = started.elapsed().as_secs_f64();

    let t = Instant::now();
    let pb = bar(plan.n as usize - 1, &format!("{name}: join"));
    let join = bootstrap_all(pool, 1..plan.n, Some((plan, &peers)), &pb).await?;
    pb.finish();
    let join_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let pb = bar(plan.n as usize, &format!("{name}: refresh"));
    let refresh = bootstrap_all(pool, 0..plan.n, None, &pb).await?;
    pb.finish();
    let refresh_secs = t.elapsed().as_secs_f64();

    let tables = tables(pool, plan.n).await?;

    let pb = bar(plan.lookups.len(), &format!("{name}: lookups"));
    let before = lookups(pool, &plan.lookups, &peers, &pb).await?;
    pb.finish();

    let t = Instant::now();
    kill(pool, &plan.killed).await?;
    let churn_secs = t.elapsed().as_secs_f64();
    let pb = bar(plan.after.len(), &format!("{name}: after churn"));
    let after = lookups(pool, &plan.after, &peers, &pb).await?;
    pb.finish();

    Ok(BackendRun {
        backend,
        spawn_secs,
        join_secs,
        refresh_secs,
        join,
        refresh,
        tables,
        before,
        churn_secs,
        after,
        total_secs: started.elapsed().as_secs_f64(),
    })
}

async fn run_backend(plan: &KadPlan, backend: Backend, opts: &Options) -> Result<BackendRun> {
    let pool = WorkerPool::start(opts.workers, backend, &opts.worker_log)?;
    let result = run_on(&pool, plan, backend).await;
    let closed = pool.close().await;
    let run = result?;
    closed.context("closing the workers")?;
    Ok(run)
}

fn success_rate(ls: &[Lookup]) -> f64 {
    if ls.is_empty() {
        return 0.0;
    }
    100.0 * ls.iter().filter(|l| l.ok).count() as f64 / ls.len() as f64
}

fn hops(ls: &[Lookup]) -> Vec<u64> {
    ls.iter()
        .filter(|l| l.ok)
        .filter_map(|l| l.stats.hops.map(u64::from))
        .collect()
}

fn phase_json(ls: &[Lookup]) -> Value {
    let ok: Vec<&Lookup> = ls.iter().filter(|l| l.ok).collect();
    let hops = hops(ls);
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for l in ls.iter().filter(|l| !l.ok) {
        *errors
            .entry(l.error.clone().unwrap_or_else(|| "?".into()))
            .or_default() += 1;
    }
    json!({
        "lookups": ls.len(),
        "found": ok.len(),
        "success_rate_percent": success_rate(ls),
        "hops": if hops.is_empty() { Value::Null } else {
            json!({
                "dist": Dist::of(hops.iter().map(|&h| h as f64)),
                "histogram": int_histogram(hops.iter().copied()),
            })
        },
        "latency_ms": Dist::of(ok.iter().map(|l| l.latency_ms)),
        "latency_all_ms": Dist::of(ls.iter().map(|l| l.latency_ms)),
        "requests_per_lookup": Dist::of(ls.iter().map(|l| f64::from(l.stats.requests))),
        "failed_requests_per_lookup": Dist::of(ls.iter().map(|l| f64::from(l.stats.failures))),
        "timed_out": ls.iter().filter(|l| l.stats.timed_out).count(),
        "errors": errors,
    })
}

fn backend_json(r: &BackendRun) -> Value {
    json!({
        "implementation": r.backend.name(),
        "seconds": {
            "start": r.spawn_secs, "join": r.join_secs, "refresh": r.refresh_secs,
            "kill": r.churn_secs, "total": r.total_secs,
        },
        "join_bootstrap": phase_json(&r.join),
        "refresh_bootstrap": phase_json(&r.refresh),
        "routing_table": {
            "dist": Dist::of(r.tables.iter().map(|&s| s as f64)),
            "histogram": int_histogram(r.tables.iter().map(|&s| s as u64)),
        },
        "before_churn": phase_json(&r.before),
        "after_churn": phase_json(&r.after),
    })
}

fn goals(r: &BackendRun, n: u32) -> Vec<Goal> {
    let name = r.backend.name();
    let found = success_rate(&r.before);
    let after = success_rate(&r.after);
    let mut g = vec![Goal {
        name: format!("{name}: found before churn"),
        goal: format!("= {GOAL_FOUND:.0} %"),
        value: format!("{found:.1} %"),
        met: found >= GOAL_FOUND,
    }];
    let h = hops(&r.before);
    if !h.is_empty() {
        let p99 = Dist::of(h.iter().map(|&x| x as f64)).p99;
        let bound = ceil_log2(n);
        g.push(Goal {
            name: format!("{name}: hops p99"),
            goal: format!("≤ ⌈log2 N⌉ = {bound}"),
            value: format!("{p99:.0}"),
            met: p99 <= f64::from(bound),
        });
    }
    g.push(Goal {
        name: format!("{name}: found after {KILL_PERCENT} % churn"),
        goal: format!("≥ {GOAL_FOUND_AFTER_CHURN:.0} %"),
        value: format!("{after:.1} %"),
        met: after >= GOAL_FOUND_AFTER_CHURN,
    });
    g
}

/// The rows of the summary table: a label and a value per run.
fn summary(runs: &[BackendRun], goals: &[Goal], header: &str) -> String {
    use std::fmt::Write as _;
    type Metric = fn(&BackendRun) -> Option<f64>;
    let rows: &[(&str, Metric, &str)] = &[
        (
            "found before churn %",
            |r| Some(success_rate(&r.before)),
            "%.1",
        ),
        (
            "hops median",
            |r| hop_dist(&r.before).map(|d| d.median),
            "%.0",
        ),
        ("hops p99", |r| hop_dist(&r.before).map(|d| d.p99), "%.0"),
        ("latency median ms", |r| Some(lat(&r.before).median), "%.1"),
        ("latency p99 ms", |r| Some(lat(&r.before).p99), "%.1"),
        (
            "requests per lookup (mean)",
            |r| Some(reqs(&r.before).mean),
            "%.1",
        ),
        (
            "requests per lookup p99",
            |r| Some(reqs(&r.before).p99),
            "%.0",
        ),
        ("routing table median", |r| Some(table(r).median), "%.0"),
        ("routing table min", |r| Some(table(r).min), "%.0"),
        ("routing table max", |r| Some(table(r).max), "%.0"),
        (
            "found after churn %",
            |r| Some(success_rate(&r.after)),
            "%.1",
        ),
        (
            "hops p99 after churn",
            |r| hop_dist(&r.after).map(|d| d.p99),
            "%.0",
        ),
        (
            "latency median after churn ms",
            |r| Some(lat(&r.after).median),
            "%.1",
        ),
        (
            "latency p99 after churn ms",
            |r| Some(lat(&r.after).p99),
            "%.1",
        ),
        (
            "requests per lookup after churn",
            |r| Some(reqs(&r.after).mean),
            "%.1",
        ),
        (
            "failed requests after churn",
            |r| Some(Dist::of(r.after.iter().map(|l| f64::from(l.stats.failures))).mean),
            "%.1",
        ),
        (
            "join + refresh s",
            |r| Some(r.join_secs + r.refresh_secs),
            "%.1",
        ),
    ];
    let fmt = |v: Option<f64>, spec: &str| match (v, spec) {
        (None, _) => "n/a".to_owned(),
        (Some(v), "%.0") => format!("{v:.0}"),
        (Some(v), _) => format!("{v:.1}"),
    };
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let mut head = format!("{:<34}", "metric");
    for r in runs {
        let _ = write!(head, " {:>12}", r.backend.name());
    }
    if runs.len() == 2 {
        let _ = write!(head, " {:>8}", "ratio");
    }
    let _ = writeln!(out, "{head}");
    for (label, f, spec) in rows {
        let mut line = format!("{label:<34}");
        let vals: Vec<Option<f64>> = runs.iter().map(f).collect();
        for v in &vals {
            let _ = write!(line, " {:>12}", fmt(*v, spec));
        }
        if let [Some(a), Some(b)] = vals[..] {
            let ratio = if b == 0.0 {
                "-".to_owned()
            } else {
                format!("{:.2}", a / b)
            };
            let _ = write!(line, " {ratio:>8}");
        }
        let _ = writeln!(out, "{line}");
    }
    if runs.len() == 2 {
        let _ = writeln!(
            out,
            "(ratio = {} / {})",
            runs[0].backend.name(),
            runs[1].backend.name()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<40} {:<18} {:>10}  met", "goal", "target", "value");
    for g in goals {
        let _ = writeln!(
            out,
            "{:<40} {:<18} {:>10}  {}",
            g.name,
            g.goal,
            g.value,
            if g.met { "yes" } else { "NO" }
        );
    }
    out
}

fn hop_dist(ls: &[Lookup]) -> Option<Dist> {
    let h = hops(ls);
    (!h.is_empty()).then(|| Dist::of(h.iter().map(|&x| x as f64)))
}
fn lat(ls: &[Lookup]) -> Dist {
    Dist::of(ls.iter().filter(|l| l.ok).map(|l| l.latency_ms))
}
fn reqs(ls: &[Lookup]) -> Dist {
    Dist::of(ls.iter().map(|l| f64::from(l.stats.requests)))
}
fn table(r: &BackendRun) -> Dist {
    Dist::of(r.tables.iter().map(|&s| s as f64))
}

fn plots(runs: &[BackendRun], opts: &Options, name: &str) -> Result<Vec<std::path::PathBuf>> {
    let dir = &opts.out_dir;
    let mut written = Vec::new();
    // Hops: a bar per hop count and phase, for the implementations that report hops.
    let mut series = Vec::new();
    for r in runs {
        for (phase, ls) in [("before churn", &r.before), ("after churn", &r.after)] {
            let h = hops(ls);
            if h.is_empty() {
                continue;
            }
            let total = h.len() as f64;
            let bars = int_histogram(h)
                .into_iter()
                .map(|(v, c)| (v as f64, 100.0 * c as f64 / total))
                .collect();
            series.push((format!("{} {phase}", r.backend.name()), bars));
        }
    }
    let path = dir.join(format!("{name}-hops.svg"));
    plot::bars(
        &path,
        "find_peer hops",
        "hops",
        "% of found lookups",
        &series,
        1.0,
    )?;
    written.push(path);

    // Latency: the distribution function of each implementation and phase.
    let mut lines = Vec::new();
    for r in runs {
        for (phase, ls) in [("before churn", &r.before), ("after churn", &r.after)] {
            let v: Vec<f64> = ls.iter().filter(|l| l.ok).map(|l| l.latency_ms).collect();
            lines.push((format!("{} {phase}", r.backend.name()), v));
        }
    }
    let path = dir.join(format!("{name}-latency.svg"));
    plot::cdf(&path, "find_peer latency (found lookups)", "ms", &lines)?;
    written.push(path);

    // Requests per lookup.
    let mut lines = Vec::new();
    for r in runs {
        for (phase, ls) in [("before churn", &r.before), ("after churn", &r.after)] {
            let v: Vec<f64> = ls.iter().map(|l| f64::from(l.stats.requests)).collect();
            lines.push((format!("{} {phase}", r.backend.name()), v));
        }
    }
    let path = dir.join(format!("{name}-requests.svg"));
    plot::cdf(&path, "requests per find_peer", "requests", &lines)?;
    written.push(path);

    // Routing table sizes, binned.
    let max = runs
        .iter()
        .flat_map(|r| r.tables.iter().copied())
        .max()
        .unwrap_or(0);
    let width = (max / 25).max(1);
    let series: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|r| {
            let bins = int_histogram(r.tables.iter().map(|&s| (s / width) as u64))
                .into_iter()
                .map(|(b, c)| ((b as usize * width) as f64, c as f64))
                .collect();
            (r.backend.name().to_owned(), bins)
        })
        .collect();
    let path = dir.join(format!("{name}-table.svg"));
    plot::bars(
        &path,
        "routing table sizes (after the refresh)",
        "entries",
        "nodes",
        &series,
        width as f64,
    )?;
    written.push(path);
    Ok(written)
}

impl Scenario for Kad {
    fn name(&self) -> &'static str {
        "kad"
    }

    async fn run(&self, opts: &Options) -> Result<Report> {
        let n = opts
            .nodes
            .unwrap_or(if opts.quick { QUICK_NODES } else { FULL_NODES });
        if n < 2 {
            bail!("the kad scenario needs at least 2 nodes");
        }
        let count = opts.lookups.unwrap_or(LOOKUPS);
        let plan = KadPlan::new(n, FANOUT, count, KILL_PERCENT, opts.seed);
        let mut runs = vec![run_backend(&plan, Backend::Ours, opts).await?];
        if opts.with_rust_libp2p {
            runs.push(run_backend(&plan, Backend::RustLibp2p, opts).await?);
        }
        let goals: Vec<Goal> = runs.iter().flat_map(|r| goals(r, n)).collect();
        let header = format!(
            "kad · N = {n} · seed {} · {} workers · {count} lookups per phase · {} % killed",
            opts.seed, opts.workers, KILL_PERCENT
        );
        let summary = summary(&runs, &goals, &header);
        let mut json = json!({
            "scenario": "kad",
            "nodes": n,
            "seed": opts.seed,
            "quick": opts.quick,
            "workers": opts.workers,
            "bootstrap_peers_per_node": FANOUT,
            "lookups_per_phase": count,
            "killed": plan.killed.len(),
            "hops_goal": ceil_log2(n),
            "implementations": runs.iter().map(backend_json).collect::<Vec<_>>(),
            "goals": goals,
        });
        if let [ours, rust] = &runs[..] {
            let ratio = |a: f64, b: f64| if b == 0.0 { Value::Null } else { json!(a / b) };
            json["ratios_p2pnet_over_rust_libp2p"] = json!({
                "latency_median": ratio(lat(&ours.before).median, lat(&rust.before).median),
                "latency_p99": ratio(lat(&ours.before).p99, lat(&rust.before).p99),
                "requests_mean": ratio(reqs(&ours.before).mean, reqs(&rust.before).mean),
                "table_median": ratio(table(ours).median, table(rust).median),
                "latency_median_after_churn": ratio(lat(&ours.after).median, lat(&rust.after).median),
                "requests_mean_after_churn": ratio(reqs(&ours.after).mean, reqs(&rust.after).mean),
            });
        }
        std::fs::create_dir_all(&opts.out_dir)
            .with_context(|| format!("creating {}", opts.out_dir.display()))?;
        let plots = plots(&runs, opts, self.name())?;
        Ok(Report {
            json,
            goals,
            summary,
            plots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ceil_log2;

    #[test]
    fn ceil_log2_of_network_sizes() {
        assert_eq!(ceil_log2(200), 8);
        assert_eq!(ceil_log2(1000), 10);
        assert_eq!(ceil_log2(1024), 10);
        assert_eq!(ceil_log2(1025), 11);
        assert_eq!(ceil_log2(2), 1);
    }
}
