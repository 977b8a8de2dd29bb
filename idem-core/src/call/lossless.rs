//! Refuses, while encoding, the values JSON would store as something else.
//!
//! `serde_json` writes NaN and ±infinity as `null`, and `Some(x)` as `x`: so `Some(None)`,
//! `Some(())` (anything that is itself `null`) replays as `None`. [`Lossless`] wraps the
//! JSON serializer and fails on exactly these, in the same pass as the encoding, so such a
//! result is never stored (the caller gets it; the key is released). Everything else is
//! passed through untouched.

use serde::ser::{self, Error as _, Serialize, Serializer};

/// `value` through [`Lossless`] into `serializer`.
pub(crate) fn serialize<S: Serializer, T: Serialize + ?Sized>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    value.serialize(Lossless {
        inner: serializer,
        in_some: false,
    })
}

/// A value to serialize through [`Lossless`].
struct Checked<'a, T: ?Sized> {
    value: &'a T,
    /// The value is the content of a `Some`, so it must not be `null` itself.
    in_some: bool,
}

impl<T: Serialize + ?Sized> Serialize for Checked<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Lossless {
            inner: serializer,
            in_some: self.in_some,
        })
    }
}

fn checked<T: ?Sized>(value: &T) -> Checked<'_, T> {
    Checked {
        value,
        in_some: false,
    }
}

/// The wrapping serializer.
struct Lossless<S> {
    inner: S,
    in_some: bool,
}

impl<S: Serializer> Lossless<S> {
    fn float(self, finite: bool) -> Result<S, S::Error> {
        if finite {
            Ok(self.inner)
        } else {
            Err(S::Error::custom(
                "NaN and infinities have no JSON encoding (they would replay as null)",
            ))
        }
    }

    fn null(self) -> Result<S, S::Error> {
        if self.in_some {
            Err(S::Error::custom(
                "`Some` of a value encoded as null (`Some(None)`, `Some(())`) would replay as `None`",
            ))
        } else {
            Ok(self.inner)
        }
    }
}

macro_rules! pass {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method(self $(, $arg: $ty)*) -> Result<S::Ok, S::Error> {
                self.inner.$method($($arg),*)
            }
        )*
    };
}

impl<S: Serializer> Serializer for Lossless<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<S::SerializeSeq>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Compound<S::SerializeMap>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    pass! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        self.float(v.is_finite())?.serialize_f32(v)
    }

    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        self.float(v.is_finite())?.serialize_f64(v)
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.null()?.serialize_none()
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.null()?.serialize_unit()
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.null()?.serialize_unit_struct(name)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_some(&Checked {
            value,
            in_some: true,
        })
    }

    // A newtype is its content in JSON, so it inherits "must not be null".
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let in_some = self.in_some;
        self.inner
            .serialize_newtype_struct(name, &Checked { value, in_some })
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner
            .serialize_newtype_variant(name, index, variant, &checked(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.inner.serialize_seq(len).map(Compound)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.inner.serialize_tuple(len).map(Compound)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.inner.serialize_tuple_struct(name, len).map(Compound)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.inner
            .serialize_tuple_variant(name, index, variant, len)
            .map(Compound)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.inner.serialize_map(len).map(Compound)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.inner.serialize_struct(name, len).map(Compound)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.inner
            .serialize_struct_variant(name, index, variant, len)
            .map(Compound)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A compound of the wrapped serializer, whose elements go through [`Lossless`] too.
struct Compound<C>(C);

macro_rules! compound {
    ($($trait:ident { $($method:ident($($key:ident: $kty:ty)?);)* })*) => {
        $(
            impl<C: ser::$trait> ser::$trait for Compound<C> {
                type Ok = C::Ok;
                type Error = C::Error;

                $(
                    fn $method<T: Serialize + ?Sized>(
                        &mut self,
                        $($key: $kty,)?
                        value: &T,
                    ) -> Result<(), C::Error> {
                        self.0.$method($($key,)? &checked(value))
                    }
                )*

                fn end(self) -> Result<C::Ok, C::Error> {
                    self.0.end()
                }
            }
        )*
    };
}

compound! {
    SerializeSeq { serialize_element(); }
    SerializeTuple { serialize_element(); }
    SerializeTupleStruct { serialize_field(); }
    SerializeTupleVariant { serialize_field(); }
    SerializeStruct { serialize_field(key: &'static str); }
    SerializeStructVariant { serialize_field(key: &'static str); }
}

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.0.serialize_key(&checked(key))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_value(&checked(value))
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), C::Error> {
        self.0.serialize_entry(&checked(key), &checked(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    fn encode<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
        let mut out = Vec::new();
        super::serialize(value, &mut serde_json::Serializer::new(&mut out))?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[derive(Serialize, Deserialize)]
    struct Unit;

    #[derive(Serialize, Deserialize)]
    struct Wrapper(Option<u8>);

    #[derive(Serialize, Deserialize)]
    struct Nested {
        a: Option<Option<u32>>,
        b: Vec<f64>,
    }

    #[test]
    fn lossy_values_are_refused() {
        assert!(encode(&f64::NAN).is_err());
        assert!(encode(&f64::INFINITY).is_err());
        assert!(encode(&f32::NEG_INFINITY).is_err());
        assert!(encode(&Some(f64::INFINITY)).is_err());
        assert!(encode(&Some(None::<u32>)).is_err());
        assert!(encode(&Some(())).is_err());
        assert!(encode(&Some(Unit)).is_err());
        assert!(encode(&Some(Wrapper(None))).is_err());
        assert!(encode(&Some(serde_json::Value::Null)).is_err());
        assert!(
            encode(&Nested {
                a: Some(None),
                b: vec![]
            })
            .is_err()
        );
        assert!(
            encode(&Nested {
                a: None,
                b: vec![1.0, f64::NAN]
            })
            .is_err()
        );
        assert!(encode(&BTreeMap::from([("k", Some(None::<u8>))])).is_err());
        assert!(encode(&vec![Ok::<_, ()>(Some(None::<u8>))]).is_err());
    }

    #[test]
    fn everything_else_encodes_as_serde_json_does() {
        fn same<T: Serialize>(value: T) {
            assert_eq!(
                encode(&value).unwrap(),
                serde_json::to_string(&value).unwrap()
            );
        }
        same(None::<Option<u32>>);
        same(Some(Some(7u32)));
        same(Some(Wrapper(Some(1))));
        same(Wrapper(None));
        same(());
        same(Unit);
        same(vec![None::<u8>, Some(3)]);
        same((1.5f64, -0.0f64, f64::MAX, f32::MIN_POSITIVE));
        same(BTreeMap::from([(1u64, None::<u8>), (2, Some(2))]));
        same(Nested {
            a: Some(Some(3)),
            b: vec![0.1, 1e300],
        });
        same(Ok::<Option<()>, ()>(None));
        same(u128::MAX);
        same('x');
        same("a \"string\"");
    }
}
