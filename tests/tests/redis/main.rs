//! RedisStore on private redis-server instances (and the shared one): the store, its near-cache, replicas, a cluster and several processes.
//!
//! One test binary per area (linking a binary per file cost minutes on two cores); a test
//! that needs a process of its own (a global subscriber, `install`) stays a file of its own.

mod cluster;
mod failover;
mod near_cache;
mod processes;
mod store;
