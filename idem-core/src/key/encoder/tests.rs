//! The encoder's unit tests: tags, framing and map order.

use std::collections::{BTreeMap, HashMap};

use super::*;

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.serialize(&mut Encoder::new(&mut out)).unwrap();
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
            let mut enc = Encoder::new(&mut out);
            let mut map = ser::Serializer::serialize_map(&mut enc, Some(entries.len())).unwrap();
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
