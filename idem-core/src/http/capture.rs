//! What becomes of the handler's response: stored whole, streamed (stored as "completed,
//! not replayable"), or not stored at all (the key is released) — and the codec that turns
//! these into records and back.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode, response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::body::{ResponseBody, Resumed, boxed};
use super::wire::{self, Stored};
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
    Replay(Stored),
}

/// What ends a request without a stored answer.
pub(crate) enum Failure<E> {
    /// The handler's response, which is not stored (its status, or `Cache-Control:
    /// no-store`): the key is released.
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

/// How much of the response is read, and which statuses are stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CaptureRules {
    pub(crate) max_body: usize,
    pub(crate) stores_status: fn(StatusCode) -> bool,
}

/// The default rule: every status except 5xx, 408 and 429, which say "this attempt did not
/// happen, try again" (the key is released so the retry runs the handler).
pub(crate) fn default_stores_status(status: StatusCode) -> bool {
    !(status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_informational())
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
    if !(rules.stores_status)(head.status) || head.status.is_informational() || no_store(&head) {
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
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if endless || body.size_hint().lower() > rules.max_body as u64 {
        return Ok(Answer::Streaming { head, body });
    }
    let mut body = body;
    let mut read: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut len = 0usize;
    loop {
        match body.frame().await {
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

/// `Cache-Control: no-store` on a response: the handler says it had no side effect to
/// protect (a rejection before any change), so the key is released.
fn no_store(head: &response::Parts) -> bool {
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

/// The HTTP outcome codec: answers to records through the wire format.
pub(crate) struct WireCodec;

impl<E> OutcomeCodec<Answer, Failure<E>> for WireCodec {
    fn encode(&self, outcome: &Result<Answer, Failure<E>>) -> Result<Option<Vec<u8>>, Error> {
        match outcome {
            Ok(Answer::Whole { head, body }) => {
                wire::encode_replayable(head.status, &head.headers, body).map(Some)
            }
            Ok(Answer::Streaming { head, .. }) => Ok(Some(wire::encode_streamed(head.status))),
            // Only a record decodes into a replay; nothing to store again.
            Ok(Answer::Replay(_)) | Err(_) => Ok(None),
        }
    }

    fn decode(&self, record: &Arc<Record>) -> Result<Result<Answer, Failure<E>>, Error> {
        wire::decode(record).map(|stored| Ok(Answer::Replay(stored)))
    }
}
