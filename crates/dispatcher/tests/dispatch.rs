//! Behaviour of the dispatcher through its public API, one feature at a time.

mod common;

use std::time::Duration;

use common::{PATIENCE, TestMsg};
use p2pnet_dispatcher::{
    DeliveryPolicy, DispatchError, Dispatcher, DispatcherConfig, SubscriberOptions,
};

fn dispatcher() -> Dispatcher<TestMsg> {
    Dispatcher::new(DispatcherConfig::default()).expect("valid config")
}

fn drain(subscriber: &mut p2pnet_dispatcher::Subscriber<TestMsg>) -> Vec<TestMsg> {
    let mut out = Vec::new();
    subscriber.drain_into(&mut out);
    out
}

fn seqs(messages: &[TestMsg]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

#[test]
fn delivers_each_kind_to_its_subscribers_in_order() {
    let dispatcher = dispatcher();
    let mut a1 = dispatcher.register([1], SubscriberOptions::new()).unwrap();
    let mut a2 = dispatcher.register([1], SubscriberOptions::new()).unwrap();
    let mut b = dispatcher.register([2], SubscriberOptions::new()).unwrap();
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    for seq in 0..100 {
        sender.send(TestMsg::new(1 + (seq % 2) as u8, seq)).unwrap();
    }
    dispatcher.flush(PATIENCE).unwrap();
    let odd: Vec<u64> = (0..100).filter(|s| s % 2 == 1).collect();
    let even: Vec<u64> = (0..100).filter(|s| s % 2 == 0).collect();
    assert_eq!(seqs(&drain(&mut a1)), even);
    assert_eq!(seqs(&drain(&mut a2)), even);
    assert_eq!(seqs(&drain(&mut b)), odd);
    let metrics = dispatcher.metrics();
    assert_eq!(metrics.received, 100);
    assert_eq!(metrics.kind(&1).dispatched, 50);
    assert_eq!(metrics.kind(&2).dispatched, 50);
    assert_eq!(metrics.kind(&1).dispatched_bytes, 50 * 4);
    let a1_metrics = metrics.subscriber(a1.handle()).unwrap();
    assert_eq!((a1_metrics.delivered(), a1_metrics.dropped()), (50, 0));
}

#[test]
fn blocking_recv_and_recv_timeout() {
    let dispatcher = dispatcher();
    let mut subscriber = dispatcher.register([1], SubscriberOptions::new()).unwrap();
    dispatcher.start().unwrap();
    assert!(matches!(
        subscriber.recv_timeout(Duration::from_millis(20)),
        Err(DispatchError::Timeout)
    ));
    assert!(matches!(subscriber.try_recv(), Err(DispatchError::Empty)));
    let sender = dispatcher.sender();
    let producer = std::thread::spawn(move || {
        for seq in 0..1000 {
            sender.send(TestMsg::new(1, seq)).unwrap();
        }
    });
    for seq in 0..1000 {
        assert_eq!(subscriber.recv().unwrap().seq, seq);
    }
    producer.join().unwrap();
    dispatcher.stop();
    assert!(matches!(subscriber.recv(), Err(DispatchError::Closed)));
    assert!(matches!(subscriber.try_recv(), Err(DispatchError::Closed)));
}

#[test]
fn unknown_kinds_are_counted() {
    let dispatcher = dispatcher();
    let mut subscriber = dispatcher.register([1], SubscriberOptions::new()).unwrap();
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    for seq in 0..10 {
        sender
            .send(TestMsg::new(if seq < 3 { 9 } else { 1 }, seq))
            .unwrap();
    }
    dispatcher.flush(PATIENCE).unwrap();
    assert_eq!(seqs(&drain(&mut subscriber)), (3..10).collect::<Vec<_>>());
    let metrics = dispatcher.metrics();
    assert_eq!(metrics.unknown_kind, 3);
    assert_eq!(metrics.received, 10);
    assert!(
        !metrics.kinds.contains_key(&9),
        "unknown kinds get no per-kind entry"
    );
}

#[test]
fn drop_newest_drops_for_the_full_subscriber_only() {
    let dispatcher = dispatcher();
    let mut slow = dispatcher
        .register([1], SubscriberOptions::new().capacity(4).name("slow"))
        .unwrap();
    let mut fast = dispatcher
        .register([1], SubscriberOptions::new().capacity(100))
        .unwrap();
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    for seq in 0..10 {
        sender.send(TestMsg::new(1, seq)).unwrap();
    }
    dispatcher.flush(PATIENCE).unwrap();
    let metrics = dispatcher.metrics();
    let slow_metrics = metrics.subscriber(slow.handle()).unwrap();
    assert_eq!(slow_metrics.kind(&1).delivered, 4);
    assert_eq!(slow_metrics.kind(&1).dropped, 6);
    assert_eq!(slow_metrics.queued, 4);
    assert_eq!(slow_metrics.name.as_deref(), Some("slow"));
    assert_eq!(metrics.subscriber(fast.handle()).unwrap().dropped(), 0);
    assert_eq!(seqs(&drain(&mut slow)), vec![0, 1, 2, 3]);
    assert_eq!(seqs(&drain(&mut fast)), (0..10).collect::<Vec<_>>());

    // Room again after the consumer took its messages.
    sender.send(TestMsg::new(1, 10)).unwrap();
    dispatcher.flush(PATIENCE).unwrap();
    assert_eq!(seqs(&drain(&mut slow)), vec![10]);
}

#[test]
fn capacity_counts_messages_not_yet_taken() {
    let dispatcher = dispatcher();
    let mut subscriber = dispatcher
        .register([1], SubscriberOptions::new().capacity(3))
        .unwrap();
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    for seq in 0..3 {
        sender.send(TestMsg::new(1, seq)).unwrap();
    }
    dispatcher.flush(PATIENCE).unwrap();
    assert_eq!(subscriber.len(), 3);
    // Taking one message takes every waiting one to the consumer's side: the channel is empty.
    assert_eq!(subscriber.try_recv().unwrap().seq, 0);
    for seq in 3..7 {
        sender.send(TestMsg::new(1, seq)).unwrap();
    }
    dispatcher.flush(PATIENCE).unwrap();
    assert_eq!(subscriber.len(), 2 + 3);
    assert_eq!(seqs(&drain(&mut subscriber)), vec![1, 2, 3, 4, 5]);
    let metrics = dispatcher.metrics();
    assert_eq!(
        metrics.subscriber(subscriber.handle()).unwrap().dropped(),
        1
    );
}

#[test]
fn block_policy_loses_nothing_with_a_slow_consumer() {
    let dispatcher = Dispatcher::new(DispatcherConfig::default().with_queue_capacity(64)).unwrap();
    let policy = DeliveryPolicy::Block { timeout: PATIENCE };
    let mut subscriber = dispatcher
        .register([1], SubscriberOptions::new().capacity(8).policy(policy))
        .unwrap();
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    let producer = std::thread::spawn(move || {
        for seq in 0..5_000 {
            sender.send(TestMsg::new(1, seq)).unwrap();
        }
    });
    for seq in 0..5_000 {
        let message = subscriber.recv().unwrap();
        assert_eq!(message.seq, seq);
        if seq % 500 == 0 {
            std::thread::yield_now();
        }
    }
    producer.join().unwrap();
    let metrics = dispatcher.metrics();
    let counts = metrics.subscriber(subscriber.handle()).unwrap().kind(&1);
    assert_eq!((counts.delivered, counts.dropped), (5_000, 0));
}

#[test]
fn block_policy_drops_after_its_timeout() {
    let dispatcher = dispatcher();
    let policy = DeliveryPolicy::Block {
        timeout: Duration::from_millis(20),
    };
    let mut subscriber = dispatcher
        .register([1], SubscriberOptions::new().capacity(2).policy(policy))
        .unwrap();
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    for seq in 0..5 {
        sender.send(TestMsg::new(1, seq)).unwrap();
    }
    dispatcher.flush(PATIENCE).unwrap();
    let metrics = dispatcher.metrics();
    let counts = metrics.subscriber(subscriber.handle()).unwrap().kind(&1);
    assert_eq!((counts.delivered, counts.dropped), (2, 3));
    assert_eq!(seqs(&drain(&mut subscriber)), vec![0, 1]);
}

#[test]
fn deregister_takes_effect_and_stale_handles_fail() {
    let dispatcher = dispatcher();
    let mut first = dispatcher.register([1], SubscriberOptions::new()).unwrap();
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    sender.send(TestMsg::new(1, 0)).unwrap();
    dispatcher.flush(PATIENCE).unwrap();
    let handle = first.handle();
    dispatcher.deregister(handle).unwrap();
    assert!(first.is_closed());
    sender.send(TestMsg::new(1, 1)).unwrap();
    dispatcher.flush(PATIENCE).unwrap();
    // What was delivered before still arrives, then nothing.
    assert_eq!(first.recv().unwrap().seq, 0);
    assert!(matches!(first.recv(), Err(DispatchError::Closed)));
    assert!(dispatcher.metrics().subscriber(handle).is_none());
    assert_eq!(dispatcher.metrics().unknown_kind, 1);

    // A re-created subscriber is not removed by the old handle (the Nebulas bug).
    let mut second = dispatcher.register([1], SubscriberOptions::new()).unwrap();
    assert_ne!(second.handle(), handle);
    assert!(matches!(
        dispatcher.deregister(handle),
        Err(DispatchError::UnknownSubscriber(h)) if h == handle
    ));
    sender.send(TestMsg::new(1, 2)).unwrap();
    dispatcher.flush(PATIENCE).unwrap();
    assert_eq!(second.recv().unwrap().seq, 2);
}

#[test]
fn dropping_a_subscriber_deregisters_it() {
    let dispatcher = dispatcher();
    let subscriber = dispatcher.register([1], SubscriberOptions::new()).unwrap();
    let handle = subscriber.handle();
    drop(subscriber);
    assert!(dispatcher.metrics().subscriber(handle).is_none());
    assert!(dispatcher.deregister(handle).is_err());
}

#[test]
fn registration_errors() {
    let dispatcher = dispatcher();
    assert!(matches!(
        dispatcher.register(Vec::<u8>::new(), SubscriberOptions::new()),
        Err(DispatchError::NoKinds)
    ));
    assert!(matches!(
        dispatcher.register([1], SubscriberOptions::new().capacity(0)),
        Err(DispatchError::InvalidConfig(_))
    ));
    assert!(matches!(
        Dispatcher::<TestMsg>::new(DispatcherConfig::default().with_max_batch(0)),
        Err(DispatchError::InvalidConfig(_))
    ));
    dispatcher.stop();
    assert!(matches!(
        dispatcher.register([1], SubscriberOptions::new()),
        Err(DispatchError::Stopped)
    ));
}

#[test]
fn one_subscriber_several_kinds() {
    let dispatcher = dispatcher();
    // Repeated kinds count once.
    let mut both = dispatcher
        .register([1, 2, 1], SubscriberOptions::new().capacity(5))
        .unwrap();
    assert_eq!(both.kinds(), &[1, 2]);
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    let kinds = [1u8, 2, 3, 2, 1, 1, 2, 2, 1];
    for (seq, kind) in kinds.iter().enumerate() {
        sender.send(TestMsg::new(*kind, seq as u64)).unwrap();
    }
    dispatcher.flush(PATIENCE).unwrap();
    let received = drain(&mut both);
    // Capacity 5: the first five of kinds 1 and 2, in order; the rest dropped.
    assert_eq!(seqs(&received), vec![0, 1, 3, 4, 5]);
    let metrics = dispatcher.metrics();
    let counts = metrics.subscriber(both.handle()).unwrap();
    assert_eq!(counts.kind(&1).delivered, 3);
    assert_eq!(counts.kind(&2).delivered, 2);
    assert_eq!(counts.kind(&1).dropped, 1);
    assert_eq!(counts.kind(&2).dropped, 2);
    assert_eq!(metrics.unknown_kind, 1);
}

#[test]
fn duplicate_filter_per_kind_survives_other_deregistrations() {
    let dispatcher = Dispatcher::new(DispatcherConfig::default().with_dedup_capacity(4)).unwrap();
    let mut filtered = dispatcher
        .register([1], SubscriberOptions::new().filter_duplicates(true))
        .unwrap();
    let plain = dispatcher
        .register([1, 2], SubscriberOptions::new())
        .unwrap();
    let mut other_kind = dispatcher.register([2], SubscriberOptions::new()).unwrap();
    assert!(dispatcher.dedup_enabled(&1));
    assert!(!dispatcher.dedup_enabled(&2));
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    sender.send(TestMsg::new(1, 0).with_hash(7)).unwrap();
    sender.send(TestMsg::new(1, 1).with_hash(7)).unwrap(); // duplicate
    sender.send(TestMsg::new(2, 2).with_hash(7)).unwrap(); // other kind: no filter
    sender.send(TestMsg::new(2, 3).with_hash(7)).unwrap();
    sender.send(TestMsg::new(1, 4)).unwrap(); // no hash: always passes
    sender.send(TestMsg::new(1, 5)).unwrap();
    dispatcher.flush(PATIENCE).unwrap();

    // Another subscriber of the kind leaving does not switch the filter off (the Nebulas bug).
    drop(plain);
    assert!(dispatcher.dedup_enabled(&1));
    sender.send(TestMsg::new(1, 6).with_hash(7)).unwrap(); // still a duplicate
    for hash in 100..104 {
        sender.send(TestMsg::new(1, hash).with_hash(hash)).unwrap(); // evicts 7
    }
    sender.send(TestMsg::new(1, 8).with_hash(7)).unwrap(); // forgotten: passes
    dispatcher.flush(PATIENCE).unwrap();

    assert_eq!(
        seqs(&drain(&mut filtered)),
        vec![0, 4, 5, 100, 101, 102, 103, 8]
    );
    assert_eq!(seqs(&drain(&mut other_kind)), vec![2, 3]);
    let metrics = dispatcher.metrics();
    assert_eq!(metrics.kind(&1).duplicates, 2);
    assert_eq!(metrics.kind(&1).dispatched, 8);
    assert_eq!(metrics.kind(&2).duplicates, 0);
    assert!(metrics.kind(&1).dedup);

    // The filter goes when the last subscriber that asked for it goes.
    drop(filtered);
    assert!(!dispatcher.dedup_enabled(&1));
}

#[test]
fn explicit_dedup_switch() {
    let dispatcher = dispatcher();
    let mut subscriber = dispatcher.register([1], SubscriberOptions::new()).unwrap();
    dispatcher.set_dedup(1, true);
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    for seq in 0..3 {
        sender.send(TestMsg::new(1, seq).with_hash(1)).unwrap();
    }
    dispatcher.flush(PATIENCE).unwrap();
    dispatcher.set_dedup(1, false);
    sender.send(TestMsg::new(1, 3).with_hash(1)).unwrap();
    dispatcher.flush(PATIENCE).unwrap();
    assert_eq!(seqs(&drain(&mut subscriber)), vec![0, 3]);
    assert_eq!(dispatcher.metrics().kind(&1).duplicates, 2);
}

#[test]
fn try_send_hands_the_message_back_when_full() {
    let dispatcher = Dispatcher::new(DispatcherConfig::default().with_queue_capacity(4)).unwrap();
    let mut subscriber = dispatcher.register([1], SubscriberOptions::new()).unwrap();
    let sender = dispatcher.sender();
    for seq in 0..4 {
        sender.try_send(TestMsg::new(1, seq)).unwrap();
    }
    let error = sender.try_send(TestMsg::new(1, 4)).unwrap_err();
    assert!(error.is_full());
    assert!(matches!(error.reason(), DispatchError::QueueFull));
    assert_eq!(error.into_message().seq, 4);
    let error = sender
        .send_timeout(TestMsg::new(1, 5), Duration::from_millis(10))
        .unwrap_err();
    assert!(matches!(error.reason(), DispatchError::Timeout));
    assert_eq!(dispatcher.metrics().queue_depth, 4);
    assert_eq!(sender.len(), 4);

    // Queued before start, dispatched after.
    dispatcher.start().unwrap();
    dispatcher.flush(PATIENCE).unwrap();
    assert_eq!(seqs(&drain(&mut subscriber)), vec![0, 1, 2, 3]);

    dispatcher.stop();
    let error = sender.try_send(TestMsg::new(1, 6)).unwrap_err();
    assert!(error.is_stopped());
    assert_eq!(error.message().seq, 6);
    assert!(sender.send(TestMsg::new(1, 7)).unwrap_err().is_stopped());
    let as_dispatch_error: DispatchError = sender.send(TestMsg::new(1, 8)).unwrap_err().into();
    assert!(matches!(as_dispatch_error, DispatchError::Stopped));
}

#[test]
fn lifecycle_start_stop() {
    let dispatcher = dispatcher();
    assert!(!dispatcher.is_running());
    dispatcher.start().unwrap();
    assert!(dispatcher.is_running());
    assert!(matches!(
        dispatcher.start(),
        Err(DispatchError::AlreadyStarted)
    ));
    dispatcher.stop();
    dispatcher.stop(); // idempotent
    assert!(!dispatcher.is_running());
    assert!(dispatcher.is_stopped());
    assert!(matches!(dispatcher.start(), Err(DispatchError::Stopped)));
    assert!(matches!(
        dispatcher.flush(PATIENCE),
        Err(DispatchError::Stopped)
    ));

    // Stopping a dispatcher that never started discards and counts its queue.
    let idle = dispatcher_with_queue(8);
    let sender = idle.sender();
    for seq in 0..5 {
        sender.send(TestMsg::new(1, seq)).unwrap();
    }
    idle.stop();
    assert_eq!(idle.metrics().discarded_at_stop, 5);
    assert_eq!(idle.metrics().queue_depth, 0);
}

fn dispatcher_with_queue(capacity: usize) -> Dispatcher<TestMsg> {
    Dispatcher::new(DispatcherConfig::default().with_queue_capacity(capacity)).unwrap()
}

#[test]
fn flush_times_out_when_not_started() {
    let dispatcher = dispatcher();
    assert!(matches!(
        dispatcher.flush(Duration::from_millis(10)),
        Err(DispatchError::Timeout)
    ));
}

#[test]
fn queue_depth_gauge_is_refreshed_by_the_loop_and_on_demand() {
    let config = DispatcherConfig::default().with_metrics_interval(Duration::from_millis(10));
    let dispatcher = Dispatcher::<TestMsg>::new(config).unwrap();
    let sender = dispatcher.sender();
    for seq in 0..3 {
        sender.send(TestMsg::new(1, seq)).unwrap();
    }
    assert_eq!(dispatcher.queue_depth_gauge(), 0, "not refreshed yet");
    assert_eq!(dispatcher.metrics().queue_depth, 3);
    assert_eq!(dispatcher.queue_depth_gauge(), 3, "refreshed on demand");
    dispatcher.start().unwrap();
    dispatcher.flush(PATIENCE).unwrap();
    // The idle loop refreshes it within one interval.
    let deadline = std::time::Instant::now() + PATIENCE;
    while dispatcher.queue_depth_gauge() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "gauge never refreshed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(dispatcher.metrics().unknown_kind, 3);
}

#[test]
fn prometheus_metrics() {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    let dispatcher = dispatcher();
    let mut registry = Registry::default();
    dispatcher.register_metrics(&mut registry);
    let _subscriber = dispatcher
        .register([1], SubscriberOptions::new().capacity(1).name("blocks"))
        .unwrap();
    dispatcher.start().unwrap();
    let sender = dispatcher.sender();
    for seq in 0..3 {
        sender.send(TestMsg::new(1, seq)).unwrap();
    }
    sender.send(TestMsg::new(5, 3)).unwrap();
    dispatcher.flush(PATIENCE).unwrap();
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    for expected in [
        "p2pnet_dispatcher_received_total 4",
        "p2pnet_dispatcher_unknown_kind_total 1",
        "p2pnet_dispatcher_queue_capacity 65536",
        "p2pnet_dispatcher_dispatched_total{kind=\"1\"} 3",
        "p2pnet_dispatcher_payload_bytes_total{kind=\"1\"} 12",
        "p2pnet_dispatcher_delivered_total{subscriber=\"1\",name=\"blocks\",kind=\"1\"} 1",
        "p2pnet_dispatcher_dropped_total{subscriber=\"1\",name=\"blocks\",kind=\"1\"} 2",
        "p2pnet_dispatcher_subscriber_queued{subscriber=\"1\",name=\"blocks\"} 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_panicking_subscriber_is_isolated_and_counted() {
    let d = dispatcher();
    d.start().unwrap();
    let mut healthy = d.register([1u8], SubscriberOptions::new()).unwrap();
    let doomed = d.register([1u8], SubscriberOptions::new()).unwrap();
    let sender = d.sender();
    sender.send(TestMsg::new(1, 0)).unwrap();
    // The consumer thread panics while handling its first message.
    let consumer = std::thread::spawn(move || {
        let mut doomed = doomed;
        let _msg = doomed.recv_timeout(PATIENCE).unwrap();
        panic!("consumer bug");
    });
    assert!(consumer.join().is_err(), "the consumer panicked");
    // The loop lives: later messages still reach the healthy subscriber, in order.
    for seq in 1..100 {
        sender.send(TestMsg::new(1, seq)).unwrap();
    }
    d.flush(PATIENCE).unwrap();
    let got: Vec<u64> = drain(&mut healthy).iter().map(|m| m.seq).collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    let metrics = d.metrics();
    assert_eq!(metrics.subscribers_panicked, 1);
    assert_eq!(
        metrics.subscribers.len(),
        1,
        "the panicked subscriber was removed"
    );
    assert!(d.is_running());
    d.stop();
}
