//! trybuild UI tests of `#[idempotent]`: every compile-time rule fails with a spanned,
//! explained error (`ui/fail`), and the supported shapes compile (`ui/pass`).
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p ui-tests`,
//! then read every changed `.stderr`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("fail/*.rs");
    cases.pass("pass/*.rs");
}
