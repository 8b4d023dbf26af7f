//! The set of `custom_id`s a body has used, kept as hashes so it stays small.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher, RandomState};

/// The `custom_id`s seen so far, as 128-bit keyed hashes (two independent SipHash keys, fresh
/// for every body): 16 bytes an id whatever its length. Two different ids collide with a
/// probability around 2^-128 per pair (under 10^-28 for a full batch of 100,000).
#[derive(Default)]
pub(super) struct SeenIds {
    keys: (RandomState, RandomState),
    set: HashSet<u128, IdentityHash>,
}

impl SeenIds {
    /// False if `id` was seen before.
    pub(super) fn insert(&mut self, id: &str) -> bool {
        let hi = self.keys.0.hash_one(id);
        let lo = self.keys.1.hash_one(id);
        self.set.insert(u128::from(hi) << 64 | u128::from(lo))
    }
}

/// The values are already keyed hashes: hashing them again would only cost time.
#[derive(Default, Clone, Copy)]
struct IdentityHash;

impl BuildHasher for IdentityHash {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}
