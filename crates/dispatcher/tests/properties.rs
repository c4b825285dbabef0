//! Property tests: random sequences of sends, registrations, deregistrations, receptions and
//! filter switches, checked against an exact model of the dispatcher.
//!
//! Every operation other than a send is preceded by `flush()`, so the dispatch loop has offered
//! every earlier message before the test thread acts again: the outcome is then fully determined
//! by the sequence, whatever the loop's batching and timing.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};

use common::{PATIENCE, TestMsg};
use p2pnet_dispatcher::{
    DispatchError, Dispatcher, DispatcherConfig, Subscriber, SubscriberOptions,
};
use proptest::prelude::*;

const KINDS: u8 = 4;
const DEDUP_CAPACITY: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Send {
        kind: u8,
        hash: Option<u64>,
    },
    Register {
        kinds: Vec<u8>,
        capacity: usize,
        dedup: bool,
    },
    Deregister {
        which: usize,
    },
    Recv {
        which: usize,
        n: usize,
    },
    SetDedup {
        kind: u8,
        on: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..KINDS + 1, proptest::option::weighted(0.6, 0u64..5))
            .prop_map(|(kind, hash)| Op::Send { kind, hash }),
        2 => (proptest::collection::vec(0..KINDS, 1..3), 1usize..6, any::<bool>())
            .prop_map(|(kinds, capacity, dedup)| Op::Register { kinds, capacity, dedup }),
        1 => any::<usize>().prop_map(|which| Op::Deregister { which }),
        3 => (any::<usize>(), 1usize..6).prop_map(|(which, n)| Op::Recv { which, n }),
        1 => (0..KINDS, any::<bool>()).prop_map(|(kind, on)| Op::SetDedup { kind, on }),
    ]
}

/// The model of one subscriber.
struct ModelSubscriber {
    kinds: Vec<u8>,
    capacity: usize,
    dedup: bool,
    live: bool,
    /// In the channel.
    inbox: VecDeque<u64>,
    /// Taken by the consumer, not yet returned.
    hand: VecDeque<u64>,
    delivered: HashMap<u8, u64>,
    dropped: HashMap<u8, u64>,
}

impl ModelSubscriber {
    fn recv(&mut self) -> Option<u64> {
        if self.hand.is_empty() {
            self.hand.append(&mut self.inbox);
        }
        self.hand.pop_front()
    }
}

#[derive(Default)]
struct Model {
    subscribers: Vec<ModelSubscriber>,
    explicit_dedup: HashSet<u8>,
    windows: HashMap<u8, VecDeque<u64>>,
    received: u64,
    unknown: u64,
    dispatched: HashMap<u8, u64>,
    duplicates: HashMap<u8, u64>,
}

impl Model {
    fn dedup_on(&self, kind: u8) -> bool {
        self.explicit_dedup.contains(&kind)
            || self
                .subscribers
                .iter()
                .any(|s| s.live && s.dedup && s.kinds.contains(&kind))
    }

    /// Forgets the window of every kind whose filter is off (as the loop does when it sees the
    /// new routing table).
    fn prune_windows(&mut self) {
        let on: HashSet<u8> = (0..=KINDS).filter(|k| self.dedup_on(*k)).collect();
        self.windows.retain(|kind, _| on.contains(kind));
    }

    fn send(&mut self, kind: u8, hash: Option<u64>, seq: u64) {
        self.received += 1;
        if !self
            .subscribers
            .iter()
            .any(|s| s.live && s.kinds.contains(&kind))
        {
            self.unknown += 1;
            return;
        }
        if let (true, Some(hash)) = (self.dedup_on(kind), hash) {
            let window = self.windows.entry(kind).or_default();
            if window.contains(&hash) {
                *self.duplicates.entry(kind).or_default() += 1;
                return;
            }
            if window.len() == DEDUP_CAPACITY {
                window.pop_front();
            }
            window.push_back(hash);
        }
        *self.dispatched.entry(kind).or_default() += 1;
        for s in self
            .subscribers
            .iter_mut()
            .filter(|s| s.live && s.kinds.contains(&kind))
        {
            if s.inbox.len() < s.capacity {
                s.inbox.push_back(seq);
                *s.delivered.entry(kind).or_default() += 1;
            } else {
                *s.dropped.entry(kind).or_default() += 1;
            }
        }
    }
}

fn run(ops: Vec<Op>, max_batch: usize) -> Result<(), TestCaseError> {
    let config = DispatcherConfig::default()
        .with_dedup_capacity(DEDUP_CAPACITY)
        .with_max_batch(max_batch)
        .with_queue_capacity(256);
    let dispatcher = Dispatcher::<TestMsg>::new(config).expect("valid config");
    dispatcher.start().expect("start");
    let sender = dispatcher.sender();
    let mut model = Model::default();
    let mut real: Vec<Subscriber<TestMsg>> = Vec::new();
    let mut kinds_of_seq: HashMap<u64, u8> = HashMap::new();
    let mut seq = 0u64;
    for op in ops {
        if !matches!(op, Op::Send { .. }) {
            dispatcher.flush(PATIENCE).expect("flush");
            model.prune_windows();
        }
        match op {
            Op::Send { kind, hash } => {
                let mut message = TestMsg::new(kind, seq);
                message.hash = hash;
                sender.send(message).expect("send");
                model.send(kind, hash, seq);
                kinds_of_seq.insert(seq, kind);
                seq += 1;
            }
            Op::Register {
                kinds,
                capacity,
                dedup,
            } => {
                let options = SubscriberOptions::new()
                    .capacity(capacity)
                    .filter_duplicates(dedup);
                real.push(
                    dispatcher
                        .register(kinds.clone(), options)
                        .expect("register"),
                );
                let mut distinct = Vec::new();
                for kind in kinds {
                    if !distinct.contains(&kind) {
                        distinct.push(kind);
                    }
                }
                model.subscribers.push(ModelSubscriber {
                    kinds: distinct,
                    capacity,
                    dedup,
                    live: true,
                    inbox: VecDeque::new(),
                    hand: VecDeque::new(),
                    delivered: HashMap::new(),
                    dropped: HashMap::new(),
                });
            }
            Op::Deregister { which } => {
                if real.is_empty() {
                    continue;
                }
                let which = which % real.len();
                let result = dispatcher.deregister(real[which].handle());
                prop_assert_eq!(result.is_ok(), model.subscribers[which].live);
                model.subscribers[which].live = false;
            }
            Op::Recv { which, n } => {
                if real.is_empty() {
                    continue;
                }
                let which = which % real.len();
                for _ in 0..n {
                    let expected = model.subscribers[which].recv();
                    match (real[which].try_recv(), expected) {
                        (Ok(message), Some(expected)) => prop_assert_eq!(message.seq, expected),
                        (Err(DispatchError::Empty), None) => {
                            prop_assert!(model.subscribers[which].live)
                        }
                        (Err(DispatchError::Closed), None) => {
                            prop_assert!(!model.subscribers[which].live)
                        }
                        (got, expected) => {
                            prop_assert!(false, "got {:?}, expected {:?}", got, expected)
                        }
                    }
                }
            }
            Op::SetDedup { kind, on } => {
                dispatcher.set_dedup(kind, on);
                if on {
                    model.explicit_dedup.insert(kind);
                } else {
                    model.explicit_dedup.remove(&kind);
                }
            }
        }
    }
    dispatcher.flush(PATIENCE).expect("flush");

    // Counters.
    let metrics = dispatcher.metrics();
    prop_assert_eq!(metrics.received, model.received);
    prop_assert_eq!(metrics.unknown_kind, model.unknown);
    for kind in 0..=KINDS {
        let counters = metrics.kind(&kind);
        prop_assert_eq!(
            counters.dispatched,
            model.dispatched.get(&kind).copied().unwrap_or(0)
        );
        prop_assert_eq!(
            counters.duplicates,
            model.duplicates.get(&kind).copied().unwrap_or(0)
        );
    }
    for (subscriber, expected) in real.iter().zip(&model.subscribers) {
        let Some(counters) = metrics.subscriber(subscriber.handle()) else {
            prop_assert!(
                !expected.live,
                "a live subscriber is missing from the metrics"
            );
            continue;
        };
        prop_assert!(expected.live);
        for kind in 0..=KINDS {
            let counts = counters.kind(&kind);
            prop_assert_eq!(
                counts.delivered,
                expected.delivered.get(&kind).copied().unwrap_or(0)
            );
            prop_assert_eq!(
                counts.dropped,
                expected.dropped.get(&kind).copied().unwrap_or(0)
            );
        }
        // delivered + dropped == dispatched messages of its kinds while it was registered: for a
        // subscriber registered from the start, all of them.
    }

    // Contents: exactly the model's messages, in order, only of the subscriber's kinds.
    for (subscriber, expected) in real.iter_mut().zip(&mut model.subscribers) {
        let mut got = Vec::new();
        subscriber.drain_into(&mut got);
        let mut want: Vec<u64> = expected.hand.drain(..).collect();
        want.extend(expected.inbox.drain(..));
        prop_assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), want);
        for message in &got {
            prop_assert!(expected.kinds.contains(&message.kind));
            prop_assert_eq!(kinds_of_seq.get(&message.seq), Some(&message.kind));
        }
    }
    dispatcher.stop();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn dispatcher_matches_model(ops in proptest::collection::vec(op(), 1..80), max_batch in prop_oneof![Just(1usize), Just(3), Just(1024)]) {
        run(ops, max_batch)?;
    }

    /// For any sends, a subscriber registered from the start gets `delivered + dropped` equal to
    /// the sends of its kinds, and what it receives is in order.
    #[test]
    fn every_message_is_accounted_for(
        kinds in proptest::collection::vec(0..KINDS, 0..300),
        capacity in 1usize..64,
        subscribed in proptest::collection::vec(0..KINDS, 1..3),
    ) {
        let dispatcher = Dispatcher::<TestMsg>::new(DispatcherConfig::default()).expect("config");
        let mut subscriber = dispatcher
            .register(subscribed.clone(), SubscriberOptions::new().capacity(capacity))
            .expect("register");
        dispatcher.start().expect("start");
        let sender = dispatcher.sender();
        for (seq, kind) in kinds.iter().enumerate() {
            sender.send(TestMsg::new(*kind, seq as u64)).expect("send");
        }
        dispatcher.flush(PATIENCE).expect("flush");
        let sent_of_its_kinds = kinds.iter().filter(|k| subscribed.contains(k)).count() as u64;
        let metrics = dispatcher.metrics();
        let counters = metrics.subscriber(subscriber.handle()).expect("registered");
        prop_assert_eq!(counters.delivered() + counters.dropped(), sent_of_its_kinds);
        let mut got = Vec::new();
        subscriber.drain_into(&mut got);
        prop_assert_eq!(got.len() as u64, counters.delivered());
        prop_assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "order kept");
        prop_assert!(got.iter().all(|m| subscribed.contains(&m.kind)));
        dispatcher.stop();
    }
}
