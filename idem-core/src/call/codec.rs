//! How a call's outcome is stored: one tag byte (`O` for `Ok`, `E` for a cached `Err`)
//! followed by the value as JSON (`serde_json` with `float_roundtrip`). A value JSON would
//! replay as something else (NaN, infinities, `Some(None)`) is refused while it is encoded
//! ([`lossless`](crate::lossless)): it is never stored.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

const OK_TAG: u8 = b'O';
const ERR_TAG: u8 = b'E';
/// A store kept this marker (`T` and the outcome's size in decimal) instead of an outcome
/// larger than its `max_record_bytes`: the call ran, its outcome cannot be replayed.
const TOO_LARGE_TAG: u8 = b'T';

/// The marker a store keeps instead of an outcome of `bytes` bytes that it will not store.
#[cfg(feature = "postgres")]
pub(crate) fn too_large_marker(bytes: usize) -> Vec<u8> {
    let mut out = vec![TOO_LARGE_TAG];
    out.extend_from_slice(bytes.to_string().as_bytes());
    out
}

/// Encodes a value into a stored outcome.
pub(crate) type EncodeFn<V> = fn(&V) -> Result<Vec<u8>, Error>;
/// Decodes a value from the JSON of a stored outcome.
pub(crate) type DecodeFn<V> = fn(&[u8]) -> Result<V, Error>;

/// A stored outcome, decoded.
pub(crate) enum StoredOutcome<T, E> {
    Ok(T),
    Err(E),
}

pub(crate) fn encode_ok<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    encode(OK_TAG, value)
}

pub(crate) fn encode_err<E: Serialize>(error: &E) -> Result<Vec<u8>, Error> {
    encode(ERR_TAG, error)
}

fn encode<V: Serialize>(tag: u8, value: &V) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(128);
    out.push(tag);
    crate::lossless::serialize(value, &mut serde_json::Serializer::new(&mut out))
        .map_err(Error::codec)?;
    Ok(out)
}

/// Decodes a stored outcome; `decode_err` is `None` when the function does not cache
/// errors (a stored `Err` is then a codec error, never a rerun).
pub(crate) fn decode<T: DeserializeOwned, E>(
    bytes: &[u8],
    decode_err: Option<DecodeFn<E>>,
) -> Result<StoredOutcome<T, E>, Error> {
    match bytes.split_first() {
        Some((&OK_TAG, json)) => from_json(json).map(StoredOutcome::Ok),
        Some((&ERR_TAG, json)) => match decode_err {
            Some(decode_err) => decode_err(json).map(StoredOutcome::Err),
            None => Err(Error::codec(
                "the stored record is a cached error, but this function does not use `cache_errors`",
            )),
        },
        Some((&TOO_LARGE_TAG, size)) => Err(Error::codec(format!(
            "the call ran, but its result ({} bytes) was larger than the store's max_record_bytes and was not stored, so it cannot be replayed; forget the key to run the call again",
            String::from_utf8_lossy(size)
        ))),
        _ => Err(Error::codec("the stored record is not an idem outcome")),
    }
}

/// `decode_err` for functions with `cache_errors`.
pub(crate) fn decode_json<E: DeserializeOwned>(json: &[u8]) -> Result<E, Error> {
    from_json(json)
}

/// Validates the UTF-8 of the whole JSON once (serde_json writes nothing else), then parses
/// it as `str`: `serde_json::from_slice` would validate every string and field name on its
/// own, which costs about a quarter of a decode.
fn from_json<V: DeserializeOwned>(json: &[u8]) -> Result<V, Error> {
    let json = std::str::from_utf8(json).map_err(Error::codec)?;
    serde_json::from_str(json).map_err(Error::codec)
}
