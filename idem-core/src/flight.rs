//! Single-flight inside one process: while a call for a key is claiming, running or
//! waiting, other local calls for the same key (and store) follow it instead of sending
//! their own claims and polls to a remote store. 1,000 local waiters cost one claim and
//! one poller. A leader's claim that fails fails its followers at once with the same error
//! (an outage is not handed out one caller at a time).

use std::sync::{Arc, LazyLock};

use tokio::sync::watch;

use crate::error::SharedError;
use crate::key::{Key, ShardedMap};
use crate::store::Record;

type FlightId = (usize, Key);

/// What a flight's leader has to tell its followers.
#[derive(Clone)]
pub(crate) enum Published {
    /// Nothing yet.
    Pending,
    /// The record to replay.
    Record(Arc<Record>),
    /// The leader's claim failed: so does every follower's.
    Failed(SharedError),
}

impl Published {
    pub(crate) fn is_pending(&self) -> bool {
        matches!(self, Published::Pending)
    }
}

static FLIGHTS: LazyLock<ShardedMap<FlightId, watch::Receiver<Published>>> =
    LazyLock::new(ShardedMap::new);

/// Either lead the flight for a key, or follow the one already under way.
pub(crate) enum Joined {
    Lead(FlightLead),
    Follow(watch::Receiver<Published>),
}

/// Joins the flight for `key` on the store `store_id`, or starts it.
pub(crate) fn join(store_id: usize, key: Key) -> Joined {
    let id = (store_id, key);
    let mut flights = FLIGHTS.lock(&key);
    if let Some(rx) = flights.get(&id) {
        return Joined::Follow(rx.clone());
    }
    let (tx, rx) = watch::channel(Published::Pending);
    flights.insert(id, rx);
    Joined::Lead(FlightLead { id, tx })
}

/// The leader's side: publishes the record or the claim's error, and ends the flight when
/// dropped (followers with neither then try again themselves).
pub(crate) struct FlightLead {
    id: FlightId,
    tx: watch::Sender<Published>,
}

impl FlightLead {
    pub(crate) fn publish(&self, record: &Arc<Record>) {
        self.tx.send_replace(Published::Record(Arc::clone(record)));
    }

    pub(crate) fn fail(&self, error: &SharedError) {
        self.tx.send_replace(Published::Failed(error.clone()));
    }
}

impl Drop for FlightLead {
    fn drop(&mut self) {
        // Only the leader inserts and removes its flight, so the entry is this one.
        FLIGHTS.lock(&self.id.1).remove(&self.id);
    }
}
