//! Parsing of `#[idempotent(...)]`: every option, checked, with errors spanned on the
//! offending token and all of them reported together.

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

/// The options, validated.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) key: Option<KeyExpr>,
    pub(crate) fingerprint: Option<KeyExpr>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) skip: Vec<Ident>,
    pub(crate) store: Option<Expr>,
    pub(crate) name: Option<LitStr>,
    pub(crate) in_flight_reject: bool,
    pub(crate) wait: Option<Duration>,
    pub(crate) lease: Option<Duration>,
    pub(crate) cache_errors: bool,
    pub(crate) detach: bool,
    pub(crate) krate: Option<Path>,
    /// `transaction = "tx"`: the `&mut sqlx::PgConnection` parameter (PostgreSQL).
    pub(crate) transaction: Option<Ident>,
}

/// `key = "expr"` or `fingerprint = "expr"`: the literal (for spans) and the expression
/// parsed from it.
pub(crate) struct KeyExpr {
    pub(crate) lit: LitStr,
    pub(crate) expr: Expr,
}

/// One option as written, before it is checked.
struct RawOption {
    name: Ident,
    value: RawValue,
}

enum RawValue {
    /// `detach`
    Flag,
    /// `ttl = "24h"`, `store = STORE.clone()`
    Assign(Expr),
    /// `skip(db, client)`
    List(Punctuated<Ident, Token![,]>),
}

impl Parse for RawOption {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // `Ident::parse_any` also accepts the `crate` keyword.
        let name = Ident::parse_any(input)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            RawValue::Assign(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            RawValue::List(content.parse_terminated(Ident::parse_any, Token![,])?)
        } else {
            RawValue::Flag
        };
        Ok(RawOption { name, value })
    }
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let raw = Punctuated::<RawOption, Token![,]>::parse_terminated(input)?;
        let mut args = Args::default();
        let mut errors = Errors::default();
        let mut seen: Vec<String> = Vec::new();
        for option in raw {
            let name = option.name.to_string();
            if seen.contains(&name) {
                errors.push(syn::Error::new_spanned(
                    &option.name,
                    format!("duplicate option `{name}`"),
                ));
                continue;
            }
            seen.push(name.clone());
            if let Err(err) = args.apply(&name, option) {
                errors.push(err);
            }
        }
        errors.finish()?;
        Ok(args)
    }
}

/// Every option; `options.md` has a row for each (checked by a test).
pub(crate) const OPTIONS: [&str; 13] = [
    "key",
    "fingerprint",
    "ttl",
    "skip",
    "store",
    "name",
    "in_flight",
    "wait",
    "lease",
    "cache_errors",
    "detach",
    "crate",
    "transaction",
];

impl Args {
    fn apply(&mut self, name: &str, option: RawOption) -> syn::Result<()> {
        let RawOption { name: ident, value } = option;
        match name {
            "key" => {
                self.key = Some(expression(
                    &ident,
                    value,
                    "a Rust expression over the arguments, like \"req.id\"",
                )?);
            }
            "fingerprint" => {
                self.fingerprint = Some(expression(
                    &ident,
                    value,
                    "a Rust expression over the arguments, like \"(&req.amount, &req.currency)\"",
                )?);
            }
            "ttl" => self.ttl = Some(duration(&ident, value, "24h", Duration::ZERO)?),
            "wait" => self.wait = Some(duration(&ident, value, "60s", Duration::ZERO)?),
            "lease" => self.lease = Some(duration(&ident, value, "30s", MIN_LEASE)?),
            "name" => {
                let lit = string(&ident, value, "a stable namespace, like \"charge.v1\"")?;
                if lit.value().trim().is_empty() {
                    return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
                }
                self.name = Some(lit);
            }
            "in_flight" => {
                let lit = string(&ident, value, "\"wait\" or \"reject\"")?;
                self.in_flight_reject = match lit.value().as_str() {
                    "wait" => false,
                    "reject" => true,
                    other => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "unknown `in_flight` policy {other:?}: expected \"wait\" or \"reject\""
                            ),
                        ));
                    }
                };
            }
            "skip" => match value {
                RawValue::List(list) => self.skip = list.into_iter().collect(),
                _ => return Err(syn::Error::new_spanned(ident, "expected `skip(arg, ...)`")),
            },
            "store" => match value {
                RawValue::Assign(expr) => self.store = Some(expr),
                _ => {
                    return Err(syn::Error::new_spanned(
                        ident,
                        "expected `store = expr`, an expression giving an `idem_core::SharedStore`",
                    ));
                }
            },
            "cache_errors" => self.cache_errors = flag(&ident, value)?,
            "detach" => self.detach = flag(&ident, value)?,
            "crate" => {
                let lit = string(&ident, value, "a path, like \"::idem_core\"")?;
                self.krate = Some(lit.parse::<Path>().map_err(|err| {
                    syn::Error::new(lit.span(), format!("`crate` is not a path: {err}"))
                })?);
            }
            "transaction" => {
                let lit = string(
                    &ident,
                    value,
                    "the name of a `&mut sqlx::PgConnection` parameter, like \"tx\"",
                )?;
                let parsed = lit.parse::<Ident>().map_err(|_| {
                    syn::Error::new(
                        lit.span(),
                        "`transaction` takes the name of a parameter, like \"tx\"",
                    )
                })?;
                // Spanned on the literal, so errors about the parameter point there.
                self.transaction = Some(Ident::new(&parsed.to_string(), lit.span()));
            }
            _ => {
                let hint = OPTIONS
                    .iter()
                    .map(|option| (strsim::normalized_damerau_levenshtein(name, option), option))
                    .filter(|(score, _)| *score >= 0.6)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, option)| format!("did you mean `{option}`? "))
                    .unwrap_or_default();
                return Err(syn::Error::new_spanned(
                    ident,
                    format!(
                        "unknown option `{name}`; {hint}expected one of: {}",
                        OPTIONS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A Rust expression in a string literal (`key = "req.id"`).
///
/// Its tokens are spanned on the literal but marked as coming from the macro: rustc
/// cannot point inside a string literal, so a suggestion it makes for a token of the
/// expression (a similarly named field) would replace the whole literal with bare code;
/// marked so, the error stays on the literal and the wrong suggestion is left out.
fn expression(name: &Ident, value: RawValue, expected: &str) -> syn::Result<KeyExpr> {
    // `key = req.id`: the expression written bare; say how to quote this very one.
    if let RawValue::Assign(bare) = &value
        && !matches!(
            bare,
            Expr::Lit(ExprLit {
                lit: Lit::Str(_),
                ..
            })
        )
    {
        let code = compact(&quote::ToTokens::to_token_stream(bare).to_string());
        return Err(syn::Error::new_spanned(
            bare,
            format!("`{name}` takes the expression in a string literal: write `{name} = {code:?}`"),
        ));
    }
    let lit = string(name, value, expected)?;
    let tokens = lit.parse::<proc_macro2::TokenStream>().map_err(|err| {
        syn::Error::new(
            lit.span(),
            format!("`{name}` is not a valid Rust expression: {err}"),
        )
    })?;
    let span = Span::call_site().located_at(lit.span());
    let expr = syn::parse2::<Expr>(respan(tokens, span)).map_err(|err| {
        syn::Error::new(
            lit.span(),
            format!("`{name}` is not a valid Rust expression: {err}"),
        )
    })?;
    Ok(KeyExpr { lit, expr })
}

/// Token text as a person writes it: `req . id` as `req.id`, `(& a , & b)` as `(&a, &b)`.
fn compact(code: &str) -> String {
    [
        (" . ", "."),
        (" :: ", "::"),
        ("& ", "&"),
        (" ,", ","),
        ("( ", "("),
        (" )", ")"),
        (" (", "("),
    ]
    .iter()
    .fold(code.to_string(), |code, (from, to)| code.replace(from, to))
}

/// `tokens` with every span set to `span`.
pub(crate) fn respan(tokens: proc_macro2::TokenStream, span: Span) -> proc_macro2::TokenStream {
    tokens
        .into_iter()
        .map(|tree| match tree {
            proc_macro2::TokenTree::Group(group) => {
                let mut respanned =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                proc_macro2::TokenTree::Group(respanned)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// The string literal of `name = "..."`.
fn string(name: &Ident, value: RawValue, expected: &str) -> syn::Result<LitStr> {
    match value {
        RawValue::Assign(Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        })) => Ok(lit),
        RawValue::Assign(other) => Err(syn::Error::new_spanned(
            other,
            format!("`{name}` takes a string literal: {expected}"),
        )),
        _ => Err(syn::Error::new_spanned(
            name,
            format!("expected `{name} = \"...\"`: {expected}"),
        )),
    }
}

/// The longest `ttl`, `wait` or `lease`: 100 years (humantime's `100y`). Longer ones are
/// meaningless and would overflow `Instant::now() + d` at run time.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// The shortest `lease`: the holder renews its claim every third of the lease, which a
/// store round trip must fit in.
pub(crate) const MIN_LEASE: Duration = Duration::from_millis(100);

/// A humantime duration (`"90s"`, `"1h 30m"`), longer than zero and than `min`, at most
/// [`MAX_DURATION`].
fn duration(name: &Ident, value: RawValue, example: &str, min: Duration) -> syn::Result<Duration> {
    let lit = string(name, value, &format!("a duration like \"{example}\""))?;
    let duration = humantime::parse_duration(&lit.value()).map_err(|err| {
        syn::Error::new(
            lit.span(),
            format!("`{name}` is not a duration ({err}); write it like \"90s\", \"30m\", \"1h 30m\" or \"7d\""),
        )
    })?;
    if duration.is_zero() {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{name}` must be longer than zero"),
        ));
    }
    if duration < min {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "`{name}` must be at least {}: a running call renews its claim every third of the lease, and a shorter one lapses before a store round trip can renew it",
                humantime::format_duration(min)
            ),
        ));
    }
    if duration > MAX_DURATION {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{name}` must be at most 100 years (\"100y\")"),
        ));
    }
    Ok(duration)
}

/// A bare flag such as `detach`.
fn flag(name: &Ident, value: RawValue) -> syn::Result<bool> {
    match value {
        RawValue::Flag => Ok(true),
        _ => Err(syn::Error::new_spanned(
            name,
            format!("`{name}` takes no value"),
        )),
    }
}

/// Errors gathered so that all of them are reported at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    pub(crate) fn push_at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tokens: &str) -> syn::Result<Args> {
        syn::parse_str::<Args>(tokens)
    }

    fn error(tokens: &str) -> String {
        match parse(tokens) {
            Ok(_) => panic!("`{tokens}` should not parse"),
            Err(err) => err
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" | "),
        }
    }

    #[test]
    fn empty() {
        let args = parse("").unwrap();
        assert!(args.key.is_none() && args.ttl.is_none() && args.skip.is_empty());
        assert!(!args.cache_errors && !args.detach && !args.in_flight_reject);
    }

    #[test]
    fn every_option() {
        let args = parse(
            r#"key = "req.id", fingerprint = "req.amount", ttl = "1h 30m", skip(db, self), store = STORE.clone(),
               name = "charge.v1", in_flight = "reject", wait = "5s", lease = "10s",
               cache_errors, detach, crate = "::my_idem", transaction = "tx","#,
        )
        .unwrap();
        let key = &args.key.as_ref().unwrap().expr;
        assert_eq!(quote::quote!(#key).to_string(), "req . id");
        let fingerprint = &args.fingerprint.as_ref().unwrap().expr;
        assert_eq!(quote::quote!(#fingerprint).to_string(), "req . amount");
        assert_eq!(args.ttl, Some(Duration::from_secs(5400)));
        assert_eq!(args.skip.len(), 2);
        assert!(args.store.is_some());
        assert_eq!(args.name.as_ref().unwrap().value(), "charge.v1");
        assert!(args.in_flight_reject);
        assert_eq!(args.wait, Some(Duration::from_secs(5)));
        assert_eq!(args.lease, Some(Duration::from_secs(10)));
        assert!(args.cache_errors && args.detach);
        let krate = args.krate.as_ref().unwrap();
        assert_eq!(quote::quote!(#krate).to_string(), ":: my_idem");
        assert_eq!(args.transaction.as_ref().unwrap(), "tx");
        assert!(!parse(r#"in_flight = "wait""#).unwrap().in_flight_reject);
    }

    #[test]
    fn mistakes() {
        assert!(error("retries = 3").contains("unknown option `retries`"));
        assert!(error("tll = \"1h\"").contains("did you mean `ttl`?"));
        assert!(error("cache_error").contains("did you mean `cache_errors`?"));
        assert!(error("inflight = \"wait\"").contains("did you mean `in_flight`?"));
        assert!(!error("retries = 3").contains("did you mean"));
        assert!(
            error(r#"fingerprint = "a b""#)
                .contains("`fingerprint` is not a valid Rust expression")
        );
        assert!(error(r#"ttl = "1h", ttl = "2h""#).contains("duplicate option `ttl`"));
        assert!(error(r#"ttl = "one day""#).contains("`ttl` is not a duration"));
        assert!(error(r#"wait = "0s""#).contains("`wait` must be longer than zero"));
        assert!(error("lease = 30").contains("`lease` takes a string literal"));
        assert!(error(r#"lease = "1ms""#).contains("`lease` must be at least 100ms"));
        assert!(error(r#"ttl = "101y""#).contains("`ttl` must be at most 100 years"));
        assert!(error(r#"wait = "9999999999999y""#).contains("`wait`"));
        assert!(parse(r#"ttl = "100y", wait = "100y", lease = "100ms""#).is_ok());
        assert!(error(r#"key = "req.""#).contains("`key` is not a valid Rust expression"));
        assert!(error(r#"in_flight = "retry""#).contains("unknown `in_flight` policy"));
        assert!(error(r#"name = "  ""#).contains("`name` must not be empty"));
        assert!(error(r#"detach = "yes""#).contains("`detach` takes no value"));
        assert!(error("skip = db").contains("expected `skip(arg, ...)`"));
        assert!(error("store").contains("expected `store = expr`"));
        assert!(error(r#"crate = "not a path""#).contains("`crate` is not a path"));
        assert!(error(r#"transaction = "a b""#).contains("takes the name of a parameter"));
        assert!(error("transaction = tx").contains("`transaction` takes a string literal"));
        assert!(error("key = req.id").contains(r#"write `key = "req.id"`"#));
        assert!(
            error("fingerprint = (&req.amount, &req.currency)")
                .contains(r#"write `fingerprint = "(&req.amount, &req.currency)"`"#)
        );
        // Every mistake is reported, not only the first.
        let all = error(r#"retries = 3, ttl = "0s", in_flight = "x""#);
        assert_eq!(all.matches(" | ").count(), 2, "{all}");
    }

    #[test]
    fn syntax_errors_do_not_panic() {
        for tokens in [
            "ttl =",
            "skip(1)",
            "= 3",
            "key = ",
            "skip(a b)",
            "ttl = \"1h\" ttl",
        ] {
            assert!(parse(tokens).is_err(), "{tokens}");
        }
    }
}
