//! The retry loop: one key, the same request on every attempt, until an answer is final or
//! a bound (attempts, `Retry-After`, deadline) stops it.

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use super::deadline::DeadlineExceeded;
use super::delivery::Delivery;
use super::event::Route;
use super::policy::{self, Verdict};
use super::{IdempotentRetry, delay, event, key};

type Sent = reqwest_middleware::Result<Response>;

#[async_trait::async_trait]
impl Middleware for IdempotentRetry {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let mint = (self.mint_key_for)(&request);
        let key = key::ensure(&mut request, &self.header, mint);
        let route = Route::of(&request);
        let retryable = key.is_some() || policy::idempotent_method(request.method());
        // A streamed body cannot be sent twice: such a request gets one attempt.
        let template = if retryable { request.try_clone() } else { None };
        let Some(template) = template else {
            let sent = next.run(request, extensions).await;
            return finish(sent, 1, key, &route);
        };
        drop(request);
        self.retry(template, key, &route, extensions, next).await
    }
}

impl IdempotentRetry {
    async fn retry(
        &self,
        template: Request,
        key: Option<String>,
        route: &Route,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let deadline = Instant::now().checked_add(self.deadline);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(attempt) = template.try_clone() else {
                // Unreachable: the body cloned once (it is in memory), so it clones again.
                return finish(next.run(template, extensions).await, attempts, key, route);
            };
            let run = next.clone().run(attempt, extensions);
            let sent = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, run).await {
                    Ok(sent) => sent,
                    Err(_) => {
                        return Err(reqwest_middleware::Error::middleware(DeadlineExceeded {
                            deadline: self.deadline,
                            attempts,
                            key,
                        }));
                    }
                },
                None => run.await,
            };
            let verdict = match &sent {
                Ok(response) => policy::for_response(response),
                Err(error) => policy::for_error(error),
            };
            let Verdict::Retry {
                reason,
                retry_after,
            } = verdict
            else {
                return finish(sent, attempts, key, route);
            };
            let give_up = |why| {
                event::gave_up(route, key.as_deref(), attempts, reason, why);
            };
            if attempts >= self.max_attempts {
                give_up("max_attempts");
                return finish(sent, attempts, key, route);
            }
            let mut wait = delay::backoff_delay(&self.backoff, attempts);
            if let Some(retry_after) = retry_after {
                if retry_after > self.max_retry_after {
                    give_up("retry_after");
                    return finish(sent, attempts, key, route);
                }
                wait = wait.max(retry_after);
            }
            if deadline.is_some_and(|deadline| Instant::now() + wait >= deadline) {
                give_up("deadline");
                return finish(sent, attempts, key, route);
            }
            event::retry(route, key.as_deref(), attempts, reason, wait);
            drop(sent);
            tokio::time::sleep(wait).await;
        }
    }
}

/// The final answer, with its [`Delivery`] when it is a response.
fn finish(sent: Sent, attempts: u32, key: Option<String>, route: &Route) -> Sent {
    let mut response = sent?;
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if replayed {
        event::replayed(route, key.as_deref(), attempts);
    }
    response.extensions_mut().insert(Delivery {
        attempts,
        replayed,
        key,
    });
    Ok(response)
}
