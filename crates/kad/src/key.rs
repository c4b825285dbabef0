//! Keys in the Kademlia key space: SHA-256 of a peer id's bytes or of a record key, their XOR
//! distance and the bucket a distance falls in.

use p2pnet_host::PeerId;
use sha2::{Digest, Sha256};

/// The number of bits of a key, and so the number of buckets of a routing table.
pub const KEY_BITS: usize = 256;

/// A point in the key space: the SHA-256 of a peer id (its bytes) or of a record key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

impl Key {
    /// The key of arbitrary bytes (a record or provider key, or a peer id's bytes).
    pub fn new(bytes: &[u8]) -> Key {
        Key(Sha256::digest(bytes).into())
    }

    /// The key of a peer: the SHA-256 of its id's bytes.
    pub fn from_peer(peer: &PeerId) -> Key {
        Key::new(&peer.to_bytes())
    }

    /// A key given by its hash directly (for tests and simulations).
    pub fn from_hash(hash: [u8; 32]) -> Key {
        Key(hash)
    }

    /// The 32 bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; 32];
        for (i, byte) in d.iter_mut().enumerate() {
            *byte = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The XOR distance of two keys, ordered as the 256-bit big-endian number it is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance([u8; 32]);

impl Distance {
    /// The zero distance (a key to itself).
    pub const ZERO: Distance = Distance([0; 32]);

    /// The bucket this distance falls in: `i` for distances in `[2^i, 2^(i+1))`, so 255 holds
    /// half the key space and 0 the single closest key. `None` for the zero distance.
    pub fn bucket_index(&self) -> Option<usize> {
        let leading = self.leading_zeros();
        (leading < KEY_BITS).then(|| KEY_BITS - 1 - leading)
    }

    /// The number of leading zero bits (the length of the common prefix of the two keys).
    pub fn leading_zeros(&self) -> usize {
        let mut n = 0;
        for b in &self.0 {
            if *b == 0 {
                n += 8;
            } else {
                n += b.leading_zeros() as usize;
                break;
            }
        }
        n
    }

    /// The 32 bytes, most significant first.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_xor_and_symmetric() {
        let a = Key::from_hash([0xff; 32]);
        let b = Key::from_hash([0x0f; 32]);
        assert_eq!(a.distance(&b), b.distance(&a));
        assert_eq!(a.distance(&b).as_bytes(), &[0xf0; 32]);
        assert_eq!(a.distance(&a), Distance::ZERO);
    }

    #[test]
    fn bucket_index_follows_the_highest_bit() {
        let zero = Key::from_hash([0; 32]);
        assert_eq!(zero.distance(&zero).bucket_index(), None);
        let mut h = [0u8; 32];
        h[31] = 1;
        assert_eq!(zero.distance(&Key::from_hash(h)).bucket_index(), Some(0));
        h[31] = 0x80;
        assert_eq!(zero.distance(&Key::from_hash(h)).bucket_index(), Some(7));
        let mut h = [0u8; 32];
        h[0] = 0x80;
        assert_eq!(zero.distance(&Key::from_hash(h)).bucket_index(), Some(255));
    }

    #[test]
    fn peer_key_is_sha256_of_the_id_bytes() {
        let peer = PeerId::random();
        let expected: [u8; 32] = Sha256::digest(peer.to_bytes()).into();
        assert_eq!(Key::from_peer(&peer).as_bytes(), &expected);
    }
}
