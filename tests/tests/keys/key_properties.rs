//! Property tests of the key encoder over a zoo of types: every integer width, floats
//! (NaN, infinities, ±0, subnormals), chars, strings, bytes, options, sequences, tuples,
//! unit/newtype/tuple/struct variants, unit/newtype/tuple structs, nested structs, ordered
//! and hash maps.
//!
//! - Values equal as the encoder promises (`-0.0 == 0.0`, one NaN, a `HashMap` built in any
//!   order) give equal keys and fingerprints.
//! - Values that differ give different keys, checked twice: with every zoo shape under its
//!   own variant name, and untagged (every type meeting every other in one position)
//!   against a small model of what the encoder documents as the same value (integers by
//!   value across widths, newtypes transparent, tuples and sequences alike, struct type
//!   names not encoded).
//! - Encoding never panics, even for maps with repeated keys.
//!
//! 100,000 cases in all; the values are built from one seed by a cheap generator
//! (proptest's recursive strategies cost ~0.4 ms a case in a debug build), so the run
//! takes seconds. A failing case prints both values.

use std::collections::{BTreeMap, HashMap};

use idem_core::KeyHasher;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// A float compared as the encoder sees it: every NaN is one value, `-0.0 == 0.0`.
#[derive(Debug, Clone, Copy)]
struct F64(f64);

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        (self.0.is_nan() && other.0.is_nan()) || self.0 == other.0
    }
}

impl Serialize for F64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct F32(f32);

impl PartialEq for F32 {
    fn eq(&self, other: &Self) -> bool {
        (self.0.is_nan() && other.0.is_nan()) || self.0 == other.0
    }
}

impl Serialize for F32 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f32(self.0)
    }
}

/// Bytes, serialized as bytes (not as a sequence of integers).
#[derive(Debug, Clone, PartialEq)]
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct UnitStruct;

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Newtype(Box<Zoo>);

#[derive(Debug, Clone, PartialEq, Serialize)]
struct TupleStruct(i16, Box<Zoo>);

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Inner {
    id: u64,
    label: Option<String>,
    items: Vec<Zoo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
enum Zoo {
    Unit,
    Bool(bool),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    U128(u128),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    I128(i128),
    F32(F32),
    F64(F64),
    Char(char),
    Str(String),
    Bytes(Bytes),
    UnitStruct(UnitStruct),
    Opt(Option<Box<Zoo>>),
    Seq(Vec<Zoo>),
    Pair(Box<Zoo>, Box<Zoo>),
    Tuple((u8, Box<Zoo>)),
    Record { a: Box<Zoo>, b: i32 },
    Newtype(Newtype),
    TupleStruct(TupleStruct),
    Nested(Inner),
    Ordered(BTreeMap<String, Zoo>),
    Hashed(HashMap<i64, Zoo>),
}

/// A zoo value from `rng`, at most `depth` levels deep. Built by hand from one seed, not
/// by proptest's recursive strategies: those cost ~0.4 ms a case in a debug build, this
/// costs microseconds, so 100,000 cases take seconds. Small alphabets and ranges make
/// equal values and near misses (`"a:"` beside `"a"`, 0 beside -0.0) come up often.
fn generate(rng: &mut fastrand::Rng, depth: u32) -> Zoo {
    fn short_str(rng: &mut fastrand::Rng) -> String {
        (0..rng.usize(..3))
            .map(|_| ['a', 'b', ':'][rng.usize(..3)])
            .collect()
    }
    fn float(rng: &mut fastrand::Rng) -> f64 {
        match rng.u8(..8) {
            0 => 0.0,
            1 => -0.0,
            2 => f64::NAN,
            3 => f64::from_bits(rng.u64(..)),
            4 => [f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE / 2.0][rng.usize(..3)],
            _ => f64::from(rng.i8(..)) / 2.0,
        }
    }
    let small = rng.bool();
    let leaves = 24;
    let shapes = if depth == 0 { leaves } else { leaves + 10 };
    let sub = |rng: &mut fastrand::Rng| Box::new(generate(rng, depth - 1));
    match rng.u8(..shapes) {
        0 => Zoo::Unit,
        1 => Zoo::Bool(rng.bool()),
        2 => Zoo::U8(if small { rng.u8(..3) } else { rng.u8(..) }),
        3 => Zoo::U16(rng.u16(..)),
        4 => Zoo::U32(if small { rng.u32(..3) } else { rng.u32(..) }),
        5 => Zoo::U64(if small { rng.u64(..3) } else { rng.u64(..) }),
        6 => Zoo::U128(if small { rng.u128(..3) } else { rng.u128(..) }),
        7 => Zoo::I8(rng.i8(..)),
        8 => Zoo::I16(rng.i16(..)),
        9 => Zoo::I32(if small { rng.i32(-1..2) } else { rng.i32(..) }),
        10 => Zoo::I64(rng.i64(..)),
        11 => Zoo::I128(if small { rng.i128(-1..2) } else { rng.i128(..) }),
        12 => Zoo::F32(F32(if small {
            float(rng) as f32
        } else {
            f32::from_bits(rng.u32(..))
        })),
        13 | 14 => Zoo::F64(F64(float(rng))),
        15 => Zoo::Char(if small {
            ['a', ':', '\0'][rng.usize(..3)]
        } else {
            rng.char(..)
        }),
        16 | 17 => Zoo::Str(short_str(rng)),
        18 => Zoo::Str((0..rng.usize(..4)).map(|_| rng.char(..)).collect()),
        19 => Zoo::Bytes(Bytes((0..rng.usize(..3)).map(|_| rng.u8(..3)).collect())),
        20 => Zoo::UnitStruct(UnitStruct),
        21 => Zoo::Opt(None),
        22 => Zoo::Seq(Vec::new()),
        23 => Zoo::Ordered(BTreeMap::new()),
        24 => Zoo::Opt(Some(sub(rng))),
        25 => Zoo::Seq(
            (0..rng.usize(..3))
                .map(|_| generate(rng, depth - 1))
                .collect(),
        ),
        26 => Zoo::Pair(sub(rng), sub(rng)),
        27 => Zoo::Tuple((rng.u8(..2), sub(rng))),
        28 => Zoo::Record {
            a: sub(rng),
            b: rng.i32(-1..2),
        },
        29 => Zoo::Newtype(Newtype(sub(rng))),
        30 => Zoo::TupleStruct(TupleStruct(rng.i16(-1..2), sub(rng))),
        31 => Zoo::Nested(Inner {
            id: rng.u64(..2),
            label: rng.bool().then(|| short_str(rng)),
            items: (0..rng.usize(..2))
                .map(|_| generate(rng, depth - 1))
                .collect(),
        }),
        32 => Zoo::Ordered(
            (0..rng.usize(..3))
                .map(|_| (short_str(rng), generate(rng, depth - 1)))
                .collect(),
        ),
        _ => Zoo::Hashed(
            (0..rng.usize(..4))
                .map(|_| (rng.i64(-3..3), generate(rng, depth - 1)))
                .collect(),
        ),
    }
}

/// The zoo, from one seed.
fn zoo() -> impl Strategy<Value = Zoo> {
    any::<u64>().prop_map(|seed| generate(&mut fastrand::Rng::with_seed(seed), 3))
}

/// Two zoo values: independent, or the second a near miss of the first (one leaf
/// regenerated, which may or may not change it).
fn pair() -> impl Strategy<Value = (Zoo, Zoo)> {
    any::<u64>().prop_map(|seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        let a = generate(&mut rng, 3);
        let b = if rng.bool() {
            generate(&mut rng, 3)
        } else {
            near_miss(&a, &mut rng)
        };
        (a, b)
    })
}

/// `zoo` with one leaf (chosen at random on the way down) regenerated.
fn near_miss(zoo: &Zoo, rng: &mut fastrand::Rng) -> Zoo {
    let boxed = |z: &Zoo, rng: &mut fastrand::Rng| Box::new(near_miss(z, rng));
    let pick = |items: &[Zoo], rng: &mut fastrand::Rng| -> Vec<Zoo> {
        let mut items = items.to_vec();
        if !items.is_empty() {
            let i = rng.usize(..items.len());
            items[i] = near_miss(&items[i], rng);
        }
        items
    };
    match zoo {
        Zoo::Opt(Some(z)) => Zoo::Opt(Some(boxed(z, rng))),
        Zoo::Seq(items) => Zoo::Seq(pick(items, rng)),
        Zoo::Pair(a, b) if rng.bool() => Zoo::Pair(boxed(a, rng), b.clone()),
        Zoo::Pair(a, b) => Zoo::Pair(a.clone(), boxed(b, rng)),
        Zoo::Record { a, b } => Zoo::Record {
            a: boxed(a, rng),
            b: *b,
        },
        Zoo::Newtype(Newtype(z)) => Zoo::Newtype(Newtype(boxed(z, rng))),
        Zoo::Nested(inner) => Zoo::Nested(Inner {
            items: pick(&inner.items, rng),
            ..inner.clone()
        }),
        Zoo::Ordered(map) => Zoo::Ordered(
            map.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if rng.bool() {
                            near_miss(v, rng)
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect(),
        ),
        _ => generate(rng, 0),
    }
}

/// A value equal to `zoo` (by the encoder's promises) but built differently: the other
/// zero, another NaN, hash maps filled in reverse order (and with their own random state).
fn twin(zoo: &Zoo) -> Zoo {
    let boxed = |z: &Zoo| Box::new(twin(z));
    match zoo {
        Zoo::F64(F64(v)) if v.is_nan() => Zoo::F64(F64(-f64::NAN)),
        Zoo::F64(F64(v)) if *v == 0.0 => Zoo::F64(F64(-v)),
        Zoo::F32(F32(v)) if v.is_nan() => Zoo::F32(F32(-f32::NAN)),
        Zoo::F32(F32(v)) if *v == 0.0 => Zoo::F32(F32(-v)),
        Zoo::Opt(Some(z)) => Zoo::Opt(Some(boxed(z))),
        Zoo::Seq(items) => Zoo::Seq(items.iter().map(twin).collect()),
        Zoo::Pair(a, b) => Zoo::Pair(boxed(a), boxed(b)),
        Zoo::Tuple((n, z)) => Zoo::Tuple((*n, boxed(z))),
        Zoo::Record { a, b } => Zoo::Record { a: boxed(a), b: *b },
        Zoo::Newtype(Newtype(z)) => Zoo::Newtype(Newtype(boxed(z))),
        Zoo::TupleStruct(TupleStruct(n, z)) => Zoo::TupleStruct(TupleStruct(*n, boxed(z))),
        Zoo::Nested(inner) => Zoo::Nested(Inner {
            id: inner.id,
            label: inner.label.clone(),
            items: inner.items.iter().map(twin).collect(),
        }),
        Zoo::Ordered(map) => Zoo::Ordered(map.iter().map(|(k, v)| (k.clone(), twin(v))).collect()),
        Zoo::Hashed(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by_key(|(k, _)| std::cmp::Reverse(**k));
            let mut rebuilt = HashMap::with_capacity(entries.len() * 4);
            for (k, v) in entries {
                rebuilt.insert(*k, twin(v));
            }
            Zoo::Hashed(rebuilt)
        }
        other => other.clone(),
    }
}

/// The zoo value without its variant names: leaves of every type meet in one position,
/// so a collision across types (a `char` and a `str`, `None` and `()`, a map and a
/// struct) would show.
struct Untagged<'a>(&'a Zoo);

impl Serialize for Untagged<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeStruct, SerializeTuple, SerializeTupleStruct};
        match self.0 {
            Zoo::Unit => s.serialize_unit(),
            Zoo::Bool(v) => s.serialize_bool(*v),
            Zoo::U8(v) => s.serialize_u8(*v),
            Zoo::U16(v) => s.serialize_u16(*v),
            Zoo::U32(v) => s.serialize_u32(*v),
            Zoo::U64(v) => s.serialize_u64(*v),
            Zoo::U128(v) => s.serialize_u128(*v),
            Zoo::I8(v) => s.serialize_i8(*v),
            Zoo::I16(v) => s.serialize_i16(*v),
            Zoo::I32(v) => s.serialize_i32(*v),
            Zoo::I64(v) => s.serialize_i64(*v),
            Zoo::I128(v) => s.serialize_i128(*v),
            Zoo::F32(v) => v.serialize(s),
            Zoo::F64(v) => v.serialize(s),
            Zoo::Char(v) => s.serialize_char(*v),
            Zoo::Str(v) => s.serialize_str(v),
            Zoo::Bytes(v) => v.serialize(s),
            Zoo::UnitStruct(_) => s.serialize_unit_struct("UnitStruct"),
            Zoo::Opt(None) => s.serialize_none(),
            Zoo::Opt(Some(z)) => s.serialize_some(&u(z)),
            Zoo::Seq(items) => s.collect_seq(items.iter().map(Untagged)),
            Zoo::Pair(a, b) => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&u(a))?;
                t.serialize_element(&u(b))?;
                t.end()
            }
            Zoo::Tuple((n, z)) => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(n)?;
                t.serialize_element(&u(z))?;
                t.end()
            }
            Zoo::Record { a, b } => {
                let mut r = s.serialize_struct("Record", 2)?;
                r.serialize_field("a", &u(a))?;
                r.serialize_field("b", b)?;
                r.end()
            }
            Zoo::Newtype(Newtype(z)) => s.serialize_newtype_struct("Newtype", &u(z)),
            Zoo::TupleStruct(TupleStruct(n, z)) => {
                let mut t = s.serialize_tuple_struct("TupleStruct", 2)?;
                t.serialize_field(n)?;
                t.serialize_field(&u(z))?;
                t.end()
            }
            Zoo::Nested(inner) => {
                let mut r = s.serialize_struct("Inner", 3)?;
                r.serialize_field("id", &inner.id)?;
                r.serialize_field("label", &inner.label)?;
                r.serialize_field(
                    "items",
                    &inner.items.iter().map(Untagged).collect::<Vec<_>>(),
                )?;
                r.end()
            }
            Zoo::Ordered(map) => s.collect_map(map.iter().map(|(k, v)| (k, Untagged(v)))),
            Zoo::Hashed(map) => s.collect_map(map.iter().map(|(k, v)| (k, Untagged(v)))),
        }
    }
}

fn u(zoo: &Zoo) -> Untagged<'_> {
    Untagged(zoo)
}

/// What the encoder promises to tell apart, and nothing more: integers by value (any
/// width), one NaN and one zero (`f32` widened), newtypes transparent, unit structs as
/// `()`, tuples, tuple structs and sequences alike, structs by field names (not type
/// names), maps by their sorted entries.
#[derive(Debug, PartialEq, PartialOrd)]
enum Canon {
    Unit,
    Bool(bool),
    Int(i128),
    BigUint(u128),
    Float(u64),
    Char(char),
    Str(String),
    Bytes(Vec<u8>),
    None,
    Some(Box<Canon>),
    Seq(Vec<Canon>),
    Map(Vec<(Canon, Canon)>),
    Struct(Vec<(&'static str, Canon)>),
}

fn canon_float(v: f64) -> Canon {
    Canon::Float(if v.is_nan() {
        f64::NAN.to_bits()
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    })
}

fn canon(zoo: &Zoo) -> Canon {
    let int = |v: i128| Canon::Int(v);
    match zoo {
        Zoo::Unit | Zoo::UnitStruct(_) => Canon::Unit,
        Zoo::Bool(v) => Canon::Bool(*v),
        Zoo::U8(v) => int((*v).into()),
        Zoo::U16(v) => int((*v).into()),
        Zoo::U32(v) => int((*v).into()),
        Zoo::U64(v) => int((*v).into()),
        Zoo::U128(v) => i128::try_from(*v).map_or(Canon::BigUint(*v), int),
        Zoo::I8(v) => int((*v).into()),
        Zoo::I16(v) => int((*v).into()),
        Zoo::I32(v) => int((*v).into()),
        Zoo::I64(v) => int((*v).into()),
        Zoo::I128(v) => int(*v),
        Zoo::F32(F32(v)) => canon_float((*v).into()),
        Zoo::F64(F64(v)) => canon_float(*v),
        Zoo::Char(v) => Canon::Char(*v),
        Zoo::Str(v) => Canon::Str(v.clone()),
        Zoo::Bytes(Bytes(v)) => Canon::Bytes(v.clone()),
        Zoo::Opt(None) => Canon::None,
        Zoo::Opt(Some(z)) => Canon::Some(Box::new(canon(z))),
        Zoo::Seq(items) => Canon::Seq(items.iter().map(canon).collect()),
        Zoo::Pair(a, b) => Canon::Seq(vec![canon(a), canon(b)]),
        Zoo::Tuple((n, z)) => Canon::Seq(vec![int((*n).into()), canon(z)]),
        Zoo::TupleStruct(TupleStruct(n, z)) => Canon::Seq(vec![int((*n).into()), canon(z)]),
        Zoo::Record { a, b } => Canon::Struct(vec![("a", canon(a)), ("b", int((*b).into()))]),
        Zoo::Newtype(Newtype(z)) => canon(z),
        Zoo::Nested(inner) => Canon::Struct(vec![
            ("id", int(inner.id.into())),
            (
                "label",
                match &inner.label {
                    None => Canon::None,
                    Some(l) => Canon::Some(Box::new(Canon::Str(l.clone()))),
                },
            ),
            ("items", Canon::Seq(inner.items.iter().map(canon).collect())),
        ]),
        Zoo::Ordered(map) => sorted(map.iter().map(|(k, v)| (Canon::Str(k.clone()), canon(v)))),
        Zoo::Hashed(map) => sorted(map.iter().map(|(k, v)| (int((*k).into()), canon(v)))),
    }
}

fn sorted(entries: impl Iterator<Item = (Canon, Canon)>) -> Canon {
    let mut entries: Vec<_> = entries.collect();
    entries.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Canon::Map(entries)
}

/// A map that may repeat a key (no Rust map does): the encoder must not panic on it.
struct RepeatedKeys(Vec<(Zoo, Zoo)>);

impl Serialize for RepeatedKeys {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

const HASHER: KeyHasher = KeyHasher::unkeyed();

fn key(value: &impl Serialize) -> idem_core::Key {
    HASHER.key(&["tests.properties"], value).unwrap()
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(40_000))]

    /// Equal values give equal keys and fingerprints, however they were built.
    #[test]
    fn equal_values_give_equal_keys(value in zoo()) {
        let other = twin(&value);
        prop_assert_eq!(&other, &value);
        prop_assert_eq!(key(&value), key(&other));
        prop_assert_eq!(key(&Untagged(&value)), key(&Untagged(&other)));
        prop_assert_eq!(
            HASHER.fingerprint(&(&value, 1u8)).unwrap(),
            HASHER.fingerprint(&(&other, 1u8)).unwrap()
        );
    }
}

proptest! {
    #![proptest_config(config(50_000))]

    /// Two values give one key exactly when they are equal.
    #[test]
    fn different_values_give_different_keys((a, b) in pair()) {
        prop_assert_eq!(a == b, key(&a) == key(&b), "{:?} vs {:?}", a, b);
        // The same values as map keys and inside a struct field.
        let wrap = |z: &Zoo| Zoo::Record { a: Box::new(z.clone()), b: 0 };
        prop_assert_eq!(a == b, key(&wrap(&a)) == key(&wrap(&b)));
        // Without variant names, where every type meets every other: one key exactly when
        // the encoder's documented model says the values are the same.
        let same = canon(&a) == canon(&b);
        prop_assert_eq!(
            same,
            key(&Untagged(&a)) == key(&Untagged(&b)),
            "{:?} vs {:?}",
            canon(&a),
            canon(&b)
        );
    }
}

proptest! {
    #![proptest_config(config(10_000))]

    /// Encoding never panics, whatever a `Serialize` impl hands it.
    #[test]
    fn encoding_never_panics(entries in proptest::collection::vec(pair(), 0..4)) {
        let repeated: Vec<_> = entries.iter().chain(&entries).cloned().collect();
        let _ = HASHER.key(&["tests.properties"], &RepeatedKeys(repeated));
        let _ = HASHER.fingerprint(&RepeatedKeys(entries));
    }
}
