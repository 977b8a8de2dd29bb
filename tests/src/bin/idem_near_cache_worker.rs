//! A process with a near-cached `RedisStore`, for the tracking test
//! (`tests/tests/redis_near_cache.rs`).
//!
//! ```text
//! idem_near_cache_worker --url URL --prefix PREFIX --bound-ms MS
//! ```
//!
//! Prints `READY`, then reads commands on stdin, one per line:
//! `WATCH <key hex>` claims the key (it must hold a completed record), prints `LOADED` once
//! the record is in the near-cache (or `MISS`), then polls the near-cache without sending
//! anything until the entry is gone and prints `GONE <unix time in ns>` (or `STALE` after
//! 5 s).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use idem_core::store::{Claim, Store};
use idem_core::{Key, KeyHasher, RedisStore};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn arg(args: &[String], name: &str) -> String {
    let at = args.iter().position(|a| a == name).expect(name);
    args[at + 1].clone()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bound = Duration::from_millis(arg(&args, "--bound-ms").parse().expect("--bound-ms"));
    let store = RedisStore::builder(arg(&args, "--url"))
        .prefix(arg(&args, "--prefix"))
        .near_cache(1 << 20, bound)
        .build()
        .await
        .expect("connect");
    let fp = KeyHasher::unkeyed()
        .fingerprint(&"payload")
        .expect("fingerprint");
    let lease = Duration::from_secs(30);
    say("READY");
    let mut lines = std::io::stdin().lock().lines();
    while let Some(Ok(line)) = lines.next() {
        let Some(hex) = line.strip_prefix("WATCH ") else {
            continue;
        };
        let key = Key::from_hex(hex.trim()).expect("key hex");
        match store.claim(&key, &fp, lease).await {
            Ok(Claim::Completed(_)) if store.claim_now(&key, &fp, lease).is_some() => {}
            other => {
                say(&format!("MISS {other:?}"));
                continue;
            }
        }
        say("LOADED");
        let watcher = store.clone();
        let gone = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while watcher.claim_now(&key, &fp, lease).is_some() {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            Some(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos(),
            )
        })
        .await
        .expect("watcher");
        match gone {
            Some(ns) => say(&format!("GONE {ns}")),
            None => say("STALE"),
        }
    }
}
