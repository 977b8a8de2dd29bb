//! The HTTP layer, its key extractor and the client middleware over real servers and clients, and the exactly-once drill.
//!
//! One test binary per area (linking a binary per file cost minutes on two cores); a test
//! that needs a process of its own (a global subscriber, `install`) stays a file of its own.

mod client;
mod concurrency;
mod disconnect;
mod exactly_once_drill;
mod layer;
mod processes;
mod production;
