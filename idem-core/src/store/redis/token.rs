//! The fencing tokens a [`RedisStore`](super::RedisStore) writes into its claims.
//!
//! Tokens are made here, not on the server, because the claim is one native `SET .. NX
//! GET` that must carry its token. (PostgreSQL draws its tokens in the claim statement
//! itself, `gen_random_uuid()`, and `MokaStore` counts them per store: its tokens are
//! compared only within its own map.)

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::Token;

/// A new 128-bit fencing token: a per-process random 128-bit start plus a counter. Unique
/// within the process, and two processes' ranges meet only if their random starts fall
/// within 2^64 of each other. Cheap: a claim on the hit path makes one, and it costs an
/// atomic add.
pub(super) fn new_token() -> Token {
    static START: LazyLock<u128> = LazyLock::new(random_start);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    Token::new(START.wrapping_add(u128::from(count)))
}

/// 128 bits from the operating system's random source.
fn random_start() -> u128 {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u128::from_le_bytes(bytes),
        // Only where the OS refuses randomness (a sandbox that denies the syscall and
        // `/dev/urandom`). Claims must still work there, so no panic: a start that
        // differs between processes still keeps their tokens apart.
        Err(_) => fallback_start(),
    }
}

/// A start without the OS's randomness: BLAKE3 of the process id, the time and a stack
/// address (randomised by ASLR where the platform has it). Not `RandomState`: it draws
/// from the same OS source, and panics where that fails.
fn fallback_start() -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&std::process::id().to_le_bytes());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    let local = 0u8;
    hasher.update(&(&raw const local as usize).to_le_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    u128::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct() {
        let tokens: std::collections::HashSet<u128> =
            (0..10_000).map(|_| new_token().get()).collect();
        assert_eq!(tokens.len(), 10_000);
    }

    #[test]
    fn random_starts_differ_and_the_fallback_differs_over_time() {
        assert_ne!(random_start(), random_start());
        let first = fallback_start();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_ne!(fallback_start(), first);
    }
}
