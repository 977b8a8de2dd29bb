//! trybuild UI tests of `#[idempotent]`: every compile-time rule fails with a spanned,
//! explained error (`ui/fail`). The supported shapes (`ui/pass`) are `tests/pass.rs`.
//!
//! Only `compile_fail` cases, so trybuild checks all of them in one `cargo check
//! --keep-going` (one `pass` case would make it build and link every case on its own).
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p ui-tests --test ui`,
//! then read every changed `.stderr`.

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("fail/*.rs");
}
