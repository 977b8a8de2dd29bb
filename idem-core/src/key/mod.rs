//! Stable idempotency keys: a canonical, structured encoding of the arguments, hashed.
//!
//! The encoding (version [`ENCODING_VERSION`]) is written by a `serde::Serializer` into a
//! reused buffer and hashed with BLAKE3 (256 bits). Every value is tagged and every
//! string is length-prefixed, so `("a:b", "")` and `("a", "b")` encode differently; map
//! entries are sorted by their encoded key, so a `HashMap` gives the same key whatever its
//! iteration order; integers are encoded by value, so widening a `u32` field to `u64`
//! keeps keys stable; struct fields are encoded by name in declaration order; enum
//! variants by name, not index. The raw arguments never leave this module: stores only
//! see the 32-byte hashes.

mod digest;
mod encoder;
mod map;

#[cfg(feature = "http")]
pub(crate) use digest::with_buffer;
pub use digest::{ENCODING_VERSION, Fingerprint, Key, KeyHasher};
#[cfg(any(feature = "moka", feature = "redis"))]
pub(crate) use map::KeyHashBuilder;
pub(crate) use map::ShardedMap;
