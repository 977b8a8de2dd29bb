//! The values a [`RedisStore`](super::RedisStore) writes, the token-checked scripts that
//! change them, and the parsing of Redis's replies.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::{Script, Value};

use crate::error::Error;
use crate::key::{Fingerprint, Key};
use crate::store::{ChangeNotice, Claim, RECORD_VERSION, Record, Token};

/// The tag byte of a claim value.
const CLAIM_TAG: u8 = b'C';
/// The tag byte of a completed record value.
const RECORD_TAG: u8 = b'R';
/// The length of a claim's prefix: tag, version, 32 hex digits of token.
pub(super) const CLAIM_PREFIX_LEN: usize = 34;
/// The length of a record's header: tag, version, 32-byte fingerprint.
const RECORD_HEADER_LEN: usize = 34;

/// `KEYS[1]` the record; `ARGV[1]` the renewed claim value (its first 34 bytes name the
/// holder, and are all it has since the deadline is no longer written); `ARGV[2]` the
/// lease in ms. Renews our claim only: an absent key (forgotten, or
/// our lease lapsed), another claim or a record means the claim is lost.
const RENEW_LUA: &str = r#"
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' or string.sub(v, 1, 34) ~= string.sub(ARGV[1], 1, 34) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// `KEYS[1]` the record; `ARGV[1]` the claim's prefix; `ARGV[2]` the record value;
/// `ARGV[3]` its TTL in ms. Writes over our claim only: an absent key (forgotten, or our
/// lease lapsed) is not written, so a `forget` of a running call keeps its result out. The
/// same record already there (a retry of a `complete` that landed) counts as stored.
const COMPLETE_LUA: &str = r#"
local v = redis.pcall('GET', KEYS[1])
if v == ARGV[2] then return 1 end
if type(v) ~= 'string' or string.sub(v, 1, 34) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// `KEYS[1]` the record; `ARGV[1]` the claim's prefix.
const RELEASE_LUA: &str = r#"
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' or string.sub(v, 1, 34) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#;

/// The token-checked scripts. `Script::invoke_async` sends `EVALSHA` and, when the server
/// does not have the script (first use, restart, failover, `SCRIPT FLUSH`), loads it and
/// sends `EVALSHA` again.
pub(super) struct Scripts {
    pub(super) renew: Script,
    pub(super) complete: Script,
    pub(super) release: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    renew: Script::new(RENEW_LUA),
    complete: Script::new(COMPLETE_LUA),
    release: Script::new(RELEASE_LUA),
});

/// The claim value held by `token`: tag, version, token in hex. Claims written before
/// this version also carried a decimal lease deadline after the token; nothing ever read
/// it (the key's `PX` is the lease), so it is no longer written and still accepted (see
/// [`is_claim`]). The scripts compare a value's first [`CLAIM_PREFIX_LEN`] bytes only, so
/// both forms name the same holder.
pub(super) fn claim_prefix(token: Token) -> Vec<u8> {
    claim_prefix_into(token, &mut [0; CLAIM_PREFIX_LEN]).to_vec()
}

/// [`claim_prefix`] written into `out` (no allocation, for the hit path).
pub(super) fn claim_prefix_into(token: Token, out: &mut [u8; CLAIM_PREFIX_LEN]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out[0] = CLAIM_TAG;
    out[1] = RECORD_VERSION;
    for (pair, b) in out[2..].chunks_exact_mut(2).zip(token.get().to_be_bytes()) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// `n` in decimal, written at the end of `out`.
fn decimal(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[at..];
        }
    }
}

/// Whether `bytes` is a claim value this version writes or understands: tag, version, 32
/// lowercase hex digits of token, then nothing (this version) or the decimal deadline that
/// earlier versions wrote (a claim of a process not yet upgraded during a deploy).
pub(super) fn is_claim(bytes: &[u8]) -> bool {
    match bytes {
        [CLAIM_TAG, RECORD_VERSION, rest @ ..] if rest.len() >= CLAIM_PREFIX_LEN - 2 => {
            let (token, deadline) = rest.split_at(CLAIM_PREFIX_LEN - 2);
            token
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                && deadline.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

/// A duration as a Redis expiry argument in ms.
pub(super) fn millis_arg(duration: Duration) -> Vec<u8> {
    millis_into(duration, &mut [0; 20]).to_vec()
}

/// [`millis_arg`] written into `out` (no allocation, for the hit path).
pub(super) fn millis_into(duration: Duration, out: &mut [u8; 20]) -> &[u8] {
    // At least 1 ms: Redis refuses a zero expiry.
    let ms = duration.as_millis().clamp(1, i64::MAX as u128 / 4);
    decimal(u64::try_from(ms).unwrap_or(u64::MAX), out)
}

/// The Redis key `{prefix}:{key hex}` written into `out`, when it fits (no allocation, for
/// the hit path).
pub(super) fn redis_key_into<'a>(
    prefix: &str,
    key: &Key,
    out: &'a mut [u8; 160],
) -> Option<&'a [u8]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let len = prefix.len() + 1 + 64;
    if len > out.len() {
        return None;
    }
    out[..prefix.len()].copy_from_slice(prefix.as_bytes());
    out[prefix.len()] = b':';
    for (pair, b) in out[prefix.len() + 1..len]
        .chunks_exact_mut(2)
        .zip(key.as_bytes())
    {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    Some(&out[..len])
}

/// A completed record's value: tag, version, fingerprint, encoded outcome.
pub(super) fn encode_record(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + record.value().len());
    out.push(RECORD_TAG);
    out.push(RECORD_VERSION);
    out.extend_from_slice(record.fingerprint().as_bytes());
    out.extend_from_slice(record.value());
    out
}

fn decode_record(bytes: &[u8]) -> Result<Record, Error> {
    match bytes {
        [RECORD_TAG, version, rest @ ..] if rest.len() >= 32 => {
            if *version != RECORD_VERSION {
                return Err(Error::codec(format!(
                    "the stored record has version {version}, this build reads version {RECORD_VERSION}"
                )));
            }
            let (fingerprint, value) = rest.split_at(32);
            let fingerprint: [u8; 32] = fingerprint.try_into().expect("split at 32");
            Ok(Record::new(Fingerprint::from_bytes(fingerprint), value))
        }
        [CLAIM_TAG, version, ..] => Err(Error::codec(format!(
            "the stored claim has version {version}, this build reads version {RECORD_VERSION}"
        ))),
        _ => Err(Error::codec(
            "the value at the record's Redis key is not an idem record",
        )),
    }
}

/// [`decode_record`] of an owned reply: the outcome keeps the reply's buffer (no copy
/// into a new allocation, for the hit path).
fn decode_owned_record(mut bytes: Vec<u8>) -> Result<Record, Error> {
    let fingerprint = match decode_record(&bytes[..bytes.len().min(RECORD_HEADER_LEN)]) {
        // A header alone decodes to an empty outcome: the header is valid.
        Ok(header) => *header.fingerprint(),
        Err(err) => return Err(err),
    };
    bytes.drain(..RECORD_HEADER_LEN);
    Ok(Record::new(fingerprint, bytes))
}

/// Whether `bytes` starts like a completed record of this version.
pub(super) fn is_record(bytes: &[u8]) -> bool {
    bytes.len() >= RECORD_HEADER_LEN && bytes[0] == RECORD_TAG && bytes[1] == RECORD_VERSION
}

/// The completed record in a `GET` reply; `None` for anything else (absent, a claim, a
/// value this version cannot read).
pub(super) fn parse_record(reply: &Value) -> Option<Record> {
    match reply {
        Value::BulkString(bytes) if is_record(bytes) => decode_record(bytes).ok(),
        _ => None,
    }
}

/// A reply of a shape the command never gives.
pub(super) fn unexpected(what: &str, reply: &Value) -> Error {
    Error::store(format!("redis {what}: unexpected reply {reply:?}"))
}

/// A script's 0/1 answer.
pub(super) fn int_reply(what: &str, reply: Value) -> Result<bool, Error> {
    match reply {
        Value::Int(n) => Ok(n == 1),
        other => Err(unexpected(what, &other)),
    }
}

/// What the claim's `SET {key} {claim} NX PX {lease} GET` answered.
pub(super) fn parse_claim(reply: Value, token: Token) -> Result<Claim, Error> {
    match reply {
        // The key was absent: the SET took it.
        Value::Nil => Ok(Claim::Claimed {
            token,
            taken_over: false,
        }),
        // The key was there (nothing was written): a live claim or a stored record.
        Value::BulkString(bytes) => {
            if bytes.first() == Some(&CLAIM_TAG) && bytes.get(1) == Some(&RECORD_VERSION) {
                if is_claim(&bytes) {
                    Ok(Claim::InProgress(ChangeNotice::poll()))
                } else {
                    Err(Error::codec(
                        "the claim at the record's Redis key cannot be read",
                    ))
                }
            } else {
                decode_owned_record(bytes).map(|record| Claim::Completed(Arc::new(record)))
            }
        }
        other => Err(unexpected("claim", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_codec_errors() {
        let record = Record::new(Fingerprint::from_bytes([7; 32]), b"O{\"a\":1}".to_vec());
        let bytes = encode_record(&record);
        assert_eq!(decode_record(&bytes).unwrap(), record);
        for bad in [&b""[..], b"R", b"Rx", b"garbage", b"{\"json\":true}"] {
            assert!(
                matches!(decode_record(bad), Err(Error::Codec(_))),
                "{bad:?}"
            );
        }
        let mut other_version = bytes.clone();
        other_version[1] = RECORD_VERSION + 1;
        assert!(matches!(
            decode_record(&other_version),
            Err(Error::Codec(_))
        ));
    }

    #[test]
    fn stack_written_arguments_match_their_formatted_forms() {
        for ms in [0u64, 1, 9, 10, 999, 30_000, u64::MAX / 8] {
            let d = Duration::from_millis(ms);
            let expected = ms.clamp(1, i64::MAX as u64 / 4).to_string();
            assert_eq!(millis_into(d, &mut [0; 20]), expected.as_bytes());
        }
        assert_eq!(
            decimal(u64::MAX, &mut [0; 20]),
            u64::MAX.to_string().as_bytes()
        );
        let key = Key::from_bytes(std::array::from_fn(|i| (i * 7) as u8));
        assert_eq!(
            redis_key_into("idem", &key, &mut [0; 160]).unwrap(),
            format!("idem:{key}").as_bytes()
        );
        assert!(redis_key_into(&"p".repeat(100), &key, &mut [0; 160]).is_none());
        let token = Token::new(0xfeed_0000_0000_0000_0000_0000_0000_beef);
        let mut buf = [0; CLAIM_PREFIX_LEN];
        let value = claim_prefix_into(token, &mut buf);
        assert!(is_claim(value));
        assert_eq!(value, claim_prefix(token).as_slice());
        let record = Record::new(Fingerprint::from_bytes([9; 32]), b"O[1,2]".to_vec());
        assert_eq!(decode_owned_record(encode_record(&record)).unwrap(), record);
        assert!(decode_owned_record(b"R\x01short".to_vec()).is_err());
    }

    #[test]
    fn claim_prefixes_have_a_fixed_length() {
        assert_eq!(claim_prefix(Token::new(u128::MAX)).len(), CLAIM_PREFIX_LEN);
        assert_eq!(claim_prefix(Token::new(0)).len(), CLAIM_PREFIX_LEN);
    }

    #[test]
    fn claim_replies_are_classified() {
        let token = Token::new(0xfeed_0000_0000_0000_0000_0000_0000_beef);
        let value = claim_prefix(token);
        assert_eq!(value.len(), CLAIM_PREFIX_LEN, "no deadline after the token");
        assert_eq!(&value[..2], &[CLAIM_TAG, RECORD_VERSION]);
        assert_eq!(&value[2..], b"feed000000000000000000000000beef");
        assert!(is_claim(&value));
        let mut with_deadline = claim_prefix(token);
        with_deadline.extend_from_slice(b"1767225600000");
        assert!(
            is_claim(&with_deadline),
            "a claim written by an earlier version, with its deadline, is still a claim"
        );
        assert!(matches!(
            parse_claim(Value::BulkString(with_deadline), token),
            Ok(Claim::InProgress(_))
        ));

        assert!(matches!(
            parse_claim(Value::Nil, token),
            Ok(Claim::Claimed {
                token: t,
                taken_over: false
            }) if t == token
        ));
        let other = claim_prefix(Token::new(1));
        assert!(matches!(
            parse_claim(Value::BulkString(other), token),
            Ok(Claim::InProgress(_))
        ));
        let record = Record::new(Fingerprint::from_bytes([3; 32]), b"O1".to_vec());
        match parse_claim(Value::BulkString(encode_record(&record)), token) {
            Ok(Claim::Completed(found)) => assert_eq!(*found, record),
            other => panic!("{other:?}"),
        }
        let mut bad_deadline = claim_prefix(token);
        bad_deadline.extend_from_slice(b"notanumber");
        let mut upper_hex = claim_prefix(token);
        upper_hex[2] = b'F';
        let mut other_version = claim_prefix(token);
        other_version[1] = RECORD_VERSION + 1;
        for bad in [
            bad_deadline,
            upper_hex,
            claim_prefix(token)[..20].to_vec(),
            other_version,
            b"C".to_vec(),
            b"garbage".to_vec(),
        ] {
            assert!(
                matches!(
                    parse_claim(Value::BulkString(bad.clone()), token),
                    Err(Error::Codec(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_claim(Value::Int(1), token),
            Err(Error::Store(_))
        ));
    }
}
