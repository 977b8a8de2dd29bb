//! The per-task context of a call: the process default store and key hasher, the running
//! body's key, and the scopes that watch calls (`observe`, the `key_of` probe).

pub(crate) mod global;
pub(crate) mod observe;
pub(crate) mod probe;
pub(crate) mod scope_count;
