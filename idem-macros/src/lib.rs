//! The `#[idempotent]` attribute of [idem](https://docs.rs/idem-core). Depend on
//! `idem-core`, which re-exports it; this crate only parses the attribute and generates a
//! thin call into `idem_core::__private`.

mod attr;
mod expand;

use proc_macro::TokenStream;
use quote::ToTokens;
use syn::ItemFn;

/// Makes an async function idempotent: the first call with a key runs the body and stores
/// its result; every later call with the same key, from this process or any other sharing
/// the store, returns the stored result without running the body again.
///
/// The function must be `async` and return `Result<T, E>` (or an alias of it), with
/// `T: Serialize + DeserializeOwned` and `E: From<idem_core::Error>`. Arguments in the key
/// or fingerprint must be `Serialize` and not `&mut` (a replay would not redo the body's
/// change to them: `skip` such handles).
///
/// # Options
///
#[doc = include_str!("options.md")]
///
/// # Examples
///
/// The shared set-up of the examples below:
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize)]
/// struct ChargeRequest { id: String, amount_cents: u64 }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct Receipt { charge_id: String, amount_cents: u64 }
///
/// #[derive(Debug, Serialize, Deserialize)]
/// enum PayError { Declined, Idempotency(String) }
/// impl From<idem_core::Error> for PayError {
///     fn from(err: idem_core::Error) -> Self { PayError::Idempotency(err.to_string()) }
/// }
///
/// struct Db; // a pool, a client: not part of the key
///
/// // `key`, `ttl`, `skip`: the request's id is the key; every non-skipped argument
/// // (the whole request) is fingerprinted, so the same id with another amount is refused.
/// #[idem_core::idempotent(key = "req.id", ttl = "24h", skip(db))]
/// async fn charge(req: ChargeRequest, db: &Db) -> Result<Receipt, PayError> {
///     Ok(Receipt { charge_id: format!("ch_{}", req.id), amount_cents: req.amount_cents })
/// }
///
/// // `fingerprint`: a retry that differs only in a field left out of it (a timestamp)
/// // replays; the same id with another amount is still refused.
/// #[derive(Serialize)]
/// struct Transfer { id: String, amount_cents: u64, sent_at: u64 }
///
/// #[idem_core::idempotent(key = "t.id", fingerprint = "&t.amount_cents")]
/// async fn transfer(t: Transfer) -> Result<u64, PayError> {
///     Ok(t.amount_cents)
/// }
///
/// // `name`, `in_flight`, `wait`, `lease`: a stable namespace; a duplicate that arrives while
/// // the first call runs fails at once instead of waiting.
/// #[idem_core::idempotent(name = "refund.v1", in_flight = "reject", wait = "5s", lease = "10s")]
/// async fn refund(charge_id: String) -> Result<u64, PayError> {
///     Ok(42)
/// }
///
/// // `cache_errors`: a declined card is a final answer; replay it instead of retrying.
/// #[idem_core::idempotent(cache_errors, ttl = "1h")]
/// async fn authorize(card: String) -> Result<bool, PayError> {
///     if card.ends_with("0002") { Err(PayError::Declined) } else { Ok(true) }
/// }
///
/// // `detach`: once started, the body finishes and its result is stored even if the
/// // caller's future is dropped (a client that hung up).
/// #[idem_core::idempotent(detach)]
/// async fn ship(order_id: u64) -> Result<String, PayError> {
///     Ok(format!("parcel-{order_id}"))
/// }
///
/// // `store`: a store other than the process default; `crate`: the runtime's path.
/// static AUDIT: std::sync::LazyLock<idem_core::SharedStore> =
///     std::sync::LazyLock::new(|| idem_core::SharedStore::new(idem_core::MokaStore::new()));
///
/// #[idem_core::idempotent(store = &*AUDIT, crate = "::idem_core")]
/// async fn audit(event: String) -> Result<(), PayError> {
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let req = || ChargeRequest { id: "order-1".into(), amount_cents: 500 };
/// let first = charge(req(), &Db).await.unwrap();
/// assert_eq!(charge(req(), &Db).await.unwrap(), first);
/// let other = ChargeRequest { id: "order-1".into(), amount_cents: 900 };
/// assert!(matches!(charge(other, &Db).await, Err(PayError::Idempotency(_))));
/// let t = |sent_at| Transfer { id: "t-1".into(), amount_cents: 300, sent_at };
/// assert_eq!(transfer(t(1)).await.unwrap(), 300);
/// assert_eq!(transfer(t(2)).await.unwrap(), 300); // replayed: `sent_at` is not fingerprinted
/// assert_eq!(refund("ch_1".into()).await.unwrap(), 42);
/// assert!(matches!(authorize("4000000000000002".into()).await, Err(PayError::Declined)));
/// assert_eq!(ship(7).await.unwrap(), "parcel-7");
/// audit("login".into()).await.unwrap();
/// # }
/// ```
///
/// Methods, nested fns and trait default bodies take their full path (impl, trait,
/// enclosing fns) into their namespace, and generic functions every generic argument in
/// scope (their own, their impl's, a trait's `Self`), so none of them share keys:
///
/// ```
/// # #[derive(Debug)] struct E;
/// # impl From<idem_core::Error> for E { fn from(_: idem_core::Error) -> Self { E } }
/// struct Mailer;
///
/// impl Mailer {
///     #[idem_core::idempotent(key = "to")]
///     async fn send(&self, to: &str, body: &str) -> Result<u64, E> {
///         Ok(body.len() as u64)
///     }
/// }
///
/// #[idem_core::idempotent]
/// async fn store_one<T: serde::Serialize + Send + Sync>(item: T) -> Result<(), E> {
///     Ok(())
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(Mailer.send("ada@example.com", "hi").await.unwrap(), 2);
/// store_one(5u8).await.unwrap();
/// # }
/// ```
///
/// Mistakes in the attribute are compile errors on the offending token:
///
/// ```compile_fail
/// # #[derive(Debug)] struct E;
/// # impl From<idem_core::Error> for E { fn from(_: idem_core::Error) -> Self { E } }
/// #[idem_core::idempotent(ttl = "0s")] // `ttl` must be longer than zero
/// async fn f(x: u32) -> Result<u32, E> { Ok(x) }
/// ```
#[proc_macro_attribute]
pub fn idempotent(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(err) => {
            let mut out = err.to_compile_error();
            out.extend(proc_macro2::TokenStream::from(item));
            return out.into();
        }
    };
    let expanded = match syn::parse::<attr::Args>(attr) {
        Ok(args) => expand::expand(args, &function, true),
        // Report the function's own mistakes (not `async`, no `Result`) too.
        Err(mut err) => {
            if let Err(more) = expand::expand(attr::Args::default(), &function, false) {
                err.combine(more);
            }
            Err(err)
        }
    };
    match expanded {
        Ok(tokens) => tokens.into(),
        // Keep the original function, so one mistake does not cascade into others.
        Err(err) => {
            let mut out = err.to_compile_error();
            out.extend(function.into_token_stream());
            out.into()
        }
    }
}

#[cfg(test)]
mod tests {
    /// The options table, one source: the rustdoc above includes it; the README must hold
    /// it verbatim, and it must list every option the parser accepts.
    const TABLE: &str = include_str!("options.md");

    #[test]
    fn the_readme_holds_the_options_table_verbatim() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(TABLE.trim_end()),
            "README.md's attribute table differs from idem-macros/src/options.md: copy the file into the README"
        );
    }

    #[test]
    fn the_options_table_lists_every_option() {
        for option in crate::attr::OPTIONS {
            assert!(
                TABLE.contains(&format!("| `{option}")),
                "idem-macros/src/options.md has no row for `{option}`"
            );
        }
        let rows = TABLE.lines().filter(|line| line.starts_with("| `")).count();
        assert_eq!(rows, crate::attr::OPTIONS.len(), "one row per option");
    }
}
