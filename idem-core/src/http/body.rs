//! The response body type of the layer, and the body of a response that was partly read
//! before the layer decided not to buffer it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

use crate::error::BoxError;

/// The body of every response of [`IdempotencyService`](super::IdempotencyService): the
/// handler's own body, a buffered or replayed one, or a problem+json document.
///
/// ```
/// use http_body_util::BodyExt;
///
/// let body: idem_core::http::ResponseBody = http_body_util::Full::new(bytes::Bytes::from("ok"))
///     .map_err(|never| match never {})
///     .boxed_unsync();
/// # drop(body);
/// ```
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A whole body.
pub(crate) fn full(bytes: Bytes) -> ResponseBody {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Any handler body, boxed; its size hint (so its `Content-Length`) is kept.
pub(crate) fn boxed<B>(body: B) -> ResponseBody
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    ResponseBody::new(ToBytes { inner: body })
}

pin_project_lite::pin_project! {
    /// A body with its data as `Bytes` (no copy when it already is) and its errors boxed;
    /// unlike `BodyExt::map_frame`, it keeps the size hint.
    struct ToBytes<B> {
        #[pin]
        inner: B,
    }
}

impl<B> Body for ToBytes<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx).map(|frame| {
            frame.map(|frame| match frame {
                Ok(frame) => Ok(frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))),
                Err(err) => Err(err.into()),
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The frames already read, then the rest of the body (or the error that ended it).
pub(crate) struct Resumed {
    pub(crate) read: VecDeque<Frame<Bytes>>,
    pub(crate) rest: Result<ResponseBody, Option<BoxError>>,
}

impl Body for Resumed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match &mut self.rest {
            Ok(rest) => Pin::new(rest).poll_frame(cx),
            Err(err) => Poll::Ready(err.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty()
            && match &self.rest {
                Ok(rest) => rest.is_end_stream(),
                Err(err) => err.is_none(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self
            .read
            .iter()
            .filter_map(|frame| frame.data_ref().map(|data| data.len() as u64))
            .sum();
        let rest = match &self.rest {
            Ok(rest) => rest.size_hint(),
            Err(_) => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(read));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(read));
        }
        hint
    }
}
