//! Keys and fingerprints: properties of the encoding and of payload fingerprints. (The
//! golden keys and the namespace tests stay binaries of their own: a function's default
//! namespace is its module path, which they pin.)
//!
//! One test binary per area (linking a binary per file cost minutes on two cores); a test
//! that needs a process of its own (a global subscriber, `install`) stays a file of its own.

mod fingerprint;
mod key_properties;
