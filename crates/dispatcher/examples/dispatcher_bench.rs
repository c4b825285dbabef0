//! Side-by-side throughput benchmark of the dispatcher.
//!
//! ```text
//! cargo run --release -p p2pnet-dispatcher --example dispatcher_bench -- [--quick] [--json] [--only 1to8]
//! ```
//!
//! Each scenario sends messages with 64-byte payloads from P producer threads to S subscribers of
//! one kind, each subscriber draining on its own thread, and reports deliveries per second
//! (messages received by subscribers, all together, per second of wall time from the first send
//! to the last receive) and the drop ratio (dropped / (delivered + dropped)). Rounds alternate
//! p2pnet-dispatcher and the baselines in one process run:
//! - `tokio_broadcast`: one `tokio::sync::broadcast` channel (capacity 4,096), receivers on
//!   threads with `blocking_recv`; a lagged receiver's skipped messages count as drops.
//! - `crossbeam`: the naive dispatcher and the floor: the producer does one `try_send` per
//!   subscriber into per-subscriber bounded crossbeam channels (capacity 4,096), subscribers
//!   blocked in `recv`; a full channel drops the message.
//!
//! Output: a table, or with `--json` one JSON object per line:
//! `{"name", "unit", "median", "min", "max", "baseline", "ratio"}`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use p2pnet_dispatcher::{DeliveryPolicy, Dispatcher, DispatcherConfig, Message, SubscriberOptions};

/// The benchmark message: a kind, a sequence number and a 64-byte payload, inline.
#[derive(Clone, Debug)]
struct BenchMsg {
    kind: u32,
    seq: u64,
    payload: [u8; 64],
}

impl Message for BenchMsg {
    type Kind = u32;
    type Sender = ();

    fn kind(&self) -> &u32 {
        &self.kind
    }

    fn sender(&self) -> &() {
        &()
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

fn message(seq: u64) -> BenchMsg {
    BenchMsg {
        kind: 1,
        seq,
        payload: [seq as u8; 64],
    }
}

/// What a subscriber does with a message: a little work the optimiser cannot remove.
#[inline]
fn consume(sum: &mut u64, message: &BenchMsg) {
    *sum = sum.wrapping_add(message.seq ^ u64::from(message.payload[7]));
}

const CHANNEL_CAPACITY: usize = 4_096;

#[derive(Debug, Clone, Copy)]
struct Outcome {
    delivered: u64,
    dropped: u64,
    seconds: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }

    fn drop_ratio(&self) -> f64 {
        let offered = self.delivered + self.dropped;
        if offered == 0 {
            0.0
        } else {
            self.dropped as f64 / offered as f64
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    DropNewest,
    Block,
}

fn run_dispatcher(producers: usize, subscribers: usize, messages: u64, policy: Policy) -> Outcome {
    let dispatcher = Arc::new(
        Dispatcher::<BenchMsg>::new(DispatcherConfig::default()).expect("valid configuration"),
    );
    let policy = match policy {
        Policy::DropNewest => DeliveryPolicy::DropNewest,
        Policy::Block => DeliveryPolicy::Block {
            timeout: Duration::from_secs(10),
        },
    };
    let received = Arc::new(AtomicU64::new(0));
    let consumers: Vec<_> = (0..subscribers)
        .map(|_| {
            let mut subscriber = dispatcher
                .register(
                    [1],
                    SubscriberOptions::new()
                        .capacity(CHANNEL_CAPACITY)
                        .policy(policy),
                )
                .expect("register");
            let received = Arc::clone(&received);
            std::thread::spawn(move || {
                let mut count = 0u64;
                let mut sum = 0u64;
                while let Ok(message) = subscriber.recv() {
                    consume(&mut sum, &message);
                    count += 1;
                }
                black_box(sum);
                received.fetch_add(count, Ordering::Relaxed);
            })
        })
        .collect();
    dispatcher.start().expect("start");
    let start = Instant::now();
    let per_producer = messages / producers as u64;
    let senders: Vec<_> = (0..producers)
        .map(|_| {
            let sender = dispatcher.sender();
            std::thread::spawn(move || {
                for seq in 0..per_producer {
                    if sender.send(message(seq)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("producer");
    }
    dispatcher.flush(Duration::from_secs(60)).expect("flush");
    dispatcher.stop();
    for consumer in consumers {
        consumer.join().expect("consumer");
    }
    let seconds = start.elapsed().as_secs_f64();
    let metrics = dispatcher.metrics();
    let dropped = metrics.subscribers.iter().map(|s| s.dropped()).sum();
    Outcome {
        delivered: received.load(Ordering::Relaxed),
        dropped,
        seconds,
    }
}

fn run_broadcast(producers: usize, subscribers: usize, messages: u64) -> Outcome {
    let (tx, _) = tokio::sync::broadcast::channel::<BenchMsg>(CHANNEL_CAPACITY);
    let received = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let consumers: Vec<_> = (0..subscribers)
        .map(|_| {
            let mut rx = tx.subscribe();
            let received = Arc::clone(&received);
            let dropped = Arc::clone(&dropped);
            std::thread::spawn(move || {
                use tokio::sync::broadcast::error::RecvError;
                let (mut count, mut lost, mut sum) = (0u64, 0u64, 0u64);
                loop {
                    match rx.blocking_recv() {
                        Ok(message) => {
                            consume(&mut sum, &message);
                            count += 1;
                        }
                        Err(RecvError::Lagged(n)) => lost += n,
                        Err(RecvError::Closed) => break,
                    }
                }
                black_box(sum);
                received.fetch_add(count, Ordering::Relaxed);
                dropped.fetch_add(lost, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    let per_producer = messages / producers as u64;
    let senders: Vec<_> = (0..producers)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for seq in 0..per_producer {
                    let _ = tx.send(message(seq));
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("producer");
    }
    drop(tx);
    for consumer in consumers {
        consumer.join().expect("consumer");
    }
    Outcome {
        delivered: received.load(Ordering::Relaxed),
        dropped: dropped.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn run_crossbeam(producers: usize, subscribers: usize, messages: u64) -> Outcome {
    let received = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let mut txs = Vec::with_capacity(subscribers);
    let consumers: Vec<_> = (0..subscribers)
        .map(|_| {
            let (tx, rx) = crossbeam_channel::bounded::<BenchMsg>(CHANNEL_CAPACITY);
            txs.push(tx);
            let received = Arc::clone(&received);
            std::thread::spawn(move || {
                let (mut count, mut sum) = (0u64, 0u64);
                while let Ok(message) = rx.recv() {
                    consume(&mut sum, &message);
                    count += 1;
                }
                black_box(sum);
                received.fetch_add(count, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    let per_producer = messages / producers as u64;
    let senders: Vec<_> = (0..producers)
        .map(|_| {
            let txs = txs.clone();
            let dropped = Arc::clone(&dropped);
            std::thread::spawn(move || {
                let mut lost = 0u64;
                for seq in 0..per_producer {
                    let message = message(seq);
                    for tx in &txs {
                        if tx.try_send(message.clone()).is_err() {
                            lost += 1;
                        }
                    }
                }
                dropped.fetch_add(lost, Ordering::Relaxed);
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("producer");
    }
    drop(txs);
    for consumer in consumers {
        consumer.join().expect("consumer");
    }
    Outcome {
        delivered: received.load(Ordering::Relaxed),
        dropped: dropped.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Contender {
    Dispatcher(Policy),
    Broadcast,
    Crossbeam,
}

impl Contender {
    fn prefix(self) -> &'static str {
        match self {
            Contender::Dispatcher(Policy::DropNewest) => "dispatcher",
            Contender::Dispatcher(Policy::Block) => "dispatcher.block",
            Contender::Broadcast => "tokio_broadcast",
            Contender::Crossbeam => "crossbeam",
        }
    }

    fn run(self, producers: usize, subscribers: usize, messages: u64) -> Outcome {
        match self {
            Contender::Dispatcher(policy) => {
                run_dispatcher(producers, subscribers, messages, policy)
            }
            Contender::Broadcast => run_broadcast(producers, subscribers, messages),
            Contender::Crossbeam => run_crossbeam(producers, subscribers, messages),
        }
    }
}

struct Scenario {
    producers: usize,
    subscribers: usize,
    /// Messages sent per round (all producers together).
    messages: u64,
    contenders: Vec<Contender>,
}

impl Scenario {
    fn label(&self) -> String {
        format!("{}to{}", self.producers, self.subscribers)
    }
}

struct Row {
    name: String,
    unit: &'static str,
    samples: Vec<f64>,
    baseline: Option<String>,
}

fn stats(samples: &[f64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = if sorted.is_empty() {
        f64::NAN
    } else if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    let min = sorted.first().copied().unwrap_or(f64::NAN);
    let max = sorted.last().copied().unwrap_or(f64::NAN);
    (median, min, max)
}

fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "null".to_owned()
    }
}

fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut quick, mut json, mut only) = (false, false, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--json" => json = true,
            "--only" => only = args.next(),
            _ => {
                eprintln!(
                    "unknown argument {arg:?}; usage: dispatcher_bench [--quick] [--json] [--only 1to8]"
                );
                std::process::exit(2);
            }
        }
    }
    let rounds = if quick { 3 } else { 5 };
    let scale: u64 = if quick { 1 } else { 4 };
    let all = vec![
        Contender::Dispatcher(Policy::DropNewest),
        Contender::Dispatcher(Policy::Block),
        Contender::Broadcast,
        Contender::Crossbeam,
    ];
    let scenarios = vec![
        Scenario {
            producers: 1,
            subscribers: 1,
            messages: 1_000_000 * scale,
            contenders: all.clone(),
        },
        Scenario {
            producers: 1,
            subscribers: 8,
            messages: 500_000 * scale,
            contenders: all.clone(),
        },
        Scenario {
            producers: 1,
            subscribers: 64,
            messages: 100_000 * scale,
            contenders: all.clone(),
        },
        Scenario {
            producers: 4,
            subscribers: 8,
            messages: 500_000 * scale,
            contenders: all,
        },
    ];

    let mut rows: Vec<Row> = Vec::new();
    let wall = Instant::now();
    for scenario in &scenarios {
        let label = scenario.label();
        if only.as_ref().is_some_and(|only| *only != label) {
            continue;
        }
        let mut rates = vec![Vec::new(); scenario.contenders.len()];
        let mut drops = vec![Vec::new(); scenario.contenders.len()];
        for round in 0..rounds {
            // Alternate the order each round so that no contender always runs first.
            let mut order: Vec<usize> = (0..scenario.contenders.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for index in order {
                let contender = scenario.contenders[index];
                let outcome =
                    contender.run(scenario.producers, scenario.subscribers, scenario.messages);
                if !json {
                    eprintln!(
                        "  {label} round {round} {:<18} {:>8.2} M deliveries/s, drop ratio {:.4}",
                        contender.prefix(),
                        outcome.rate() / 1e6,
                        outcome.drop_ratio()
                    );
                }
                rates[index].push(outcome.rate());
                drops[index].push(outcome.drop_ratio());
            }
        }
        for (index, contender) in scenario.contenders.iter().enumerate() {
            let prefix = contender.prefix();
            let baseline = match contender {
                Contender::Dispatcher(_) => Some(format!("crossbeam.deliveries.{label}")),
                _ => None,
            };
            rows.push(Row {
                name: format!("{prefix}.deliveries.{label}"),
                unit: "deliveries/s",
                samples: rates[index].clone(),
                baseline,
            });
            rows.push(Row {
                name: format!("{prefix}.drop_ratio.{label}"),
                unit: "ratio",
                samples: drops[index].clone(),
                baseline: None,
            });
        }
        // Ours against tokio's broadcast as well.
        if let (Some(ours), Some(broadcast)) = (
            scenario
                .contenders
                .iter()
                .position(|c| *c == Contender::Dispatcher(Policy::DropNewest)),
            scenario
                .contenders
                .iter()
                .position(|c| *c == Contender::Broadcast),
        ) {
            let _ = broadcast;
            rows.push(Row {
                name: format!("dispatcher.deliveries.{label}.vs_tokio_broadcast"),
                unit: "deliveries/s",
                samples: rates[ours].clone(),
                baseline: Some(format!("tokio_broadcast.deliveries.{label}")),
            });
        }
    }

    let medians: std::collections::HashMap<String, f64> = rows
        .iter()
        .map(|r| (r.name.clone(), stats(&r.samples).0))
        .collect();
    if json {
        for row in &rows {
            let (median, min, max) = stats(&row.samples);
            let ratio = row
                .baseline
                .as_ref()
                .and_then(|b| medians.get(b))
                .map(|b| median / b);
            println!(
                "{{\"name\": {}, \"unit\": {}, \"median\": {}, \"min\": {}, \"max\": {}, \"baseline\": {}, \"ratio\": {}}}",
                json_string(&row.name),
                json_string(row.unit),
                json_number(median),
                json_number(min),
                json_number(max),
                row.baseline
                    .as_deref()
                    .map_or_else(|| "null".to_owned(), json_string),
                ratio.map_or_else(|| "null".to_owned(), json_number),
            );
        }
    } else {
        println!(
            "p2pnet-dispatcher benchmark: {rounds} rounds, 64-byte payloads, subscriber channels of {CHANNEL_CAPACITY}, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!("| name | median | min – max | unit | ratio |");
        println!("|---|---|---|---|---|");
        for row in &rows {
            let (median, min, max) = stats(&row.samples);
            let ratio = row
                .baseline
                .as_ref()
                .and_then(|b| medians.get(b).map(|v| (b, median / v)));
            let (shown, lo, hi, unit) = if row.unit == "deliveries/s" {
                (median / 1e6, min / 1e6, max / 1e6, "M deliveries/s")
            } else {
                (median * 100.0, min * 100.0, max * 100.0, "% dropped")
            };
            let ratio = ratio.map_or_else(String::new, |(b, r)| {
                format!("{r:.2}× vs {}", b.split('.').next().unwrap_or(b))
            });
            println!(
                "| {} | {shown:.2} | {lo:.2} – {hi:.2} | {unit} | {ratio} |",
                row.name
            );
        }
        println!("(total {:.1} s)", wall.elapsed().as_secs_f64());
    }
}
