//! Dead letters: a message the processor gives up on, published with why, before its `+TERM`.

use std::fmt::Write as _;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::{Context, Message};

use crate::error::BoxError;

/// How many times a dead letter is published before it is given up as lost (each attempt
/// under the same `Nats-Msg-Id`, so the dead-letter stream keeps one copy).
const PUBLISH_ATTEMPTS: u32 = 3;
/// The longest `Idem-Error` header value, in bytes: an error chain can be long.
const MAX_ERROR_HEADER: usize = 1024;

/// Where dead letters go: a subject a stream stores, through the user's JetStream context.
#[derive(Debug, Clone)]
pub(super) struct DeadLetter {
    js: Context,
    subject: Arc<str>,
}

impl DeadLetter {
    pub(super) fn new(js: Context, subject: Arc<str>) -> Self {
        DeadLetter { js, subject }
    }

    pub(super) fn subject(&self) -> &str {
        &self.subject
    }

    /// Publishes `message`'s payload and headers with `Idem-*` headers naming why
    /// (`outcome`, `error`) and where it came from, and waits for the stream to store it.
    pub(super) async fn publish(
        &self,
        message: &Message,
        outcome: &str,
        error: &str,
    ) -> Result<(), BoxError> {
        let headers = headers(message, outcome, error);
        let mut last = None;
        for attempt in 1..=PUBLISH_ATTEMPTS {
            let published = async {
                self.js
                    .publish_with_headers(
                        self.subject.to_string(),
                        headers.clone(),
                        message.payload.clone(),
                    )
                    .await?
                    .await
                    .map_err(BoxError::from)
            };
            match published.await {
                Ok(_) => return Ok(()),
                Err(err) => {
                    crate::event::nats_dead_letter_unconfirmed(attempt, &*err);
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| "no attempt made".into()))
    }
}

/// Whether `message` is itself a dead letter this consumer published: dead-lettering it
/// again would loop (the consumer reads its own dead-letter subject).
pub(super) fn is_own(message: &Message) -> bool {
    let (Some(headers), Ok(info)) = (&message.headers, message.info()) else {
        return false;
    };
    let named = |name: &str, value: &str| headers.get(name).is_some_and(|v| v.as_str() == value);
    named("Idem-Stream", info.stream) && named("Idem-Consumer", info.consumer)
}

/// The original headers, except the `Nats-*` ones (instructions to the server that
/// published it: `Nats-Msg-Id` would dedupe against the original's id, an expected-stream
/// header would refuse the publish), and the dead letter's own.
fn headers(message: &Message, outcome: &str, error: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(original) = &message.headers {
        for (name, values) in original.iter() {
            let prefix = AsRef::<str>::as_ref(name).get(..5);
            if prefix.is_some_and(|prefix| prefix.eq_ignore_ascii_case("nats-")) {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(id) = original.get(async_nats::header::NATS_MESSAGE_ID) {
            headers.insert("Idem-Msg-Id", id.clone());
        }
    }
    let info = message.info().ok();
    let stream = info.as_ref().map_or("", |info| info.stream);
    let consumer = info.as_ref().map_or("", |info| info.consumer);
    let sequence = info.as_ref().map_or(0, |info| info.stream_sequence);
    let delivered = info.as_ref().map_or(0, |info| info.delivered);
    headers.insert("Idem-Outcome", outcome);
    headers.insert("Idem-Error", header_value(error));
    headers.insert("Idem-Subject", message.subject.as_str());
    headers.insert("Idem-Stream", stream);
    headers.insert("Idem-Consumer", consumer);
    headers.insert("Idem-Stream-Sequence", sequence.to_string());
    headers.insert("Idem-Delivered", delivered.to_string());
    // One dead letter per message of this consumer: a retried publish is a duplicate.
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("idem-dead-letter:{stream}:{consumer}:{sequence}"),
    );
    headers
}

/// `text` on one line (a header value cannot hold a line break), at most
/// [`MAX_ERROR_HEADER`] bytes.
fn header_value(text: &str) -> String {
    let mut value = String::with_capacity(text.len().min(MAX_ERROR_HEADER));
    for c in text.chars() {
        if value.len() + c.len_utf8() > MAX_ERROR_HEADER {
            break;
        }
        let _ = value.write_char(if c == '\r' || c == '\n' { ' ' } else { c });
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_header_is_one_line_and_bounded() {
        assert_eq!(header_value("a\r\nb"), "a  b");
        let long = "é".repeat(MAX_ERROR_HEADER);
        let value = header_value(&long);
        assert!(value.len() <= MAX_ERROR_HEADER && value.len() > MAX_ERROR_HEADER - 2);
    }
}
