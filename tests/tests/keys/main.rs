//! Keys and fingerprints: golden vectors, properties of the encoding, namespaces.
//!
//! One test binary per area (linking a binary per file cost minutes on two cores); a test
//! that needs a process of its own (a global subscriber, `install`) stays a file of its own.

mod fingerprint;
mod golden_keys;
mod key_properties;
mod namespaces;
