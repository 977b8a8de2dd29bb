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

use std::cell::RefCell;
use std::fmt;

use serde::Serialize;
use serde::ser;

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
                hex(&self.0, &mut [0u8; 64]).to_owned()
            }

            /// Parses the 64-character hex form given by `to_hex` or `Display`.
            pub fn from_hex(hex: &str) -> Result<Self, Error> {
                let bytes = hex.as_bytes();
                if bytes.len() != 64 {
                    return Err(Error::codec(format!(
                        "expected 64 hex characters, got {}",
                        bytes.len()
                    )));
                }
                let mut out = [0u8; 32];
                for (i, pair) in bytes.chunks_exact(2).enumerate() {
                    let digit = |c: u8| {
                        (c as char)
                            .to_digit(16)
                            .ok_or_else(|| Error::codec(format!("not a hex digit: {:?}", c as char)))
                    };
                    out[i] = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
                }
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // One `write_str` of a table-encoded buffer: 32 `{:02x}` writes cost more
                // than a Redis store's whole client-side claim.
                f.write_str(hex(&self.0, &mut [0u8; 64]))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

/// Lower-case hex of `bytes` into `out` (twice as long).
fn hex<'a>(bytes: &[u8; 32], out: &'a mut [u8; 64]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    std::str::from_utf8(out).expect("hex digits are ASCII")
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
            enc.out.extend_from_slice(&fingerprint.0);
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
            let mut enc = Encoder { out: buf };
            for part in namespace {
                enc.write_str(part);
            }
            write(&mut enc).map_err(|e| Error::codec(format!("cannot encode key: {}", e.0)))?;
            let hash = match &self.secret {
                None => blake3::hash(buf),
                Some(secret) => blake3::keyed_hash(secret, buf),
            };
            Ok(*hash.as_bytes())
        })
    }
}

/// The `BuildHasher` of in-memory maps keyed by [`Key`] (or tuples containing one).
///
/// A key is already a uniformly distributed BLAKE3 digest, so SipHash over its 32 bytes
/// (std's default, ~10% of an in-memory hit) buys nothing; `foldhash`'s fast hasher, seeded
/// per map, is enough.
pub(crate) type KeyHashBuilder = foldhash::fast::RandomState;

/// Runs `f` with an empty scratch buffer, reusing one per thread.
fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
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

/// Tags of the canonical encoding. Each value starts with one; `END` closes sequences,
/// maps and structs, and is never the start of a value.
mod tag {
    pub const UNIT: u8 = 0x00;
    pub const FALSE: u8 = 0x01;
    pub const TRUE: u8 = 0x02;
    pub const INT: u8 = 0x03;
    pub const BIG_UINT: u8 = 0x04;
    pub const FLOAT: u8 = 0x05;
    pub const CHAR: u8 = 0x06;
    pub const STR: u8 = 0x07;
    pub const BYTES: u8 = 0x08;
    pub const NONE: u8 = 0x09;
    pub const SOME: u8 = 0x0a;
    pub const SEQ: u8 = 0x0b;
    pub const MAP: u8 = 0x0c;
    pub const STRUCT: u8 = 0x0d;
    pub const VARIANT: u8 = 0x0e;
    pub const END: u8 = 0x0f;
}

/// An error raised by a `Serialize` impl while encoding a key.
#[derive(Debug)]
pub(crate) struct EncodeError(String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

/// The canonical encoder: a `serde::Serializer` appending to a byte buffer.
pub(crate) struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    fn write_varint(&mut self, n: u128) {
        match u64::try_from(n) {
            Ok(n) => self.write_varint64(n),
            Err(_) => {
                let mut n = n;
                loop {
                    let byte = (n & 0x7f) as u8;
                    n >>= 7;
                    if n == 0 {
                        self.out.push(byte);
                        return;
                    }
                    self.out.push(byte | 0x80);
                }
            }
        }
    }

    /// LEB128, as `write_varint`, for values that fit 64 bits (the usual case).
    #[inline]
    fn write_varint64(&mut self, mut n: u64) {
        if n < 0x80 {
            self.out.push(n as u8);
            return;
        }
        let mut bytes = [0u8; 10];
        let mut len = 0;
        while n >= 0x80 {
            bytes[len] = (n as u8) | 0x80;
            n >>= 7;
            len += 1;
        }
        bytes[len] = n as u8;
        self.out.extend_from_slice(&bytes[..=len]);
    }

    fn write_int(&mut self, n: i128) {
        self.out.push(tag::INT);
        // Zigzag, so small negative numbers stay short.
        self.write_varint(((n << 1) ^ (n >> 127)) as u128);
    }

    /// `write_int` for a value that fits 64 bits: the zigzag of an `i64` computed in 64
    /// bits is the same number as computed in 128.
    #[inline]
    fn write_i64(&mut self, n: i64) {
        self.out.push(tag::INT);
        self.write_varint64(((n << 1) ^ (n >> 63)) as u64);
    }

    /// `write_int` for an unsigned value.
    #[inline]
    fn write_u64(&mut self, n: u64) {
        if n < 1 << 63 {
            self.out.push(tag::INT);
            self.write_varint64(n << 1);
        } else {
            self.write_int(n.into());
        }
    }

    #[inline]
    fn write_str(&mut self, s: &str) {
        self.out.reserve(s.len() + 11);
        self.out.push(tag::STR);
        self.write_varint64(s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    fn write_variant(&mut self, variant: &str) {
        self.out.push(tag::VARIANT);
        self.write_str(variant);
    }
}

/// Encodes a map's entries, then sorts them by their encoded key.
pub(crate) struct MapEncoder<'e, 'a> {
    enc: &'e mut Encoder<'a>,
    start: usize,
    /// For each entry: where its key starts and where its value starts. Small maps (the
    /// usual case) need no allocation.
    entries: Entries,
}

/// Entry offsets: inline up to `INLINE_ENTRIES`, then on the heap.
// Lives on the stack for the duration of one map: the inline array is the point.
#[allow(clippy::large_enum_variant)]
enum Entries {
    Inline(usize, [(usize, usize); INLINE_ENTRIES]),
    Heap(Vec<(usize, usize)>),
}

const INLINE_ENTRIES: usize = 16;

impl Entries {
    fn push(&mut self, entry: (usize, usize)) {
        match self {
            Entries::Inline(len, array) if *len < INLINE_ENTRIES => {
                array[*len] = entry;
                *len += 1;
            }
            Entries::Inline(len, array) => {
                let mut heap = Vec::with_capacity(2 * INLINE_ENTRIES);
                heap.extend_from_slice(&array[..*len]);
                heap.push(entry);
                *self = Entries::Heap(heap);
            }
            Entries::Heap(heap) => heap.push(entry),
        }
    }

    fn as_slice(&self) -> &[(usize, usize)] {
        match self {
            Entries::Inline(len, array) => &array[..*len],
            Entries::Heap(heap) => heap,
        }
    }
}

impl<'e, 'a> MapEncoder<'e, 'a> {
    fn finish(self) {
        let MapEncoder {
            enc,
            start,
            entries,
        } = self;
        let entries = entries.as_slice();
        let end = enc.out.len();
        let out = &mut *enc.out;
        let key = |i: usize| -> std::ops::Range<usize> {
            let (k, v) = entries[i];
            k..v
        };
        let sorted = (1..entries.len()).all(|i| out[key(i - 1)] <= out[key(i)]);
        if !sorted {
            // The sorted order of the entries, by their encoded key.
            let mut inline = [0usize; INLINE_ENTRIES];
            let mut heap = Vec::new();
            let order: &mut [usize] = if entries.len() <= INLINE_ENTRIES {
                &mut inline[..entries.len()]
            } else {
                heap.extend(0..entries.len());
                &mut heap
            };
            for (i, slot) in order.iter_mut().enumerate() {
                *slot = i;
            }
            if order.len() <= INLINE_ENTRIES {
                // Insertion sort: stable, no allocation, fast for a few entries.
                for i in 1..order.len() {
                    let mut j = i;
                    while j > 0 && out[key(order[j - 1])] > out[key(order[j])] {
                        order.swap(j - 1, j);
                        j -= 1;
                    }
                }
            } else {
                order.sort_by(|&a, &b| out[key(a)].cmp(&out[key(b)]));
            }
            // Append the entries in order after the map, then move them into place.
            out.reserve(end - start);
            for &i in order.iter() {
                let entry_start = entries[i].0;
                let entry_end = entries.get(i + 1).map_or(end, |next| next.0);
                out.extend_from_within(entry_start..entry_end);
            }
            out.copy_within(end.., start);
            out.truncate(end);
        }
        out.push(tag::END);
    }
}

impl<'e, 'a> ser::Serializer for &'e mut Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = MapEncoder<'e, 'a>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.out.push(if v { tag::TRUE } else { tag::FALSE });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.write_i64(v.into());
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.write_i64(v.into());
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.write_i64(v.into());
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        self.write_i64(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        self.write_int(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.write_u64(v.into());
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.write_u64(v.into());
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.write_u64(v.into());
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        self.write_u64(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        match i128::try_from(v) {
            Ok(v) => self.write_int(v),
            Err(_) => {
                self.out.push(tag::BIG_UINT);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        // One NaN and one zero, so equal-looking arguments give one key.
        let v = if v.is_nan() {
            f64::NAN
        } else if v == 0.0 {
            0.0
        } else {
            v
        };
        self.out.push(tag::FLOAT);
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.out.push(tag::CHAR);
        self.write_varint(u32::from(v).into());
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.write_str(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.out.push(tag::BYTES);
        self.write_varint(v.len() as u128);
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.out.push(tag::NONE);
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), EncodeError> {
        self.out.push(tag::SOME);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.out.push(tag::UNIT);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        self.write_variant(variant);
        self.out.push(tag::UNIT);
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.write_variant(variant);
        value.serialize(self)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self, EncodeError> {
        self.out.push(tag::SEQ);
        Ok(self)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, EncodeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Self, EncodeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, EncodeError> {
        self.write_variant(variant);
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapEncoder<'e, 'a>, EncodeError> {
        self.out.push(tag::MAP);
        let start = self.out.len();
        Ok(MapEncoder {
            enc: self,
            start,
            entries: match len {
                Some(len) if len > INLINE_ENTRIES => Entries::Heap(Vec::with_capacity(len)),
                _ => Entries::Inline(0, [(0, 0); INLINE_ENTRIES]),
            },
        })
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, EncodeError> {
        self.out.push(tag::STRUCT);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self, EncodeError> {
        self.write_variant(variant);
        self.out.push(tag::STRUCT);
        Ok(self)
    }
}

macro_rules! seq_like {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for &mut Encoder<'_> {
            type Ok = ();
            type Error = EncodeError;
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), EncodeError> {
                self.out.push(tag::END);
                Ok(())
            }
        }
    )*};
}

seq_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

macro_rules! struct_like {
    ($($trait:ident),*) => {$(
        impl ser::$trait for &mut Encoder<'_> {
            type Ok = ();
            type Error = EncodeError;
            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                name: &'static str,
                value: &T,
            ) -> Result<(), EncodeError> {
                self.write_str(name);
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), EncodeError> {
                self.out.push(tag::END);
                Ok(())
            }
        }
    )*};
}

struct_like!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for MapEncoder<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), EncodeError> {
        let key_start = self.enc.out.len();
        key.serialize(&mut *self.enc)?;
        self.entries.push((key_start, self.enc.out.len()));
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut *self.enc)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    fn encode<T: Serialize>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        v.serialize(&mut Encoder { out: &mut out }).unwrap();
        out
    }

    #[test]
    fn strings_are_length_prefixed() {
        assert_ne!(encode(&("a:b", "")), encode(&("a", "b")));
        assert_ne!(encode(&("ab", "c")), encode(&("a", "bc")));
    }

    #[test]
    fn map_order_does_not_matter() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..50 {
            a.insert(format!("k{i}"), i);
        }
        for i in (0..50).rev() {
            b.insert(format!("k{i}"), i);
        }
        let sorted: BTreeMap<_, _> = a.clone().into_iter().collect();
        assert_eq!(encode(&a), encode(&b));
        assert_eq!(encode(&a), encode(&sorted));
    }

    #[test]
    fn nested_maps_are_sorted_inside_out() {
        let mut inner_a = HashMap::new();
        let mut inner_b = HashMap::new();
        for i in 0..20 {
            inner_a.insert(i, i * 2);
        }
        for i in (0..20).rev() {
            inner_b.insert(i, i * 2);
        }
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        a.insert("x", inner_a.clone());
        a.insert("y", inner_b.clone());
        b.insert("y", inner_a);
        b.insert("x", inner_b);
        assert_eq!(encode(&a), encode(&b));
    }

    #[test]
    fn integers_are_encoded_by_value() {
        assert_eq!(encode(&7u8), encode(&7i64));
        assert_ne!(encode(&-1i32), encode(&1i32));
        assert_ne!(encode(&u128::MAX), encode(&(u128::MAX - 1)));
    }

    #[test]
    fn integer_fast_paths_match_the_128_bit_encoding() {
        for v in [0i64, 1, -1, 63, 64, -64, -65, 1 << 40, i64::MIN, i64::MAX] {
            assert_eq!(encode(&v), encode(&i128::from(v)), "{v}");
        }
        for v in [0u64, 127, 128, 1 << 62, (1 << 63) - 1, 1 << 63, u64::MAX] {
            assert_eq!(encode(&v), encode(&u128::from(v)), "{v}");
        }
    }

    #[test]
    fn small_and_large_maps_sort_alike() {
        // Inline (≤ 16 entries) and heap paths, unsorted input, nested maps.
        for n in [1usize, 2, 3, 15, 16, 17, 40] {
            let forward: Vec<(String, u32)> = (0..n)
                .map(|i| (format!("k{}", "x".repeat(i % 7) + &i.to_string()), i as u32))
                .collect();
            let mut backward = forward.clone();
            backward.reverse();
            let sorted: BTreeMap<String, u32> = forward.iter().cloned().collect();
            let as_map = |entries: &Vec<(String, u32)>| {
                let mut out = Vec::new();
                let mut enc = Encoder { out: &mut out };
                let mut map =
                    ser::Serializer::serialize_map(&mut enc, Some(entries.len())).unwrap();
                for (k, v) in entries {
                    ser::SerializeMap::serialize_entry(&mut map, k, v).unwrap();
                }
                ser::SerializeMap::end(map).unwrap();
                out
            };
            assert_eq!(as_map(&forward), as_map(&backward), "{n}");
            assert_eq!(as_map(&forward), encode(&sorted), "{n}");
        }
    }

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
        assert!(Key::from_hex("zz").is_err());
        assert!(Key::from_hex(&"g".repeat(64)).is_err());
    }
}
