//! Nothing: this crate only holds `benches/peers.rs`.
