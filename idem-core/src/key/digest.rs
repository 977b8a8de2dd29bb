//! [`Key`], [`Fingerprint`] and [`KeyHasher`]: the 32-byte digests of the canonical
//! encoding, and the hasher that frames and hashes it.

use std::cell::RefCell;
use std::fmt;

use serde::Serialize;

use super::encoder::{EncodeError, Encoder};
use crate::error::Error;

/// The version of the canonical encoding, hashed into every key and fingerprint.
///
/// A change to the encoding bumps it, so keys of two encodings can never collide.
pub const ENCODING_VERSION: u8 = 1;

macro_rules! digest_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps 32 raw digest bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The 32 digest bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                blake3::Hash::from_bytes(self.0).to_hex().to_string()
            }

            /// Parses the 64-character hex form given by `to_hex` or `Display` (either
            /// case).
            pub fn from_hex(hex: &str) -> Result<Self, Error> {
                blake3::Hash::from_hex(hex)
                    .map(|hash| Self(*hash.as_bytes()))
                    .map_err(Error::codec)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // One `write_str` of a stack buffer: 32 `{:02x}` writes cost more than a
                // Redis store's whole client-side claim.
                f.write_str(&blake3::Hash::from_bytes(self.0).to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

digest_type! {
    /// An idempotency key: the 256-bit hash of a function's namespace and its key value.
    ///
    /// `Display` gives the hex form that [`current_key`](crate::current_key) returns and
    /// that tracing events carry.
    ///
    /// ```
    /// use idem_core::{Key, KeyHasher};
    ///
    /// let key = KeyHasher::unkeyed().key(&["billing::charge"], &"order-42").unwrap();
    /// assert_eq!(Key::from_hex(&key.to_hex()).unwrap(), key);
    /// ```
    Key
}

digest_type! {
    /// The 256-bit hash of every non-skipped argument of one call, stored beside the result
    /// so that a key reused with other arguments is refused ([`Error::PayloadMismatch`]).
    /// (The HTTP layer's request fingerprints are 128-bit xxh3 digests and a fixed tag in
    /// the same 32 bytes, unless a secret is installed: see the README's guarantee 3.)
    ///
    /// ```
    /// use idem_core::KeyHasher;
    ///
    /// let hasher = KeyHasher::unkeyed();
    /// let a = hasher.fingerprint(&("order-42", 100u64)).unwrap();
    /// let b = hasher.fingerprint(&("order-42", 200u64)).unwrap();
    /// assert_ne!(a, b);
    /// ```
    Fingerprint
}

/// Hashes encoded arguments into [`Key`]s and [`Fingerprint`]s, optionally with a secret.
///
/// The unkeyed hasher is the default. With a secret ([`KeyHasher::keyed`], installed with
/// [`install_key_hasher`](crate::install_key_hasher)), keys are keyed BLAKE3 hashes: someone
/// who can read the store cannot recover low-entropy arguments (an email, a card's last
/// four digits) by hashing guesses. Every process sharing a store must use the same secret.
///
/// ```
/// use idem_core::KeyHasher;
///
/// let plain = KeyHasher::unkeyed().key(&["signup"], &"ada@example.com").unwrap();
/// let keyed = KeyHasher::keyed(b"a 32-byte or longer server secret").key(&["signup"], &"ada@example.com").unwrap();
/// assert_ne!(plain, keyed);
/// ```
#[derive(Clone)]
pub struct KeyHasher {
    secret: Option<[u8; 32]>,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHasher")
            .field("keyed", &self.secret.is_some())
            .finish()
    }
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self::unkeyed()
    }
}

/// What a hash input is, so a key can never equal a fingerprint or a derived key.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Domain {
    Key = b'K',
    Fingerprint = b'F',
    ArgumentsKey = b'A',
}

impl KeyHasher {
    /// The default hasher: plain BLAKE3 over the canonical encoding.
    pub const fn unkeyed() -> Self {
        Self { secret: None }
    }

    /// A hasher keyed with `secret` (any length; it is stretched with BLAKE3's key
    /// derivation, so use a long random secret).
    pub fn keyed(secret: impl AsRef<[u8]>) -> Self {
        Self {
            secret: Some(blake3::derive_key(
                "idem 2026 key hasher secret v1",
                secret.as_ref(),
            )),
        }
    }

    /// Whether this hasher has a secret (the HTTP layer keeps keyed fingerprints keyed).
    #[cfg(feature = "http")]
    pub(crate) const fn is_keyed(&self) -> bool {
        self.secret.is_some()
    }

    /// The key of `value` in `namespace` (a function's name and qualifiers such as its
    /// `Self` type or type arguments).
    pub fn key<K: Serialize + ?Sized>(&self, namespace: &[&str], value: &K) -> Result<Key, Error> {
        self.digest(Domain::Key, namespace, |enc| value.serialize(enc))
            .map(Key)
    }

    /// The fingerprint of a call's arguments (usually a tuple of references).
    pub fn fingerprint<A: Serialize + ?Sized>(&self, args: &A) -> Result<Fingerprint, Error> {
        self.digest(Domain::Fingerprint, &[], |enc| args.serialize(enc))
            .map(Fingerprint)
    }

    /// The key used when a function has no `key = ".."`: derived from the namespace and the
    /// fingerprint of all its arguments, so they are encoded and hashed once.
    pub fn key_from_fingerprint(&self, namespace: &[&str], fingerprint: &Fingerprint) -> Key {
        let digest = self.digest(Domain::ArgumentsKey, namespace, |enc| {
            enc.write_raw(&fingerprint.0);
            Ok(())
        });
        Key(digest.expect("writing bytes into the buffer cannot fail"))
    }

    fn digest(
        &self,
        domain: Domain,
        namespace: &[&str],
        write: impl FnOnce(&mut Encoder<'_>) -> Result<(), EncodeError>,
    ) -> Result<[u8; 32], Error> {
        with_buffer(|buf| {
            buf.extend_from_slice(b"idem");
            buf.push(ENCODING_VERSION);
            buf.push(domain as u8);
            let mut enc = Encoder::new(buf);
            for part in namespace {
                enc.write_str(part);
            }
            write(&mut enc).map_err(|e| Error::codec(format!("cannot encode key: {e}")))?;
            let hash = match &self.secret {
                None => blake3::hash(buf),
                Some(secret) => blake3::keyed_hash(secret, buf),
            };
            Ok(*hash.as_bytes())
        })
    }
}

/// Runs `f` with an empty scratch buffer, reusing one per thread.
pub(crate) fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    }
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let result = f(&mut buf);
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::with_capacity(512);
            }
            result
        }
        // A `Serialize` impl that itself derives a key: give it its own buffer.
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(Key::from_bytes(bytes).to_hex(), expected);
        assert_eq!(Fingerprint::from_bytes(bytes).to_string(), expected);
        assert_eq!(
            format!("{:?}", Key::from_bytes(bytes)),
            format!("Key({expected})")
        );
        let key = KeyHasher::unkeyed().key(&["n"], &1).unwrap();
        assert_eq!(Key::from_hex(&key.to_hex()).unwrap(), key);
        assert_eq!(Key::from_hex(&key.to_hex().to_uppercase()).unwrap(), key);
        assert!(Key::from_hex("zz").is_err());
        assert!(Key::from_hex(&"g".repeat(64)).is_err());
        assert!(Key::from_hex(&"é".repeat(32)).is_err());
    }
}
