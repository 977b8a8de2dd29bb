//! The service: sorts a request (pass through, refuse, or protect), and runs a protected
//! one through the record protocol in a task of its own, so the handler finishes and its
//! response is stored even when the client goes away.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::Body;
use tower::Service;
use tracing::Instrument;

use super::body::{ResponseBody, boxed, full};
use super::capture::{Answer, Failure, WireCodec, capture};
use super::config::Shared;
use super::extract::IdempotencyKey;
use super::fingerprint;
use super::key_header::{self, KeyError};
use super::problem::Problem;
use super::request_body::{ReadError, read_whole};
use super::stored_response::StoredResponse;
use crate::call::Call;
use crate::error::{BoxError, Error};
use crate::event::{self, Outcome};
use crate::global::default_store;
use crate::spec::InFlight;
use crate::store::Claim;

/// The header a replayed response carries (`Idempotent-Replayed: true`); the first response
/// does not.
///
/// ```
/// assert_eq!(idem_core::http::REPLAYED_HEADER, "idempotent-replayed");
/// ```
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// [`REPLAYED_HEADER`] as a header name, built at compile time (a `&str` name is parsed
/// again on every insert).
const REPLAYED: HeaderName = HeaderName::from_static(REPLAYED_HEADER);

/// The `Retry-After` of a 409 for a request still in progress, in seconds.
const RETRY_AFTER_SECS: u64 = 1;

/// The service of an [`IdempotencyLayer`](super::IdempotencyLayer) around `S`.
///
/// ```
/// use idem_core::http::IdempotencyLayer;
/// use tower::Layer;
///
/// let service = IdempotencyLayer::new().layer(tower::service_fn(
///     |_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("done")))
///     },
/// ));
/// # drop(service);
/// ```
pub struct IdempotencyService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> IdempotencyService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        IdempotencyService { inner, shared }
    }

    /// The inner service.
    ///
    /// ```
    /// use idem_core::http::IdempotencyLayer;
    /// use tower::Layer;
    ///
    /// let service = IdempotencyLayer::new().layer(7_u8);
    /// assert_eq!(*service.get_ref(), 7);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use idem_core::http::IdempotencyLayer;
    /// use tower::Layer;
    ///
    /// let mut service = IdempotencyLayer::new().layer(7_u8);
    /// *service.get_mut() += 1;
    /// assert_eq!(*service.get_ref(), 8);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the layer.
    ///
    /// ```
    /// use idem_core::http::IdempotencyLayer;
    /// use tower::Layer;
    ///
    /// let service = IdempotencyLayer::new().layer(7_u8);
    /// assert_eq!(service.into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for IdempotencyService<S> {
    fn clone(&self) -> Self {
        IdempotencyService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for IdempotencyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish()
    }
}

/// The future of [`IdempotencyService`]'s response.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use idem_core::http::{IdempotencyLayer, ResponseFuture};
/// use tower::{Layer, Service};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut service = IdempotencyLayer::new().layer(tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("listed"))))
/// }));
/// let future: ResponseFuture<std::convert::Infallible> = service.call(http::Request::new(Full::default()));
/// let response = future.await.unwrap(); // a GET: passed through
/// assert_eq!(response.status(), http::StatusCode::OK);
/// # }
/// ```
pub struct ResponseFuture<E> {
    inner: Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, E>> + Send>>,
}

impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response<ResponseBody>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<E> fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IdempotencyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone that was made ready goes with this request (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        if !shared.config.methods.contains(req.method()) {
            return ResponseFuture {
                inner: Box::pin(pass_through(inner, req)),
            };
        }
        ResponseFuture {
            inner: Box::pin(protect(inner, shared, req)),
        }
    }
}

async fn pass_through<S, ReqBody, ResBody>(
    mut inner: S,
    req: Request<ReqBody>,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    Ok(inner.call(req).await?.map(boxed))
}

async fn protect<S, ReqBody, ResBody>(
    inner: S,
    shared: Arc<Shared>,
    req: Request<ReqBody>,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    let config = &shared.config;
    let (mut parts, body) = req.into_parts();
    let route = tracing::debug_span!(
        target: "idem",
        "idem_http",
        route = %format_args!("{} {}", parts.method, parts.uri.path()),
    );
    let refuse = |problem: Problem, outcome: &'static str| {
        route.in_scope(|| tracing::debug!(target: "idem", outcome, function = shared.spec.name));
        Ok(problem.into_response())
    };
    let client_key = match key_header::client_key(&parts.headers, &config.header) {
        Ok(client_key) => client_key,
        Err(KeyError::Missing) if config.optional => {
            return pass_through(inner, Request::from_parts(parts, body)).await;
        }
        Err(err) => return refuse(Problem::Key(err), "bad_key"),
    };
    let request_key = match config.scope.resolve(&parts) {
        Ok(scope) => IdempotencyKey::new(&client_key, scope.as_deref()),
        Err(err) => return refuse(Problem::Scope(err), "bad_scope"),
    };
    // The handler sees the key and scope the layer checked (for a downstream call, or for
    // its own transaction-mode record).
    parts.extensions.insert(request_key.clone());
    if !config.record {
        return pass_through(inner, Request::from_parts(parts, body)).await;
    }
    let Ok(key) = fingerprint::key(&config.namespace, &request_key) else {
        return refuse(Problem::Internal, "codec_error");
    };
    let limit = config.max_request_body;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return refuse(Problem::BodyTooLarge { limit }, "too_large");
    }
    let bytes = match read_whole(body, limit).await {
        Ok(bytes) => bytes,
        Err(ReadError::TooLarge) => return refuse(Problem::BodyTooLarge { limit }, "too_large"),
        Err(ReadError::Unreadable) => return refuse(Problem::BodyUnreadable, "bad_body"),
    };
    let Ok(fingerprint) = fingerprint::fingerprint(&config.body_fingerprint, &parts, &bytes) else {
        return refuse(Problem::Internal, "codec_error");
    };
    let store = match &config.store {
        Some(store) => store.clone(),
        None => match default_store() {
            Ok(store) => store.clone(),
            Err(_) => return refuse(Problem::StoreUnavailable, "store_error"),
        },
    };
    let (spec, rules) = (shared.spec, config.capture.clone());
    let not_replayed = Arc::clone(&config.not_replayed);
    // The handler's future is built and boxed only once the key is claimed: a replay
    // never builds it, and the call does not carry its size through every state. The
    // request too: a replay does not box a body for it only to drop it.
    let body = async move {
        let mut inner = inner;
        let req = Request::from_parts(parts, ReqBody::from(bytes));
        Box::pin(async move {
            match inner.call(req).await {
                Ok(response) => capture(response, rules).await,
                Err(err) => Err(Failure::Service(err)),
            }
        })
        .await
    };
    // A store that answers without I/O (in memory) is asked here: a replay, a refused
    // duplicate or a store error is answered without a task; a claim is handed to one.
    let claim = store
        .store()
        .claim_now(&key, &fingerprint, spec.lease)
        .filter(|claim| match claim {
            Ok(Claim::InProgress(_)) => spec.in_flight == InFlight::Reject,
            _ => true,
        });
    let call = Call {
        spec,
        store: &store,
        key,
        fingerprint,
        codec: WireCodec {
            not_replayed: Arc::clone(&not_replayed),
        },
    };
    let token = match claim {
        Some(Ok(Claim::Completed(record))) => {
            return route.in_scope(|| respond(call.replay(&record, Outcome::Replayed)));
        }
        Some(Ok(Claim::InProgress(_))) => {
            route.in_scope(|| event::emit(spec, &key, Outcome::Rejected));
            return respond(Err(Failure::Idem(Error::InProgress)));
        }
        Some(Err(err)) => {
            route.in_scope(|| event::store_error(spec, &key, "claim", &err));
            return respond(Err(Failure::Idem(err)));
        }
        Some(Ok(Claim::Claimed { token, taken_over })) => {
            if taken_over {
                route.in_scope(|| event::emit(spec, &key, Outcome::TakenOver));
            }
            Some(token)
        }
        None => None,
    };
    // Its own task: dropping this future (the client left) does not cancel the handler.
    let run = async move {
        let call = Call {
            spec,
            store: &store,
            key,
            fingerprint,
            codec: WireCodec { not_replayed },
        };
        // Boxed: the spawn moves a pointer, not kilobytes of state.
        match token {
            Some(token) => Box::pin(call.hold(token, body, None)).await,
            None => Box::pin(call.execute(body)).await,
        }
    };
    let task = shared.tasks.spawn(run.instrument(route.clone()));
    let outcome = match task.await {
        Ok(outcome) => outcome,
        // The claim was released as the handler's future unwound: a retry runs it again.
        Err(err) if err.is_panic() => {
            route.in_scope(|| event::handler_panicked(spec, &key));
            return Ok(Problem::HandlerPanicked.into_response());
        }
        // The runtime is shutting down.
        Err(_) => return Ok(Problem::StoreUnavailable.into_response()),
    };
    respond(outcome)
}

/// The response for a request's outcome.
fn respond<E>(outcome: Result<Answer, Failure<E>>) -> Result<Response<ResponseBody>, E> {
    Ok(match outcome {
        Ok(Answer::Whole { head, body }) => Response::from_parts(head, full(body)),
        Ok(Answer::Streaming { head, body }) => Response::from_parts(head, body),
        Ok(Answer::Replay(StoredResponse::Replayable {
            status,
            headers,
            body,
        })) => {
            let mut response = Response::new(full(body));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            response
        }
        Ok(Answer::Replay(StoredResponse::Streamed { status })) => {
            Problem::NotReplayable { status }.into_response()
        }
        Err(Failure::NotStored(response)) => *response,
        Err(Failure::Service(err)) => return Err(err),
        Err(Failure::Idem(err)) => match err {
            Error::InProgress => Problem::InProgress {
                retry_after_secs: RETRY_AFTER_SECS,
            }
            .into_response(),
            Error::PayloadMismatch => Problem::Mismatch.into_response(),
            Error::Store(_) => Problem::StoreUnavailable.into_response(),
            Error::StoreFull => Problem::StoreFull.into_response(),
            Error::Codec(_) => Problem::StoredUnreadable.into_response(),
            _ => Problem::Internal.into_response(),
        },
    })
}
