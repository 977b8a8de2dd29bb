//! A worker process for the multi-process Redis tests.
//!
//! ```text
//! idem_redis_worker --url URL[,URL..] --order ID --amount N --callers C --body-ms MS --log PATH [--wait-go]
//! idem_redis_worker --url URL --order ID --forget
//! ```
//!
//! Connects a `RedisStore` (a comma-separated list of URLs is a cluster), prints `READY`,
//! optionally waits for `GO` on stdin, then runs `C` concurrent calls of an idempotent
//! `charge` (lease 1 s, wait 20 s). Each body run appends `EXEC <pid> <charge id>` to the
//! log file and prints `STARTED <charge id>`, sleeps `MS`, and returns a receipt. Each call
//! prints `OK <charge id> <amount>` or `ERR <error>`; then `DONE`. With `--forget`, it
//! forgets the order's record instead and prints `FORGOT <true|false>`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem_core::{Error, RedisStore, SharedStore, idempotent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize)]
struct ChargeRequest {
    id: String,
    amount_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charge_id: String,
    amount_cents: u64,
}

#[derive(Debug)]
enum WorkerError {
    Idem(Error),
}

impl From<Error> for WorkerError {
    fn from(err: Error) -> Self {
        WorkerError::Idem(err)
    }
}

struct Ctx {
    store: SharedStore,
    log: PathBuf,
    body: Duration,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[idempotent(
    key = "req.id",
    name = "tests.worker.charge.v1",
    ttl = "1h",
    lease = "1s",
    wait = "20s",
    skip(ctx),
    store = &ctx.store
)]
async fn charge(req: ChargeRequest, ctx: &Ctx) -> Result<Receipt, WorkerError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let charge_id = format!("ch_{}_{nanos}", std::process::id());
    {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ctx.log)
            .expect("open the execution log");
        log.write_all(format!("EXEC {} {charge_id}\n", std::process::id()).as_bytes())
            .expect("append to the execution log");
    }
    say(&format!("STARTED {charge_id}"));
    tokio::time::sleep(ctx.body).await;
    Ok(Receipt {
        charge_id,
        amount_cents: req.amount_cents,
    })
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let need = |name: &str| arg(&args, name).unwrap_or_else(|| panic!("missing {name}"));
    let url = need("--url");
    let order = need("--order");
    if args.iter().any(|a| a == "--forget") {
        // Another process's `forget` of the order's record.
        let store = RedisStore::connect(&url).await.expect("connect to redis");
        let key = idem_core::KeyHasher::unkeyed()
            .key(&["tests.worker.charge.v1"], &order)
            .expect("key");
        let forgot = SharedStore::new(store).forget(&key).await.expect("forget");
        say(&format!("FORGOT {forgot}"));
        return;
    }
    let amount: u64 = need("--amount").parse().expect("--amount");
    let callers: usize = need("--callers").parse().expect("--callers");
    let body = Duration::from_millis(need("--body-ms").parse().expect("--body-ms"));
    let log = PathBuf::from(need("--log"));

    let store = if url.contains(',') {
        RedisStore::connect_cluster(url.split(',')).await
    } else {
        RedisStore::connect(&url).await
    }
    .expect("connect to redis");
    let ctx = Arc::new(Ctx {
        store: SharedStore::new(store),
        log,
        body,
    });
    say("READY");
    if args.iter().any(|a| a == "--wait-go") {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .expect("read GO");
    }

    let calls: Vec<_> = (0..callers)
        .map(|_| {
            let ctx = Arc::clone(&ctx);
            let req = ChargeRequest {
                id: order.clone(),
                amount_cents: amount,
            };
            tokio::spawn(async move { charge(req, &ctx).await })
        })
        .collect();
    for call in calls {
        match call.await.expect("call task") {
            Ok(receipt) => say(&format!(
                "OK {} {}",
                receipt.charge_id, receipt.amount_cents
            )),
            Err(WorkerError::Idem(err)) => say(&format!("ERR {err:?}")),
        }
    }
    say("DONE");
}
