//! The supported shapes of `#[idempotent]` compile, without warnings, and run (`ui/pass`).
//!
//! They are ordinary modules of this test, not trybuild cases: a trybuild run with any
//! `pass` case builds and links every case on its own (36 cargo builds), while these share
//! the workspace's build and trybuild checks all the `fail` cases in one `cargo check`.
//! `crate_path` names `crate::rt`, so it is a crate root of its own (a `[[test]]` target).

#[path = "../pass/borrowed.rs"]
mod borrowed;
#[path = "../pass/generics.rs"]
mod generics;
#[path = "../pass/inner_attributes.rs"]
mod inner_attributes;
#[path = "../pass/method.rs"]
mod method;
#[path = "../pass/mut_skipped.rs"]
mod mut_skipped;
#[path = "../pass/result_alias.rs"]
mod result_alias;
#[path = "../pass/send.rs"]
mod send;

/// Each case's `main` (what trybuild ran as the case's binary).
#[test]
fn every_pass_case_runs() {
    borrowed::main();
    generics::main();
    inner_attributes::main();
    method::main();
    mut_skipped::main();
    result_alias::main();
    send::main();
}

/// Every file in `pass/` is listed above, so a new case cannot be left out.
#[test]
fn every_pass_case_is_listed() {
    // `crate_path` names `crate::rt`, so it is a crate of its own: a `[[test]]` target.
    let listed = [include_str!("pass.rs"), include_str!("../Cargo.toml")].concat();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/pass");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read ui/pass") {
        let name = entry.expect("a ui/pass entry").file_name();
        let name = name.to_string_lossy();
        if let Some(case) = name.strip_suffix(".rs")
            && !listed.contains(&format!("mod {case};\n"))
            && !listed.contains(&format!("path = \"pass/{case}.rs\""))
        {
            missing.push(case.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "add these ui/pass cases to tests/pass.rs: {missing:?}"
    );
}
