//! A small payments service whose `charge` is idempotent.
//!
//! ```text
//! cargo run -p examples --example payments
//! ```
//!
//! It shows a first charge, a retried charge replayed, 100 concurrent double-clicks that
//! charge once, a reused key with another amount refused, and a declined charge retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use idem_core::idempotent;
use serde::{Deserialize, Serialize};

/// What the client sends; `id` is the client's idempotency key.
#[derive(Debug, Clone, Serialize)]
struct ChargeRequest {
    id: String,
    customer: String,
    amount_cents: u64,
    card: String,
}

/// What the client gets back, stored and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charge_id: String,
    amount_cents: u64,
}

#[derive(Debug)]
enum PayError {
    Declined,
    Idempotency(idem_core::Error),
}

impl From<idem_core::Error> for PayError {
    fn from(err: idem_core::Error) -> Self {
        PayError::Idempotency(err)
    }
}

/// The payment provider: counts real charges; declines a card's first attempt when asked.
#[derive(Default)]
struct Provider {
    charges: AtomicUsize,
    next_id: AtomicU64,
    flaky_attempts: AtomicUsize,
}

impl Provider {
    async fn charge(
        &self,
        req: &ChargeRequest,
        idempotency_key: &str,
    ) -> Result<Receipt, PayError> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if req.card == "4000-flaky" && self.flaky_attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(PayError::Declined);
        }
        self.charges.fetch_add(1, Ordering::SeqCst);
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        println!(
            "    provider: charged {} cents (provider idempotency key {}…)",
            req.amount_cents,
            &idempotency_key[..12]
        );
        Ok(Receipt {
            charge_id: format!("ch_{n:04}"),
            amount_cents: req.amount_cents,
        })
    }
}

/// Charges a card once per request id, however often the request is retried.
#[idempotent(key = "req.id", ttl = "24h", skip(provider))]
async fn charge(req: ChargeRequest, provider: &Provider) -> Result<Receipt, PayError> {
    // The same key, passed downstream, deduplicates at the provider after a crash too.
    let key = idem_core::current_key()
        .expect("inside an idempotent body")
        .to_hex();
    provider.charge(&req, &key).await
}

fn request(id: &str, amount_cents: u64, card: &str) -> ChargeRequest {
    ChargeRequest {
        id: id.to_string(),
        customer: "cus_ada".to_string(),
        amount_cents,
        card: card.to_string(),
    }
}

#[tokio::main]
async fn main() {
    let provider = Arc::new(Provider::default());

    println!("1. first charge of order-1");
    let first = charge(request("order-1", 2_500, "4242"), &provider)
        .await
        .expect("charged");
    println!("   -> {first:?}");

    println!("2. the client retries order-1 (a timeout on its side)");
    let retried = charge(request("order-1", 2_500, "4242"), &provider)
        .await
        .expect("replayed");
    println!("   -> {retried:?} (replayed: {})", retried == first);

    println!("3. 100 concurrent double-clicks on order-2");
    let before = provider.charges.load(Ordering::SeqCst);
    let clicks: Vec<_> = (0..100)
        .map(|_| {
            let provider = Arc::clone(&provider);
            tokio::spawn(async move { charge(request("order-2", 990, "4242"), &provider).await })
        })
        .collect();
    let mut receipts = Vec::new();
    for click in clicks {
        receipts.push(click.await.expect("task").expect("charged or replayed"));
    }
    let distinct = receipts.iter().filter(|r| **r != receipts[0]).count();
    println!(
        "   -> 100 callers got {:?}; charges run: {}; callers with another receipt: {distinct}",
        receipts[0],
        provider.charges.load(Ordering::SeqCst) - before
    );

    println!("4. order-1 reused with another amount");
    match charge(request("order-1", 9_999, "4242"), &provider).await {
        Err(PayError::Idempotency(idem_core::Error::PayloadMismatch)) => {
            println!("   -> refused: key reused with a different payload (nothing charged)")
        }
        other => println!("   -> unexpected: {other:?}"),
    }

    println!("5. order-3 is declined, then retried");
    match charge(request("order-3", 1_200, "4000-flaky"), &provider).await {
        Err(PayError::Declined) => {
            println!("   -> declined (the key is released, a retry may run)")
        }
        other => println!("   -> unexpected: {other:?}"),
    }
    let retry = charge(request("order-3", 1_200, "4000-flaky"), &provider)
        .await
        .expect("charged on retry");
    println!("   -> retry charged: {retry:?}");

    println!(
        "total charges run by the provider: {} (orders 1, 2 and 3)",
        provider.charges.load(Ordering::SeqCst)
    );
}
