//! The closing line of `cargo test --workspace`: how many tests skipped themselves for a
//! missing service, and why (a skipped test's own note is hidden in a passing run's output).
//!
//! `cargo test` runs the test binaries by package, then by target name: this package
//! (`ui-tests`) and this name come last. The tests that skip (`tests/src/skips.rs`) append
//! a line per skip to `target/<profile>/idem-skips/<cargo's pid>.log`; this binary reads
//! the file of its own run, prints one line if it holds any, and removes it. Without the
//! `tests` package in the run (`cargo test -p ui-tests`) it prints nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn main() {
    let Some(path) = skip_file() else { return };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let _ = std::fs::remove_file(&path);
    if let Some(line) = summary(&text) {
        println!("{line}");
    }
}

/// One line: the number of skipped tests, and each reason with its count.
fn summary(text: &str) -> Option<String> {
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total = 0;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let reason = line.split('\t').next().unwrap_or(line);
        *reasons.entry(reason).or_default() += 1;
        total += 1;
    }
    if total == 0 {
        return None;
    }
    let why: Vec<String> = reasons
        .iter()
        .map(|(reason, count)| format!("{count} because {reason}"))
        .collect();
    let tests = if total == 1 { "test" } else { "tests" };
    Some(format!(
        "SKIPPED {total} {tests}: {}; start the services (README, \"Run the tests\") or set CI=true to make a missing one fail",
        why.join("; ")
    ))
}

/// The same path as `tests::skips::skip_file` (this crate does not depend on `tests`, so
/// trybuild's build of the UI cases stays small).
fn skip_file() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
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
