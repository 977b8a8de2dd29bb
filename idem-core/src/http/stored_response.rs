//! How a response is stored: a record value that is not JSON, so the body is kept as its
//! own bytes and replayed without a copy.
//!
//! ```text
//! b'H' version:u8 kind:u8 status:u16be
//!   kind b'R' (replayable): count:u16be { name_len:u16be name value_len:u32be value }* body
//!   kind b'S' (streamed, not replayable): nothing more
//! ```
//!
//! Hop-by-hop headers (and any header the `Connection` header names), `Date`, `Set-Cookie`
//! and `Content-Length` (the replayed body sets it) are never stored.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::error::Error;
use crate::store::Record;

const TAG: u8 = b'H';
const VERSION: u8 = 1;
const KIND_REPLAYABLE: u8 = b'R';
const KIND_STREAMED: u8 = b'S';

/// A response as a retry gets it back.
#[derive(Debug)]
pub(crate) enum StoredResponse {
    /// The whole response.
    Replayable {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// The first response was streamed to its client without being stored whole: the
    /// handler ran and completed with `status`, but there is nothing to replay.
    Streamed { status: StatusCode },
}

/// The record value of a whole response.
pub(crate) fn encode_replayable(
    status: StatusCode,
    headers: &HeaderMap,
    not_replayed: &[HeaderName],
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    let kept: Vec<_> = headers
        .iter()
        .filter(|(name, _)| is_stored(name, headers) && !not_replayed.contains(name))
        .collect();
    let count = u16::try_from(kept.len()).map_err(|_| Error::codec("too many headers"))?;
    let head: usize = kept
        .iter()
        .map(|(name, value)| 6 + name.as_str().len() + value.len())
        .sum();
    let mut out = Vec::with_capacity(7 + head + body.len());
    out.extend_from_slice(&[TAG, VERSION, KIND_REPLAYABLE]);
    out.extend_from_slice(&status.as_u16().to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for (name, value) in kept {
        let name = name.as_str().as_bytes();
        let name_len =
            u16::try_from(name.len()).map_err(|_| Error::codec("header name too long"))?;
        let value_len =
            u32::try_from(value.len()).map_err(|_| Error::codec("header value too long"))?;
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(body);
    Ok(out)
}

/// The record value of a streamed response.
pub(crate) fn encode_streamed(status: StatusCode) -> Vec<u8> {
    let mut out = vec![TAG, VERSION, KIND_STREAMED];
    out.extend_from_slice(&status.as_u16().to_be_bytes());
    out
}

/// Reads a stored response; the body shares the record's bytes.
pub(crate) fn decode(record: &Arc<Record>) -> Result<StoredResponse, Error> {
    let mut input = Input {
        bytes: record.value(),
        at: 0,
    };
    if input.take(1)? != [TAG] {
        return Err(Error::codec(
            "the stored record is not an HTTP response (another idem writer uses this key)",
        ));
    }
    let version = input.take(1)?[0];
    if version != VERSION {
        return Err(Error::codec(format!(
            "stored HTTP response of format version {version}, this build reads {VERSION}"
        )));
    }
    let kind = input.take(1)?[0];
    let status = StatusCode::from_u16(input.u16()?).map_err(Error::codec)?;
    match kind {
        KIND_STREAMED => Ok(StoredResponse::Streamed { status }),
        KIND_REPLAYABLE => {
            let count = input.u16()?;
            // Room for the `Idempotent-Replayed` header the replay adds: a map that grows
            // reallocates (twice at this size), on every replay.
            let mut headers = HeaderMap::with_capacity(usize::from(count) + 1);
            // Header values and the body share the record's bytes: no copy per replay.
            let whole = Bytes::from_owner(RecordBytes(Arc::clone(record)));
            for _ in 0..count {
                let len = usize::from(input.u16()?);
                let name = HeaderName::from_bytes(input.take(len)?).map_err(Error::codec)?;
                let len = input.u32()? as usize;
                input.take(len)?;
                let value = HeaderValue::from_maybe_shared(whole.slice(input.at - len..input.at))
                    .map_err(Error::codec)?;
                headers.append(name, value);
            }
            let body = whole.slice(input.at..);
            Ok(StoredResponse::Replayable {
                status,
                headers,
                body,
            })
        }
        other => Err(Error::codec(format!(
            "unknown stored HTTP response kind {other}"
        ))),
    }
}

/// Whether a response header is stored and replayed.
fn is_stored(name: &HeaderName, headers: &HeaderMap) -> bool {
    if matches!(
        *name,
        header::CONNECTION
            | header::TRANSFER_ENCODING
            | header::TE
            | header::TRAILER
            | header::UPGRADE
            | header::PROXY_AUTHENTICATE
            | header::PROXY_AUTHORIZATION
            | header::DATE
            | header::SET_COOKIE
            | header::CONTENT_LENGTH
    ) || name == "keep-alive"
        || name == "proxy-connection"
    {
        return false;
    }
    // RFC 9110 §7.6.1: the headers the `Connection` header names are hop-by-hop too.
    !headers.get_all(header::CONNECTION).iter().any(|listed| {
        listed.to_str().is_ok_and(|listed| {
            listed
                .split(',')
                .any(|option| option.trim().eq_ignore_ascii_case(name.as_str()))
        })
    })
}

/// A record's value as the owner of a replayed body.
struct RecordBytes(Arc<Record>);

impl AsRef<[u8]> for RecordBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.value()
    }
}

struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

// Inlined: as calls they cost a replay ~450 instructions for a few bytes of parsing.
impl<'a> Input<'a> {
    #[inline]
    fn take(&mut self, len: usize) -> Result<&'a [u8], Error> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| Error::codec("the stored HTTP response is truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    #[inline]
    fn u16(&mut self) -> Result<u16, Error> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, Error> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Fingerprint;

    fn record(value: Vec<u8>) -> Arc<Record> {
        Arc::new(Record::new(Fingerprint::from_bytes([0; 32]), value))
    }

    #[test]
    fn round_trip_drops_what_is_never_stored() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("1"));
        headers.append("x-multi", HeaderValue::from_static("2"));
        headers.insert("set-cookie", HeaderValue::from_static("session=secret"));
        headers.insert(
            "date",
            HeaderValue::from_static("Thu, 03 Dec 2026 07:00:00 GMT"),
        );
        headers.insert("connection", HeaderValue::from_static("x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        let value = encode_replayable(StatusCode::CREATED, &headers, &[], b"{\"id\":1}").unwrap();
        let StoredResponse::Replayable {
            status,
            headers,
            body,
        } = decode(&record(value)).unwrap()
        else {
            panic!("not replayable")
        };
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(&body[..], b"{\"id\":1}");
        let names: Vec<_> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-multi"]);
        assert_eq!(headers.get_all("x-multi").iter().count(), 2);
    }

    #[test]
    fn streamed_and_bad_records() {
        let value = encode_streamed(StatusCode::OK);
        assert!(matches!(
            decode(&record(value.clone())).unwrap(),
            StoredResponse::Streamed {
                status: StatusCode::OK
            }
        ));
        for bad in [
            vec![],
            b"O{}".to_vec(),
            vec![TAG, 9, KIND_STREAMED, 0, 200],
            value[..4].to_vec(),
            vec![TAG, VERSION, KIND_REPLAYABLE, 0, 200, 0, 1, 0, 200],
            vec![TAG, VERSION, b'?', 0, 200],
            vec![TAG, VERSION, KIND_STREAMED, 0, 7],
        ] {
            assert!(matches!(decode(&record(bad)), Err(Error::Codec(_))));
        }
    }
}
