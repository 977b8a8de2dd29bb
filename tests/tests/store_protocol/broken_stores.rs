//! Two deliberately broken stores, to show that the conformance suite catches what they
//! break: each is correct except for the one flaw its name says.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idem_core::store::{BoxFuture, ChangeNotice, Claim, Record, Store, Token};
use idem_core::{Error, Fingerprint, Key, MokaStore};

enum Entry {
    Held { token: Token, until: Instant },
    Done { record: Arc<Record>, until: Instant },
}

/// A store whose claim looks, awaits, then writes: two claims that look at the same time
/// both find the key free and both take it. Everything else keeps the protocol.
#[derive(Default)]
pub struct RacyStore {
    entries: Mutex<HashMap<Key, Entry>>,
    tokens: AtomicU64,
}

impl RacyStore {
    /// The live entry of `key`: an expired one counts as none.
    fn live(&self, key: &Key) -> Option<Result<Token, Arc<Record>>> {
        let entries = self.entries.lock().unwrap();
        match entries.get(key)? {
            Entry::Held { token, until } if *until > Instant::now() => Some(Ok(*token)),
            Entry::Done { record, until } if *until > Instant::now() => {
                Some(Err(Arc::clone(record)))
            }
            _ => None,
        }
    }

    /// Applies `change` if `token` holds `key`'s live claim.
    fn if_holds(
        &self,
        key: &Key,
        token: Token,
        change: impl FnOnce(&mut HashMap<Key, Entry>),
    ) -> bool {
        let mut entries = self.entries.lock().unwrap();
        let holds = matches!(
            entries.get(key),
            Some(Entry::Held { token: t, until }) if *t == token && *until > Instant::now()
        );
        if holds {
            change(&mut entries);
        }
        holds
    }
}

impl Store for RacyStore {
    fn claim<'a>(
        &'a self,
        key: &'a Key,
        _fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, Error>> {
        Box::pin(async move {
            match self.live(key) {
                Some(Ok(_)) => return Ok(Claim::InProgress(ChangeNotice::poll())),
                Some(Err(record)) => return Ok(Claim::Completed(record)),
                None => {}
            }
            // The flaw: the key is written after an await, not in the step that looked.
            tokio::task::yield_now().await;
            let token = Token::new(u128::from(self.tokens.fetch_add(1, Ordering::Relaxed)));
            let until = Instant::now() + lease;
            self.entries
                .lock()
                .unwrap()
                .insert(*key, Entry::Held { token, until });
            Ok(Claim::Claimed {
                token,
                taken_over: false,
            })
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            Ok(self.if_holds(key, token, |entries| {
                entries.insert(
                    *key,
                    Entry::Held {
                        token,
                        until: Instant::now() + lease,
                    },
                );
            }))
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        record: Arc<Record>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            Ok(self.if_holds(key, token, |entries| {
                entries.insert(
                    *key,
                    Entry::Done {
                        record,
                        until: Instant::now() + ttl,
                    },
                );
            }))
        })
    }

    fn release<'a>(&'a self, key: &'a Key, token: Token) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            Ok(self.if_holds(key, token, |entries| {
                entries.remove(key);
            }))
        })
    }

    fn forget<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let live = self.live(key).is_some();
            self.entries.lock().unwrap().remove(key);
            Ok(live)
        })
    }
}

/// A `MokaStore` behind a wrapper that ignores the caller's token: renew, complete and
/// release act with the key's latest claim's token, whoever calls. Claims are MokaStore's.
#[derive(Default)]
pub struct TokenBlindStore {
    inner: MokaStore,
    latest: Mutex<HashMap<Key, Token>>,
}

impl TokenBlindStore {
    /// The flaw: the key's latest token, not the caller's.
    fn token(&self, key: &Key, caller: Token) -> Token {
        self.latest
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(caller)
    }
}

impl Store for TokenBlindStore {
    fn claim<'a>(
        &'a self,
        key: &'a Key,
        fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, Error>> {
        Box::pin(async move {
            let answer = self.inner.claim(key, fingerprint, lease).await?;
            if let Claim::Claimed { token, .. } = &answer {
                self.latest.lock().unwrap().insert(*key, *token);
            }
            Ok(answer)
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.inner.renew(key, self.token(key, token), lease)
    }

    fn complete<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        record: Arc<Record>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.inner
            .complete(key, self.token(key, token), record, ttl)
    }

    fn release<'a>(&'a self, key: &'a Key, token: Token) -> BoxFuture<'a, Result<bool, Error>> {
        self.inner.release(key, self.token(key, token))
    }

    fn forget<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<bool, Error>> {
        self.inner.forget(key)
    }
}
