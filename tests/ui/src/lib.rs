//! trybuild UI tests of `#[idempotent]` live in `tests/ui.rs`; the cases in `fail/` and `pass/`.
