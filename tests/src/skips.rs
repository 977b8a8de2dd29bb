//! Tests that need a service this machine lacks skip themselves, and say so twice: a note
//! in the test's own output, and a line in this run's skip file, which the last test binary
//! of `cargo test --workspace` (`tests/ui/tests/zz_skip_summary.rs`) counts into one
//! closing line. With `CI=true` a missing service fails the test instead.

use std::io::Write;
use std::path::PathBuf;

/// Whether `CI` asks every test to run (`CI=true` or `CI=1`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the calling test because `reason` (what is missing, and the variable or program
/// that would provide it): with `CI=true` it panics, so CI never silently skips; otherwise
/// it prints a note and records the skip for the run's summary line. The caller returns.
pub fn skip(reason: &str) {
    if ci() {
        panic!("{reason}, and CI=true: this test must run");
    }
    eprintln!("SKIPPED: {reason}");
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    if let Some(path) = skip_file() {
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(&path));
        // One short append per line: concurrent tests do not interleave inside a line.
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = file.write_all(format!("{reason}\t{test}\n").as_bytes());
        }
    }
}

/// This run's skip file: `target/<profile>/idem-skips/<cargo's pid>.log`. Every test binary
/// of one `cargo test` is a child of the same cargo process, so its pid names the run.
/// The summary test (`tests/ui/tests/zz_skip_summary.rs`) computes the same path.
pub fn skip_file() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test binary>
    let profile_dir = exe.parent()?.parent()?;
    Some(
        profile_dir
            .join("idem-skips")
            .join(format!("{}.log", run_id())),
    )
}

#[cfg(unix)]
fn run_id() -> u32 {
    std::os::unix::process::parent_id()
}

#[cfg(not(unix))]
fn run_id() -> u32 {
    0
}
