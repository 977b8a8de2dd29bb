//! The canonical encoder: a `serde::Serializer` appending tagged, length-prefixed values
//! to a byte buffer, with map entries sorted by their encoded key (see the parent module).

use std::fmt;

use serde::Serialize;
use serde::ser;

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

impl<'a> Encoder<'a> {
    /// An encoder appending to `out`.
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    /// Appends `bytes` as they are, untagged (a digest already hashed into this one).
    pub(super) fn write_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

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
    pub(super) fn write_str(&mut self, s: &str) {
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
            // Stable, so equal keys keep their order; std sorts a few entries by insertion,
            // without allocating.
            order.sort_by(|&a, &b| out[key(a)].cmp(&out[key(b)]));
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

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.out.push(if v { tag::TRUE } else { tag::FALSE });
        Ok(())
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.write_i64(v.into());
        Ok(())
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.write_i64(v.into());
        Ok(())
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.write_i64(v.into());
        Ok(())
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        self.write_i64(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        self.write_int(v);
        Ok(())
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.write_u64(v.into());
        Ok(())
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.write_u64(v.into());
        Ok(())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.write_u64(v.into());
        Ok(())
    }
    #[inline]
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
    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        self.serialize_f64(v.into())
    }
    #[inline]
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
    #[inline]
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.out.push(tag::CHAR);
        self.write_varint(u32::from(v).into());
        Ok(())
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.write_str(v);
        Ok(())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.out.push(tag::BYTES);
        self.write_varint(v.len() as u128);
        self.out.extend_from_slice(v);
        Ok(())
    }
    #[inline]
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.out.push(tag::NONE);
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), EncodeError> {
        self.out.push(tag::SOME);
        value.serialize(self)
    }
    #[inline]
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
    #[inline]
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
            #[inline]
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
            #[inline]
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
mod tests;
