//! Configuration: [`DispatcherConfig`] for the dispatcher, [`SubscriberOptions`] and
//! [`DeliveryPolicy`] for each subscriber.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::DispatchError;

/// The dispatcher's configuration; the `[dispatcher]` table of the node's configuration file.
///
/// Every field has a default (see each field); in TOML, durations are whole milliseconds:
/// ```toml
/// queue_capacity = 65536
/// subscriber_capacity = 4096
/// dedup_capacity = 51200
/// metrics_interval_ms = 1000
/// max_batch = 1024
/// thread_name = "p2pnet-dispatch"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DispatcherConfig {
    /// Capacity of the bounded receive queue that every [`DispatchSender`](crate::DispatchSender)
    /// feeds. Default 65,536 (as the Nebulas original). When it is full, `send` waits and
    /// `try_send` fails, so the network reader is back-pressured.
    pub queue_capacity: usize,
    /// Channel capacity, in messages, of a subscriber registered without one of its own. Default
    /// 4,096.
    pub subscriber_capacity: usize,
    /// How many distinct content hashes the duplicate filter of each kind remembers. Default
    /// 51,200 (as the original).
    pub dedup_capacity: usize,
    /// How often the dispatch loop refreshes the queue-depth gauge. Default 1 s. The gauge is also
    /// refreshed on every [`Dispatcher::metrics`](crate::Dispatcher::metrics) call.
    #[serde(rename = "metrics_interval_ms", with = "millis")]
    pub metrics_interval: Duration,
    /// The most messages the loop takes off the queue in one go before delivering them; every
    /// subscriber gets (and is woken for) at most one batch per round. Default 1,024.
    pub max_batch: usize,
    /// Name of the dispatch thread. Default `p2pnet-dispatch`.
    pub thread_name: String,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            subscriber_capacity: 4_096,
            dedup_capacity: 51_200,
            metrics_interval: Duration::from_secs(1),
            max_batch: 1_024,
            thread_name: "p2pnet-dispatch".to_owned(),
        }
    }
}

impl DispatcherConfig {
    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Sets [`subscriber_capacity`](Self::subscriber_capacity).
    pub fn with_subscriber_capacity(mut self, capacity: usize) -> Self {
        self.subscriber_capacity = capacity;
        self
    }

    /// Sets [`dedup_capacity`](Self::dedup_capacity).
    pub fn with_dedup_capacity(mut self, capacity: usize) -> Self {
        self.dedup_capacity = capacity;
        self
    }

    /// Sets [`metrics_interval`](Self::metrics_interval).
    pub fn with_metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = interval;
        self
    }

    /// Sets [`max_batch`](Self::max_batch).
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<(), DispatchError> {
        let positive = [
            ("queue_capacity", self.queue_capacity),
            ("subscriber_capacity", self.subscriber_capacity),
            ("dedup_capacity", self.dedup_capacity),
            ("max_batch", self.max_batch),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(DispatchError::InvalidConfig(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        if self.metrics_interval.is_zero() {
            return Err(DispatchError::InvalidConfig(
                "metrics_interval must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

/// What the dispatch loop does when a subscriber's channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DeliveryPolicy {
    /// Never wait: a message that does not fit is dropped **for this subscriber only**, counted,
    /// and reported by a warning at most once per second per subscriber. The default, and the
    /// Nebulas behaviour.
    #[default]
    DropNewest,
    /// Wait for room, up to `timeout` per batch delivered to this subscriber, then drop what still
    /// does not fit (counted). For consumers that must not lose messages. While the loop waits,
    /// no other subscriber gets messages, so keep such consumers quick; `stop()` interrupts the
    /// wait at once.
    Block {
        /// The longest the loop waits for room for one batch.
        timeout: Duration,
    },
}

/// How to register a subscriber: channel capacity, delivery policy, duplicate filter and name.
///
/// ```
/// use std::time::Duration;
/// use p2pnet_dispatcher::{DeliveryPolicy, SubscriberOptions};
///
/// let options = SubscriberOptions::new()
///     .capacity(1024)
///     .policy(DeliveryPolicy::Block { timeout: Duration::from_millis(100) })
///     .filter_duplicates(true)
///     .name("chain-sync");
/// assert_eq!(options.capacity, Some(1024));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SubscriberOptions {
    /// Channel capacity in messages; `None` takes
    /// [`DispatcherConfig::subscriber_capacity`]. It counts the messages waiting in the channel.
    /// A consumer that finds nothing in hand takes every waiting message at once (one lock), so
    /// it may hold up to another `capacity` messages it has taken but not yet returned.
    pub capacity: Option<usize>,
    /// What to do when the channel is full.
    pub policy: DeliveryPolicy,
    /// Turn on the duplicate filter for this subscriber's kinds. The filter works per kind, for
    /// every subscriber of the kind, as long as at least one subscriber that asked for it is
    /// registered (or [`Dispatcher::set_dedup`](crate::Dispatcher::set_dedup) turned it on).
    pub filter_duplicates: bool,
    /// A name for logs and metrics labels.
    pub name: Option<String>,
}

impl SubscriberOptions {
    /// The defaults: dispatcher-wide capacity, [`DeliveryPolicy::DropNewest`], no duplicate
    /// filter, no name.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the channel capacity in messages.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Sets the delivery policy.
    pub fn policy(mut self, policy: DeliveryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Turns the duplicate filter on or off for this subscriber's kinds.
    pub fn filter_duplicates(mut self, on: bool) -> Self {
        self.filter_duplicates = on;
        self
    }

    /// Sets the name used in logs and metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Serde helper: a [`Duration`] as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let config = DispatcherConfig::default();
        config.validate().expect("defaults are valid");
        assert_eq!(config.queue_capacity, 65_536);
        assert_eq!(config.dedup_capacity, 51_200);
        assert_eq!(config.metrics_interval, Duration::from_secs(1));
    }

    #[test]
    fn zero_values_are_rejected() {
        let config = DispatcherConfig::default().with_queue_capacity(0);
        assert!(matches!(
            config.validate(),
            Err(DispatchError::InvalidConfig(_))
        ));
        let config = DispatcherConfig::default().with_metrics_interval(Duration::ZERO);
        assert!(matches!(
            config.validate(),
            Err(DispatchError::InvalidConfig(_))
        ));
    }

    #[test]
    fn toml_round_trip_uses_milliseconds() {
        let config = DispatcherConfig::default().with_metrics_interval(Duration::from_millis(250));
        let text = toml::to_string(&config).expect("serialize");
        assert!(text.contains("metrics_interval_ms = 250"), "{text}");
        let back: DispatcherConfig = toml::from_str(&text).expect("deserialize");
        assert_eq!(back, config);
        let partial: DispatcherConfig = toml::from_str("queue_capacity = 8").expect("partial");
        assert_eq!(partial.queue_capacity, 8);
        assert_eq!(partial.dedup_capacity, 51_200);
        assert!(toml::from_str::<DispatcherConfig>("queue_size = 8").is_err());
    }
}
