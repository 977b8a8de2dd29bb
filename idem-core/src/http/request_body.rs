//! Reading a request body whole, up to a limit, before its key is claimed.
//!
//! `http_body_util`'s `Limited::collect` queues every chunk in a `VecDeque` (an allocation
//! and a free on every request, replays included); a body that arrives as one chunk — a
//! small JSON body, the usual case — is kept here as that chunk, not copied or queued.

use std::pin::pin;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

/// Why a body was not read whole.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Longer than the limit.
    TooLarge,
    /// The body failed before its end.
    Unreadable,
}

/// The body's bytes, or an error once more than `limit` bytes arrived (what arrives past
/// the limit is not read). Trailers are dropped, as a collected body's `to_bytes` does.
pub(crate) async fn read_whole<B: Body>(body: B, limit: usize) -> Result<Bytes, ReadError> {
    let mut body = pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ReadError::Unreadable)?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let chunk = data.remaining();
        if chunk == 0 {
            continue;
        }
        len = len.saturating_add(chunk);
        if len > limit {
            return Err(ReadError::TooLarge);
        }
        match (&mut first, &mut joined) {
            (None, _) => first = Some(data.copy_to_bytes(chunk)),
            (Some(head), None) => {
                let mut all = BytesMut::with_capacity(len);
                all.extend_from_slice(head);
                all.extend_from_slice(&data.copy_to_bytes(chunk));
                joined = Some(all);
            }
            (Some(_), Some(all)) => all.extend_from_slice(&data.copy_to_bytes(chunk)),
        }
    }
    Ok(match (first, joined) {
        (_, Some(all)) => all.freeze(),
        (Some(only), None) => only,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = Infallible> {
        let frames: Vec<Result<_, Infallible>> = parts
            .iter()
            .map(|part| Ok(Frame::data(Bytes::from_static(part))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn one_chunk_is_kept_as_it_is() {
        let body = http_body_util::Full::new(Bytes::from_static(b"{\"a\":1}"));
        let read = read_whole(body, 1024).await.unwrap();
        assert_eq!(&read[..], b"{\"a\":1}");
    }

    #[tokio::test]
    async fn chunks_are_joined_in_order() {
        let read = read_whole(chunks(&[b"ab", b"", b"cd", b"e"]), 5)
            .await
            .unwrap();
        assert_eq!(&read[..], b"abcde");
        assert_eq!(read_whole(chunks(&[]), 5).await.unwrap(), Bytes::new());
    }

    #[tokio::test]
    async fn the_limit_counts_every_chunk() {
        assert_eq!(
            read_whole(chunks(&[b"abc", b"def"]), 5).await,
            Err(ReadError::TooLarge)
        );
        assert_eq!(
            read_whole(chunks(&[b"abcdef"]), 5).await,
            Err(ReadError::TooLarge)
        );
    }

    #[tokio::test]
    async fn a_failed_body_is_unreadable() {
        let frames: Vec<Result<Frame<Bytes>, &'static str>> =
            vec![Ok(Frame::data(Bytes::from_static(b"ab"))), Err("reset")];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        assert_eq!(read_whole(body, 5).await, Err(ReadError::Unreadable));
    }
}
