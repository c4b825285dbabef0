//! The record store and the provider store: bounded in entries, value size, providers per key
//! and entries per peer, with expiry (records 36 h, provider records 48 h by default). Sans-IO:
//! time is passed in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2pnet_host::{Multiaddr, PeerId};

use crate::error::KadError;
use crate::message::MAX_ADDRS_PER_PEER;

/// Decides which records are accepted (on `PUT_VALUE` and from `GET_VALUE` answers) and which of
/// several values of a key is best.
pub trait RecordValidator: Send + Sync + 'static {
    /// Whether `value` is acceptable for `key`; the error says why not.
    fn validate(&self, key: &[u8], value: &[u8]) -> Result<(), String>;

    /// The index of the best of `values` (at least one) for `key`. Default: the first.
    fn select(&self, key: &[u8], values: &[&[u8]]) -> usize {
        let _ = (key, values);
        0
    }
}

/// The default validator: any key and value within the store's bounds.
#[derive(Debug, Default, Clone, Copy)]
pub struct AcceptAll;

impl RecordValidator for AcceptAll {
    fn validate(&self, _key: &[u8], _value: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// Bounds and lifetimes of the stores.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Most records stored. Default 1,024.
    pub max_records: usize,
    /// Largest value. Default 64 KiB.
    pub max_value_size: usize,
    /// Longest key (records and providers). Default 1 KiB.
    pub max_key_size: usize,
    /// Most records one remote peer may have put here. Default 64.
    pub max_records_per_peer: usize,
    /// Most keys with provider records. Default 1,024.
    pub max_provided_keys: usize,
    /// Most providers kept per key. Default 20.
    pub max_providers_per_key: usize,
    /// Most provider records of one peer. Default 64.
    pub max_provider_records_per_peer: usize,
    /// How long a stored record lives. Default 36 h.
    pub record_ttl: Duration,
    /// How long a provider record lives. Default 48 h.
    pub provider_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_records: 1024,
            max_value_size: 64 * 1024,
            max_key_size: 1024,
            max_records_per_peer: 64,
            max_provided_keys: 1024,
            max_providers_per_key: 20,
            max_provider_records_per_peer: 64,
            record_ttl: Duration::from_secs(36 * 3600),
            provider_ttl: Duration::from_secs(48 * 3600),
        }
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Who put it here (`None`: we did).
    pub publisher: Option<PeerId>,
    /// When it expires.
    pub expires: Instant,
}

/// The records this node keeps for others and for itself.
pub struct RecordStore {
    config: StoreConfig,
    validator: Arc<dyn RecordValidator>,
    records: HashMap<Vec<u8>, StoredRecord>,
    per_peer: HashMap<PeerId, usize>,
}

impl std::fmt::Debug for RecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStore")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl RecordStore {
    /// An empty store.
    pub fn new(config: StoreConfig, validator: Arc<dyn RecordValidator>) -> RecordStore {
        RecordStore {
            config,
            validator,
            records: HashMap::new(),
            per_peer: HashMap::new(),
        }
    }

    /// The validator.
    pub fn validator(&self) -> &Arc<dyn RecordValidator> {
        &self.validator
    }

    /// How many records are stored (expired ones included until they are pruned).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Checks a key and value against the bounds and the validator.
    pub fn check(&self, key: &[u8], value: &[u8]) -> Result<(), KadError> {
        if key.is_empty() || key.len() > self.config.max_key_size {
            return Err(KadError::RecordRefused(format!(
                "key of {} bytes (1 to {} allowed)",
                key.len(),
                self.config.max_key_size
            )));
        }
        if value.len() > self.config.max_value_size {
            return Err(KadError::ValueTooLarge {
                len: value.len(),
                max: self.config.max_value_size,
            });
        }
        self.validator
            .validate(key, value)
            .map_err(KadError::RecordRefused)
    }

    /// Stores a record put by `publisher` (`None`: by us), replacing the key's old value.
    pub fn put(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        publisher: Option<PeerId>,
        now: Instant,
    ) -> Result<(), KadError> {
        self.check(&key, &value)?;
        let replacing = self.records.get(&key).map(|r| r.publisher);
        if replacing.is_none() {
            if self.records.len() >= self.config.max_records {
                self.prune(now);
            }
            if self.records.len() >= self.config.max_records {
                return Err(KadError::StoreFull("record"));
            }
        }
        if let Some(p) = publisher
            && replacing != Some(Some(p))
            && self.per_peer.get(&p).copied().unwrap_or(0) >= self.config.max_records_per_peer
        {
            return Err(KadError::StoreFull("record (for this peer)"));
        }
        let expires = now + self.config.record_ttl;
        let old = self.records.insert(
            key.clone(),
            StoredRecord {
                key,
                value,
                publisher,
                expires,
            },
        );
        if let Some(old) = old {
            self.uncount(old.publisher);
        }
        if let Some(p) = publisher {
            *self.per_peer.entry(p).or_default() += 1;
        }
        Ok(())
    }

    fn uncount(&mut self, publisher: Option<PeerId>) {
        if let Some(p) = publisher
            && let Some(n) = self.per_peer.get_mut(&p)
        {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&p);
            }
        }
    }

    /// The unexpired record of `key`.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<&StoredRecord> {
        if self.records.get(key).is_some_and(|r| r.expires <= now) {
            if let Some(old) = self.records.remove(key) {
                self.uncount(old.publisher);
            }
            return None;
        }
        self.records.get(key)
    }

    /// Drops the record of `key` if we put it (not one another peer put). Returns whether
    /// one was dropped.
    pub fn remove_local(&mut self, key: &[u8]) -> bool {
        if self.records.get(key).is_some_and(|r| r.publisher.is_none()) {
            self.records.remove(key);
            return true;
        }
        false
    }

    /// Drops expired records.
    pub fn prune(&mut self, now: Instant) {
        let expired: Vec<Vec<u8>> = self
            .records
            .values()
            .filter(|r| r.expires <= now)
            .map(|r| r.key.clone())
            .collect();
        for k in expired {
            if let Some(old) = self.records.remove(&k) {
                self.uncount(old.publisher);
            }
        }
    }
}

/// One provider of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The provider.
    pub provider: PeerId,
    /// Its addresses as it announced them (at most 32).
    pub addrs: Vec<Multiaddr>,
    /// When the record expires.
    pub expires: Instant,
}

/// The provider records this node keeps.
#[derive(Debug)]
pub struct ProviderStore {
    config: StoreConfig,
    keys: HashMap<Vec<u8>, Vec<ProviderRecord>>,
    per_peer: HashMap<PeerId, usize>,
}

impl ProviderStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> ProviderStore {
        ProviderStore {
            config,
            keys: HashMap::new(),
            per_peer: HashMap::new(),
        }
    }

    /// How many keys have providers.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key has providers.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Records that `provider` provides `key` (refreshing its record if it had one). `local`
    /// records (ours) are not counted against the per-peer bound.
    pub fn add(
        &mut self,
        key: Vec<u8>,
        provider: PeerId,
        mut addrs: Vec<Multiaddr>,
        local: bool,
        now: Instant,
    ) -> Result<(), KadError> {
        if key.is_empty() || key.len() > self.config.max_key_size {
            return Err(KadError::RecordRefused(format!(
                "provider key of {} bytes (1 to {} allowed)",
                key.len(),
                self.config.max_key_size
            )));
        }
        addrs.truncate(MAX_ADDRS_PER_PEER);
        let expires = now + self.config.provider_ttl;
        if !self.keys.contains_key(&key) && self.keys.len() >= self.config.max_provided_keys {
            self.prune(now);
            if self.keys.len() >= self.config.max_provided_keys {
                return Err(KadError::StoreFull("provider"));
            }
        }
        let count = self.per_peer.get(&provider).copied().unwrap_or(0);
        let list = self.keys.entry(key.clone()).or_default();
        if let Some(r) = list.iter_mut().find(|r| r.provider == provider) {
            r.expires = expires;
            if !addrs.is_empty() {
                r.addrs = addrs;
            }
            return Ok(());
        }
        let refused = if !local && count >= self.config.max_provider_records_per_peer {
            Some("provider (for this peer)")
        } else if list.len() >= self.config.max_providers_per_key {
            Some("provider (for this key)")
        } else {
            None
        };
        if let Some(what) = refused {
            if list.is_empty() {
                self.keys.remove(&key);
            }
            return Err(KadError::StoreFull(what));
        }
        list.push(ProviderRecord {
            provider,
            addrs,
            expires,
        });
        if !local {
            *self.per_peer.entry(provider).or_default() += 1;
        }
        Ok(())
    }

    /// Drops `provider`'s record of `key`. Returns whether there was one.
    pub fn remove(&mut self, key: &[u8], provider: &PeerId) -> bool {
        let Some(list) = self.keys.get_mut(key) else {
            return false;
        };
        let Some(pos) = list.iter().position(|r| r.provider == *provider) else {
            return false;
        };
        list.remove(pos);
        if list.is_empty() {
            self.keys.remove(key);
        }
        if let Some(n) = self.per_peer.get_mut(provider) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(provider);
            }
        }
        true
    }

    /// The unexpired providers of `key`.
    pub fn providers(&mut self, key: &[u8], now: Instant) -> Vec<ProviderRecord> {
        self.prune_key(key, now);
        self.keys.get(key).cloned().unwrap_or_default()
    }

    fn prune_key(&mut self, key: &[u8], now: Instant) {
        let Some(list) = self.keys.get_mut(key) else {
            return;
        };
        let per_peer = &mut self.per_peer;
        list.retain(|r| {
            let keep = r.expires > now;
            if !keep && let Some(n) = per_peer.get_mut(&r.provider) {
                *n -= 1;
                if *n == 0 {
                    per_peer.remove(&r.provider);
                }
            }
            keep
        });
        if list.is_empty() {
            self.keys.remove(key);
        }
    }

    /// Drops expired provider records.
    pub fn prune(&mut self, now: Instant) {
        let keys: Vec<Vec<u8>> = self.keys.keys().cloned().collect();
        for k in keys {
            self.prune_key(&k, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(config: StoreConfig) -> RecordStore {
        RecordStore::new(config, Arc::new(AcceptAll))
    }

    #[test]
    fn records_are_bounded_and_expire() {
        let config = StoreConfig {
            max_records: 3,
            max_records_per_peer: 2,
            ..StoreConfig::default()
        };
        let ttl = config.record_ttl;
        let mut s = store(config);
        let now = Instant::now();
        let p = PeerId::random();
        s.put(b"a".to_vec(), b"1".to_vec(), Some(p), now).unwrap();
        s.put(b"b".to_vec(), b"2".to_vec(), Some(p), now).unwrap();
        assert!(matches!(
            s.put(b"c".to_vec(), b"3".to_vec(), Some(p), now),
            Err(KadError::StoreFull(_))
        ));
        // Replacing its own record is fine.
        s.put(b"a".to_vec(), b"1b".to_vec(), Some(p), now).unwrap();
        s.put(b"c".to_vec(), b"3".to_vec(), None, now).unwrap();
        assert!(matches!(
            s.put(b"d".to_vec(), b"4".to_vec(), None, now),
            Err(KadError::StoreFull(_))
        ));
        assert_eq!(s.get(b"a", now).unwrap().value, b"1b");
        assert!(matches!(
            s.put(b"e".to_vec(), vec![0; 64 * 1024 + 1], None, now),
            Err(KadError::ValueTooLarge { .. })
        ));
        assert!(s.put(Vec::new(), b"x".to_vec(), None, now).is_err());
        // After 36 h everything is gone, and room is made.
        let later = now + ttl;
        assert!(s.get(b"a", later).is_none());
        s.put(b"d".to_vec(), b"4".to_vec(), Some(p), later).unwrap();
        s.prune(later);
        assert_eq!(s.len(), 1);
    }

    struct OnlyPk;
    impl RecordValidator for OnlyPk {
        fn validate(&self, key: &[u8], _: &[u8]) -> Result<(), String> {
            if key.starts_with(b"/pk/") {
                Ok(())
            } else {
                Err("not a /pk/ key".into())
            }
        }
    }

    #[test]
    fn the_validator_decides() {
        let mut s = RecordStore::new(StoreConfig::default(), Arc::new(OnlyPk));
        let now = Instant::now();
        assert!(s.put(b"/pk/x".to_vec(), vec![], None, now).is_ok());
        assert!(matches!(
            s.put(b"/other".to_vec(), vec![], None, now),
            Err(KadError::RecordRefused(_))
        ));
    }

    #[test]
    fn providers_are_bounded_and_expire() {
        let config = StoreConfig {
            max_providers_per_key: 2,
            max_provider_records_per_peer: 2,
            max_provided_keys: 3,
            ..StoreConfig::default()
        };
        let ttl = config.provider_ttl;
        let mut s = ProviderStore::new(config);
        let now = Instant::now();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        s.add(b"k".to_vec(), a, vec![], false, now).unwrap();
        s.add(b"k".to_vec(), a, vec![], false, now).unwrap(); // refresh, not a second entry
        s.add(b"k".to_vec(), b, vec![], false, now).unwrap();
        assert!(s.add(b"k".to_vec(), c, vec![], false, now).is_err());
        s.add(b"k2".to_vec(), a, vec![], false, now).unwrap();
        assert!(s.add(b"k3".to_vec(), a, vec![], false, now).is_err());
        s.add(b"k3".to_vec(), c, vec![], true, now).unwrap();
        assert!(s.add(b"k4".to_vec(), c, vec![], true, now).is_err());
        assert_eq!(s.providers(b"k", now).len(), 2);
        assert!(s.providers(b"k", now + ttl).is_empty());
        s.prune(now + ttl);
        assert!(s.is_empty());
        s.add(b"k3".to_vec(), a, vec![], false, now + ttl).unwrap();
    }
}
