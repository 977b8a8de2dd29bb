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
/// handler's own body, a buffered or replayed one, or a problem+json document. Its data is
/// [`Bytes`]; its size hint is the inner body's, so `Content-Length` is kept.
///
/// ```
/// use http_body::Body;
/// use idem_core::http::{IdempotencyLayer, ResponseBody};
/// use tower::{Layer, Service};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut service = IdempotencyLayer::new().layer(tower::service_fn(
///     |_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("listed")))
///     },
/// ));
/// let request = http::Request::new(http_body_util::Full::default()); // a GET: passed through
/// let response = service.call(request).await.unwrap();
/// let body: &ResponseBody = response.body();
/// assert_eq!(body.size_hint().exact(), Some(6));
/// # }
/// ```
pub struct ResponseBody(UnsyncBoxBody<Bytes, BoxError>);

impl ResponseBody {
    pub(crate) fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        ResponseBody(UnsyncBoxBody::new(body))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

/// A whole body.
pub(crate) fn full(bytes: Bytes) -> ResponseBody {
    ResponseBody::new(http_body_util::Full::new(bytes).map_err(|never| match never {}))
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
