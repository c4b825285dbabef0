//! Scenarios as code. A scenario gets the run's [`Options`], drives worker pools and returns a
//! [`Report`]: its JSON, its goals and its plots. A new scenario (pubsub, NAT…) is a new type
//! implementing [`Scenario`] and a row in [`ScenarioName`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

pub(crate) mod kad;

/// The scenarios there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ScenarioName {
    /// Kademlia: join, refresh, random `find_peer` lookups, then 20 % churn and lookups again.
    Kad,
}

/// What every scenario is given.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Smaller network (the CI size).
    pub(crate) quick: bool,
    /// The seed every plan derives from.
    pub(crate) seed: u64,
    /// Worker processes per network.
    pub(crate) workers: usize,
    /// Nodes, overriding the scenario's size.
    pub(crate) nodes: Option<u32>,
    /// Lookups (or operations) per phase, overriding the scenario's.
    pub(crate) lookups: Option<usize>,
    /// Also run the scenario on rust-libp2p nodes and report both.
    pub(crate) with_rust_libp2p: bool,
    /// The log filter of the workers.
    pub(crate) worker_log: String,
    /// Where the JSON and the plots go.
    pub(crate) out_dir: PathBuf,
    /// The longest the whole scenario may take.
    pub(crate) timeout: Duration,
}

/// One goal of a scenario and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Goal {
    /// What is measured, with the implementation (`p2pnet: found before churn`).
    pub(crate) name: String,
    /// The goal in words (`= 100 %`, `≤ 8`).
    pub(crate) goal: String,
    /// The measured value in words.
    pub(crate) value: String,
    /// Whether it was met.
    pub(crate) met: bool,
}

/// What a scenario returns.
#[derive(Debug)]
pub(crate) struct Report {
    /// Everything measured (written to `<out>/<scenario>.json`).
    pub(crate) json: Value,
    /// Its goals (also in the JSON).
    pub(crate) goals: Vec<Goal>,
    /// The human summary (a table), printed at the end.
    pub(crate) summary: String,
    /// The plots written.
    pub(crate) plots: Vec<PathBuf>,
}

/// A scenario.
pub(crate) trait Scenario {
    /// Its name: the JSON is `<name>.json`, the plots `<name>-*.svg`.
    fn name(&self) -> &'static str;
    /// Runs it. An error is a harness error (a worker died, a call timed out), never a missed
    /// goal: goals go in the report.
    async fn run(&self, opts: &Options) -> Result<Report>;
}
