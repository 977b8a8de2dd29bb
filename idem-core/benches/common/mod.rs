//! What both bench binaries share: the typical request and result, the bodies, and small
//! measuring helpers for the sections criterion's model does not fit.
#![allow(dead_code, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod machine;

/// The typical request: a `String` id, a `u64` amount, a `String` currency, three tags and
/// three metadata entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub amount: u64,
    pub currency: String,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

/// The same request with a `HashMap` (key-derivation group only: `cached` needs `Hash`).
#[derive(Clone, Debug, Serialize)]
pub struct RequestHashMap {
    pub id: String,
    pub amount: u64,
    pub currency: String,
    pub tags: Vec<String>,
    pub meta: HashMap<String, String>,
}

/// The typical result: two strings and two `u64`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub charge_id: String,
    pub status: String,
    pub amount: u64,
    pub created: u64,
}

/// The error type of every benched function.
#[derive(Clone, Debug)]
pub struct BenchError(pub String);

impl From<idem_core::Error> for BenchError {
    fn from(err: idem_core::Error) -> Self {
        BenchError(err.to_string())
    }
}

pub fn request(id: impl Into<String>) -> Request {
    Request {
        id: id.into(),
        amount: 4_250,
        currency: "EUR".to_owned(),
        tags: vec!["web".to_owned(), "retry".to_owned(), "eu-west".to_owned()],
        meta: BTreeMap::from([
            ("customer".to_owned(), "cus_8f2a91".to_owned()),
            ("order".to_owned(), "ord_55120".to_owned()),
            ("source".to_owned(), "checkout".to_owned()),
        ]),
    }
}

pub fn request_hashmap(id: impl Into<String>) -> RequestHashMap {
    let r = request(id);
    RequestHashMap {
        id: r.id,
        amount: r.amount,
        currency: r.currency,
        tags: r.tags,
        meta: r.meta.into_iter().collect(),
    }
}

/// The body every variant runs: builds the receipt.
pub fn body(req: &Request) -> Receipt {
    Receipt {
        charge_id: format!("ch_{}", req.id),
        status: "succeeded".to_owned(),
        amount: req.amount,
        created: 1_764_000_000,
    }
}

/// Percentile of sorted nanosecond samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

pub fn fmt_dur(d: Duration) -> String {
    fmt_ns(d.as_nanos() as f64)
}

/// Whether the binary runs as `cargo bench` (not `cargo test --benches`), and which custom
/// sections to run: all unless `IDEM_BENCH_SECTIONS` lists some (comma-separated).
pub fn section_enabled(name: &str) -> bool {
    if !std::env::args().any(|a| a == "--bench") {
        return false;
    }
    match std::env::var("IDEM_BENCH_SECTIONS") {
        Ok(list) => list.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

/// Whether the criterion groups run (`IDEM_BENCH_SECTIONS` unset or listing `criterion`).
pub fn criterion_enabled() -> bool {
    match std::env::var("IDEM_BENCH_SECTIONS") {
        Ok(list) => list.split(',').any(|s| s.trim() == "criterion"),
        Err(_) => true,
    }
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Prints a table with a title, aligned columns.
pub fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    println!("\n## {title}\n");
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.iter().map(|h| h.to_string()).collect());
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in rows {
        line(row.clone());
    }
}
