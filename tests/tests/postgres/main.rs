//! PostgresStore and transaction mode on the shared PostgreSQL and private clusters.
//!
//! One test binary per area (linking a binary per file cost minutes on two cores); a test
//! that needs a process of its own (a global subscriber, `install`) stays a file of its own.

mod large_records;
mod processes;
mod restart;
mod retryable;
mod statements;
mod store;
mod transaction;
