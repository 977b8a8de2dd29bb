//! The `complete`s in flight: each runs to its end in a task of its own, so an upload cut
//! short by the caller's bound is never abandoned half-sent, and a retry of it joins the
//! one in flight instead of uploading the same record beside it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::SharedError;
use crate::key::Key;
use crate::store::Token;

/// An upload's answer: `Some` once it finished.
pub(crate) type Answer = Option<Result<bool, SharedError>>;

/// The uploads in flight, by key; one per key, of the claim's token.
#[derive(Default)]
pub(crate) struct Uploads(Mutex<HashMap<Key, (Token, watch::Receiver<Answer>)>>);

impl Uploads {
    /// The answer of the upload of `key`'s record by `token`: the one in flight, or a new
    /// one that `start` makes and that runs in its own task.
    pub(crate) fn join_or_start<F>(
        self: &Arc<Self>,
        key: Key,
        token: Token,
        start: impl FnOnce() -> F,
    ) -> watch::Receiver<Answer>
    where
        F: Future<Output = Result<bool, SharedError>> + Send + 'static,
    {
        let mut uploads = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((held, answer)) = uploads.get(&key)
            && *held == token
        {
            return answer.clone();
        }
        let (send, answer) = watch::channel(None);
        uploads.insert(key, (token, answer.clone()));
        drop(uploads);
        let upload = start();
        let uploads = Arc::clone(self);
        let finish = async move {
            let _ = send.send(Some(upload.await));
            let mut uploads = uploads.0.lock().unwrap_or_else(|p| p.into_inner());
            if uploads.get(&key).is_some_and(|(held, _)| *held == token) {
                uploads.remove(&key);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(finish)),
            // Not reached from a call (calls run on tokio): the sender is dropped unsent,
            // which the caller reads as a failed upload.
            Err(_) => {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
        }
        answer
    }
}
