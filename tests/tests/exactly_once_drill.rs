//! The exactly-once drill (`examples/examples/exactly_once_drill.rs`, built here as the
//! `exactly_once_drill` binary) at a small size: two `http_service` processes on a private
//! Redis (and a private PostgreSQL for the orders), clients with idem's retry middleware,
//! servers killed with -9, Redis frozen, PostgreSQL restarted, answers cut after the server
//! charged; the charge log and the orders table must show no duplicate and no lost effect. The control run without the layer must count duplicates (the drill is not
//! vacuous).

use std::process::Command;

use tests::redis_server::redis_available;

/// Runs the drill with `args`; its exit code and summary (last) line.
fn drill(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_exactly_once_drill"))
        .args(args)
        .env("IDEM_DRILL_SERVER", env!("CARGO_BIN_EXE_http_service"))
        .output()
        .expect("run the drill");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // A failed run keeps its charge log for inspection; this one is expected, so it goes.
    if let Some(kept) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("the charge log is kept in "))
    {
        let _ = std::fs::remove_dir_all(std::path::Path::new(kept).parent().unwrap());
    }
    let summary = stdout
        .lines()
        .rfind(|l| l.starts_with("exactly-once drill"));
    (out.status.code(), summary.unwrap_or_default().to_string())
}

/// The value of `name=` in the summary line.
fn figure(summary: &str, name: &str) -> usize {
    summary
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .find_map(|field| field.strip_prefix(&format!("{name}="))?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {summary:?}"))
}

/// Whether `initdb` can be run; with `CI=true` a missing one fails the test.
fn postgres_tools_available() -> bool {
    let found = Command::new("initdb")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "initdb is not installed, and CI=true: the drill's PostgreSQL part must run"
        );
        eprintln!("SKIPPED: the drill's PostgreSQL part (initdb is not installed)");
    }
    found
}

#[test]
fn under_kills_freezes_restarts_and_cut_answers_every_effect_happens_exactly_once() {
    if !redis_available() {
        return;
    }
    let mut args = vec!["--ops", "300", "--workers", "16", "--fault-every-ms", "500"];
    let postgres = postgres_tools_available();
    if !postgres {
        args.push("--no-postgres");
    }
    let (code, summary) = drill(&args);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(figure(&summary, "ok"), 300, "{summary}");
    assert_eq!(figure(&summary, "duplicates"), 0, "{summary}");
    assert_eq!(figure(&summary, "lost"), 0, "{summary}");
    assert_eq!(figure(&summary, "confused"), 0, "{summary}");
    for kind in ["server_kill", "redis_freeze", "answer_cut"] {
        assert!(figure(&summary, kind) >= 1, "{kind}: {summary}");
    }
    if postgres {
        assert_eq!(figure(&summary, "orders"), 60, "{summary}");
        assert!(figure(&summary, "pg_restart") >= 1, "{summary}");
    }
}

#[test]
fn without_the_layer_the_same_drill_counts_duplicates() {
    if !redis_available() {
        return;
    }
    let (code, summary) = drill(&[
        "--ops",
        "100",
        "--workers",
        "16",
        "--fault-every-ms",
        "500",
        "--no-guard",
        "--no-postgres",
    ]);
    assert_eq!(code, Some(1), "{summary}");
    assert!(figure(&summary, "duplicates") > 0, "{summary}");
}
