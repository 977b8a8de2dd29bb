//! The call machine on every store: guarantees, nesting, observe, faults, the store protocol, and JetStream consumers.
//!
//! One test binary per area (linking a binary per file cost minutes on two cores); a test
//! that needs a process of its own (a global subscriber, `install`) stays a file of its own.

mod forget_call;
mod moka_guarantees;
mod nats_consumer;
mod nested_calls;
mod observe_detach;
mod store_faults;
mod store_protocol;
