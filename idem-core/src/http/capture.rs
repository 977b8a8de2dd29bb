//! What becomes of the handler's response: stored whole, streamed (stored as "completed,
//! not replayable"), or not stored at all (the key is released) — and the codec that turns
//! these into records and back.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, Response, StatusCode, response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::body::{ResponseBody, Resumed, boxed};
use super::stored_response::{self, StoredResponse};
use crate::call::OutcomeCodec;
use crate::error::{BoxError, Error};
use crate::store::Record;

/// What a claimed request, or a replay, answers.
pub(crate) enum Answer {
    /// The handler's response, read whole and stored.
    Whole { head: response::Parts, body: Bytes },
    /// The handler's response, passed on without being read whole; stored as streamed.
    Streaming {
        head: response::Parts,
        body: ResponseBody,
    },
    /// A stored response, for a retry.
    Replay(StoredResponse),
}

/// What ends a request without a stored answer.
pub(crate) enum Failure<E> {
    /// The handler's response, which is not stored (its status, or the handler's
    /// [`NoStore`](super::NoStore)): the key is released.
    NotStored(Box<Response<ResponseBody>>),
    /// The inner service failed: the key is released.
    Service(E),
    /// idem refused or failed (in progress, mismatch, store down).
    Idem(Error),
}

impl<E> From<Error> for Failure<E> {
    fn from(err: Error) -> Self {
        Failure::Idem(err)
    }
}

/// How much of the response is read, how long for, and what is stored.
#[derive(Clone)]
pub(crate) struct CaptureRules {
    pub(crate) max_body: usize,
    /// A body not complete this long after its head streams (is not stored whole).
    pub(crate) max_time: Duration,
    pub(crate) stores_status: StatusRule,
    /// Whether `Cache-Control: no-store` also opts a response out of storing.
    pub(crate) honor_cache_control: bool,
}

/// Which statuses are stored.
pub(crate) type StatusRule = Arc<dyn Fn(StatusCode) -> bool + Send + Sync>;

impl fmt::Debug for CaptureRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureRules")
            .field("max_body", &self.max_body)
            .field("max_time", &self.max_time)
            .field("honor_cache_control", &self.honor_cache_control)
            .finish_non_exhaustive()
    }
}

/// The IETF profile (the default): store what the handler decided — 2xx, 3xx and the 4xx
/// that answer the request itself — and release the key for the answers that say the
/// request was not handled (yet): auth (401, 403), routing (404, 405, a rolling deploy
/// that briefly lacks a route), 408, 409, 413, 425, 429, and every 5xx.
pub(crate) fn ietf_stores_status(status: StatusCode) -> bool {
    match status.as_u16() {
        200..=399 => true,
        401 | 403 | 404 | 405 | 408 | 409 | 413 | 425 | 429 => false,
        400..=499 => true,
        _ => false,
    }
}

/// Stripe's profile: once the handler began executing, its result is the answer, 5xx
/// included; validation and routing rejections (most 4xx) are not stored. 402 (a declined
/// payment) is a result.
pub(crate) fn stripe_stores_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200..=399 | 402 | 500..=599)
}

/// Sorts the handler's response, reading its body up to the limit.
pub(crate) async fn capture<B, E>(
    response: Response<B>,
    rules: CaptureRules,
) -> Result<Answer, Failure<E>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (head, body) = response.into_parts();
    // 1xx is never final here, and also not stored whatever the rule says.
    if !(rules.stores_status)(head.status)
        || head.status.is_informational()
        || head.extensions.get::<NoStore>().is_some()
        || (rules.honor_cache_control && cache_control_no_store(&head))
    {
        return Err(Failure::NotStored(Box::new(Response::from_parts(
            head,
            boxed(body),
        ))));
    }
    let body = boxed(body);
    let endless = head
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_event_stream);
    if endless || body.size_hint().lower() > rules.max_body as u64 {
        return Ok(Answer::Streaming { head, body });
    }
    let mut body = body;
    let mut read: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut len = 0usize;
    // A body still running at the deadline is a stream (NDJSON, a ticker): it is passed on
    // live, and its key answers "not replayable" at once instead of waiting for its end.
    let deadline = tokio::time::Instant::now() + rules.max_time;
    loop {
        let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
            let body = Resumed {
                read,
                rest: Ok(body),
            };
            return Ok(Answer::Streaming {
                head,
                body: ResponseBody::new(body),
            });
        };
        match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    len += data.len();
                    read.push_back(Frame::data(data));
                    if len > rules.max_body {
                        let body = Resumed {
                            read,
                            rest: Ok(body),
                        };
                        return Ok(Answer::Streaming {
                            head,
                            body: ResponseBody::new(body),
                        });
                    }
                }
                // Trailers cannot be replayed: the response is passed on, not stored whole.
                Err(trailers) => {
                    read.push_back(trailers);
                    let body = Resumed {
                        read,
                        rest: Ok(body),
                    };
                    return Ok(Answer::Streaming {
                        head,
                        body: ResponseBody::new(body),
                    });
                }
            },
            // The handler ran but its body broke: pass on what was read and the error; a
            // retry must not run the handler again, and has nothing whole to replay.
            Some(Err(err)) => {
                let body = Resumed {
                    read,
                    rest: Err(Some(err)),
                };
                return Ok(Answer::Streaming {
                    head,
                    body: ResponseBody::new(body),
                });
            }
        }
    }
    let body = match read.len() {
        0 => Bytes::new(),
        1 => read
            .pop_front()
            .and_then(|frame| frame.into_data().ok())
            .unwrap_or_default(),
        _ => {
            let mut whole = BytesMut::with_capacity(len);
            for frame in read {
                if let Some(data) = frame.data_ref() {
                    whole.extend_from_slice(data);
                }
            }
            whole.freeze()
        }
    };
    Ok(Answer::Whole { head, body })
}

/// A media type of `text/event-stream` (media types are case-insensitive, RFC 9110 §8.3.1).
fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/event-stream")
}

/// `Cache-Control: no-store` on a response, honoured only when the layer is told to:
/// frameworks send it on every response, so by default it says nothing about idempotency.
fn cache_control_no_store(head: &response::Parts) -> bool {
    head.headers.get_all(CACHE_CONTROL).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value.split(',').any(|directive| {
                directive
                    .split('=')
                    .next()
                    .is_some_and(|name| name.trim().eq_ignore_ascii_case("no-store"))
            })
        })
    })
}

/// A response extension a handler sets to say "do not store this response": the key is
/// released and a retry runs the handler again. For a refusal before any side effect (a
/// validation error the client may fix and send again with the same key).
///
/// ```
/// use axum::{Extension, http::StatusCode, response::IntoResponse};
/// use idem_core::http::NoStore;
///
/// async fn create_charge() -> axum::response::Response {
///     // Nothing happened yet: let the client fix the request and retry with its key.
///     (StatusCode::BAD_REQUEST, Extension(NoStore), "amount must be positive").into_response()
/// }
/// # drop(create_charge());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoStore;

/// The HTTP outcome codec: answers to records through the wire format, without the
/// headers that belong to one request only (`x-request-id`, ...).
pub(crate) struct WireCodec {
    pub(crate) not_replayed: Arc<[HeaderName]>,
}

impl<E> OutcomeCodec<Answer, Failure<E>> for WireCodec {
    fn encode(&self, outcome: &Result<Answer, Failure<E>>) -> Result<Option<Vec<u8>>, Error> {
        match outcome {
            Ok(Answer::Whole { head, body }) => stored_response::encode_replayable(
                head.status,
                &head.headers,
                &self.not_replayed,
                body,
            )
            .map(Some),
            Ok(Answer::Streaming { head, .. }) => {
                Ok(Some(stored_response::encode_streamed(head.status)))
            }
            // Only a record decodes into a replay; nothing to store again.
            Ok(Answer::Replay(_)) | Err(_) => Ok(None),
        }
    }

    fn decode(&self, record: &Arc<Record>) -> Result<Result<Answer, Failure<E>>, Error> {
        stored_response::decode(record).map(|stored| Ok(Answer::Replay(stored)))
    }
}
