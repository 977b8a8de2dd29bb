//! [`Delivery`]: one decoded message, as a handler gets it.

use crate::error::Error;

/// One decoded message, as a handler gets it.
///
/// ```
/// use idem_core::nats::Delivery;
///
/// let delivery = Delivery::new("payload", Some("evt-7".to_owned()));
/// assert_eq!(delivery.msg_id().unwrap(), "evt-7");
/// assert!(Delivery::new((), None).msg_id().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Delivery<T> {
    /// The message's payload, decoded from JSON.
    pub payload: T,
    msg_id: Option<String>,
}

impl<T> Delivery<T> {
    /// A delivery of `payload` with the publisher's `Nats-Msg-Id` (for handler tests).
    ///
    /// ```
    /// let delivery = idem_core::nats::Delivery::new(42u32, None);
    /// assert_eq!(delivery.payload, 42);
    /// ```
    pub fn new(payload: T, msg_id: Option<String>) -> Self {
        Delivery { payload, msg_id }
    }

    /// The publisher's `Nats-Msg-Id` header: an idempotency key chosen by the publisher,
    /// the same on each of its retries. A message without one is an
    /// [`Error::Codec`], which terminates it (return it with `?`).
    ///
    /// ```
    /// use idem_core::nats::Delivery;
    ///
    /// let delivery = Delivery::new(vec![1u8], Some("pub-1:evt-9".to_owned()));
    /// assert_eq!(delivery.msg_id().unwrap(), "pub-1:evt-9");
    /// ```
    pub fn msg_id(&self) -> Result<&str, Error> {
        self.msg_id
            .as_deref()
            .ok_or_else(|| Error::codec("the message has no Nats-Msg-Id header"))
    }
}
