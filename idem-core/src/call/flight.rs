//! Single-flight inside one process: while a call for a key is claiming, running or
//! waiting, other local calls for the same key (and store) follow it instead of sending
//! their own claims and polls to a remote store. 1,000 local waiters cost one claim and
//! one poller. A leader's claim that fails fails its followers at once with the same error
//! (an outage is not handed out one caller at a time).

use std::pin::pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tokio::sync::Notify;

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
    /// The leader ended with neither (an error, a panic, a cancel, or its wait ran out):
    /// followers try again themselves.
    Ended,
}

/// One flight: what its leader published, and its followers' wake-up.
///
/// Not a `watch` channel: most flights are a single call that finds a record, and a
/// `watch` sender notifies its (sharded) waiter lists on every send and on drop, which cost
/// a hit more than the rest of the flight. Here a leader without followers touches neither
/// the state nor the `Notify`.
pub(crate) struct Flight {
    published: Mutex<Published>,
    notify: Notify,
}

impl Flight {
    /// Waits until the leader publishes or ends.
    pub(crate) async fn published(&self) -> Published {
        loop {
            // Registered before the state is read, so a publication in between still wakes.
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            let published = self
                .published
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if !matches!(published, Published::Pending) {
                return published;
            }
            notified.await;
        }
    }
}

static FLIGHTS: LazyLock<ShardedMap<FlightId, Arc<Flight>>> = LazyLock::new(ShardedMap::new);

/// Either lead the flight for a key, or follow the one already under way.
pub(crate) enum Joined {
    Lead(FlightLead),
    Follow(Arc<Flight>),
}

/// Joins the flight for `key` on the store `store_id`, or starts it.
pub(crate) fn join(store_id: usize, key: Key) -> Joined {
    let id = (store_id, key);
    let mut flights = FLIGHTS.lock(&key);
    if let Some(flight) = flights.get(&id) {
        return Joined::Follow(Arc::clone(flight));
    }
    let flight = Arc::new(Flight {
        published: Mutex::new(Published::Pending),
        notify: Notify::new(),
    });
    flights.insert(id, Arc::clone(&flight));
    Joined::Lead(FlightLead { id, flight })
}

/// The leader's side: publishes the record or the claim's error, and ends the flight when
/// dropped (followers with neither then try again themselves).
pub(crate) struct FlightLead {
    id: FlightId,
    flight: Arc<Flight>,
}

impl FlightLead {
    pub(crate) fn publish(&self, record: &Arc<Record>) {
        self.end(|| Published::Record(Arc::clone(record)));
    }

    pub(crate) fn fail(&self, error: &SharedError) {
        self.end(|| Published::Failed(error.clone()));
    }

    /// Closes the flight to new followers, then tells the ones it has (if any) the first
    /// outcome published.
    fn end(&self, outcome: impl FnOnce() -> Published) {
        let mut flights = FLIGHTS.lock(&self.id.1);
        if flights
            .get(&self.id)
            .is_some_and(|flight| Arc::ptr_eq(flight, &self.flight))
        {
            flights.remove(&self.id);
        }
        drop(flights);
        // Followers clone the flight only from the table, under its lock: with the entry
        // gone, no follower can appear, and a count of one (this leader) means none waits.
        if Arc::strong_count(&self.flight) == 1 {
            return;
        }
        let mut published = self
            .flight
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if matches!(*published, Published::Pending) {
            *published = outcome();
        }
        drop(published);
        self.flight.notify.notify_waiters();
    }
}

impl Drop for FlightLead {
    fn drop(&mut self) {
        self.end(|| Published::Ended);
    }
}
