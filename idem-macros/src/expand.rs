//! Checks the function against the options and generates the thin call into
//! `idem_core::__private`.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{AttrStyle, FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use crate::attr::{Args, Errors, KeyExpr, respan};

/// The function's parameters, by name.
struct Params {
    /// `self` if the function is a method.
    receiver: Option<Span>,
    /// Named parameters, in order.
    named: Vec<Ident>,
}

impl Params {
    fn contains(&self, ident: &Ident) -> bool {
        (ident == "self" && self.receiver.is_some()) || self.named.iter().any(|p| p == ident)
    }
}

/// Checks the function against `args` and generates its code. With `attribute_ok` false
/// (the attribute had errors and `args` are the defaults), only the function's own mistakes
/// are reported: one that depends on the options (a `&mut` argument may be skipped) waits
/// until the attribute parses.
pub(crate) fn expand(args: Args, item: &ItemFn, attribute_ok: bool) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let sig = &item.sig;

    if sig.asyncness.is_none() {
        errors.push_at(sig.fn_token.span, "#[idempotent] requires an `async fn`");
    }
    // Whether the return type is a `Result` is the type checker's call (`IdemResult` is
    // implemented for `Result`, so an alias works and a type merely named `..Result` does
    // not); only a missing return type is refused here.
    let ret = match &sig.output {
        ReturnType::Type(_, ty) => Some(ty.as_ref()),
        ReturnType::Default => {
            errors.push_at(
                sig.paren_token.span.close(),
                "#[idempotent] functions must return `Result<T, E>` (`T` is stored and replayed; an `Err` releases the key)",
            );
            None
        }
    };

    let mut params = Params {
        receiver: None,
        named: Vec::new(),
    };
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => params.receiver = Some(receiver.self_token.span),
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(pat) if pat.subpat.is_none() => {
                    // The transaction's connection is never in the key or fingerprint.
                    let is_transaction = args.transaction.as_ref() == Some(&pat.ident);
                    if attribute_ok
                        && !args.skip.contains(&pat.ident)
                        && !is_transaction
                        && has_mut_reference(typed.ty.to_token_stream())
                    {
                        let message = match connection_type(typed.ty.to_token_stream()) {
                            Some(ty) => connection_argument_message(&pat.ident, &ty),
                            None => mut_argument_message(&pat.ident),
                        };
                        errors.push(syn::Error::new_spanned(&typed.ty, message));
                    }
                    params.named.push(pat.ident.clone());
                }
                other => errors.push(syn::Error::new_spanned(
                    other,
                    "#[idempotent] needs a plain name for each argument; destructure it in the body",
                )),
            },
        }
    }

    if let Some(tx) = &args.transaction {
        check_transaction(&mut errors, &args, sig, tx);
    }

    for skipped in &args.skip {
        if !params.contains(skipped) {
            errors.push(syn::Error::new_spanned(
                skipped,
                format!("`skip`: `{}` has no parameter named `{skipped}`", sig.ident),
            ));
        }
    }

    let mut names_self = |option: &str, expr: Option<&KeyExpr>| {
        expr.is_some_and(|expr| {
            let mentioned = mentioned_idents(expr.expr.to_token_stream());
            if !mentioned.iter().any(|ident| params.contains(ident)) {
                errors.push(syn::Error::new(
                    expr.lit.span(),
                    format!(
                        "`{option}` must use an argument of `{}`; it names none of its parameters",
                        sig.ident
                    ),
                ));
            }
            mentioned.iter().any(|ident| ident == "self")
        })
    };
    let key_names_self = names_self("key", args.key.as_ref());
    let fingerprint_names_self = names_self("fingerprint", args.fingerprint.as_ref());
    if let Some(FnArg::Receiver(receiver)) = sig.inputs.first()
        && (key_names_self || fingerprint_names_self)
        && !args.skip.iter().any(|skipped| skipped == "self")
        && has_mut_reference(receiver.ty.to_token_stream())
    {
        errors.push(syn::Error::new_spanned(
            receiver,
            mut_argument_message(&Ident::new("self", receiver.self_token.span)),
        ));
    }

    errors.finish()?;
    let Some(ret) = ret else {
        // Unreachable: a missing return type was reported above. An error, not a panic.
        return Err(syn::Error::new(
            sig.ident.span(),
            "#[idempotent] functions must return `Result<T, E>`",
        ));
    };
    Ok(generate(&args, item, &params, ret, key_names_self))
}

fn generate(
    args: &Args,
    item: &ItemFn,
    params: &Params,
    ret: &Type,
    key_names_self: bool,
) -> TokenStream {
    let krate = args
        .krate
        .as_ref()
        .map_or_else(|| quote!(::idem_core), ToTokens::to_token_stream);
    let private = quote!(#krate::__private);
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;

    let name = match &args.name {
        Some(name) => name.to_token_stream(),
        None => {
            let suffix = format!("::{}", sig.ident);
            quote!(::core::concat!(::core::module_path!(), #suffix))
        }
    };
    let duration = |value: Option<std::time::Duration>, default_secs: u64| {
        let value = value.unwrap_or(std::time::Duration::from_secs(default_secs));
        let (secs, nanos) = (value.as_secs(), value.subsec_nanos());
        quote!(#private::Duration::new(#secs, #nanos))
    };
    let ttl = duration(args.ttl, 24 * 60 * 60);
    let wait = duration(args.wait, 60);
    let lease = duration(args.lease, 30);
    let in_flight = if args.in_flight_reject {
        quote!(#private::InFlight::Reject)
    } else {
        quote!(#private::InFlight::Wait)
    };

    // Where the function is (its enclosing fns, impl, trait) and the generic arguments it
    // runs with, from `type_name` of a closure and a local fn item in its body (see
    // `idem_core`'s `namespace.rs`). Without `name`, a plain free fn keeps the namespace
    // `module_path!()::fn_name` alone.
    let default_name = if args.name.is_none() {
        let suffix = format!("::{}", sig.ident.unraw());
        quote!(::core::option::Option::Some(
            ::core::concat!(::core::module_path!(), #suffix)
        ))
    } else {
        quote!(::core::option::Option::None)
    };
    let site = quote!(#private::Site::new(&|| (), &__idem_site, #default_name));

    // Every argument not skipped is fingerprinted (`self` only when the key names it),
    // unless `fingerprint = ".."` chooses what is.
    let mut arguments = Vec::new();
    if let Some(span) = params.receiver
        && key_names_self
        && !args.skip.iter().any(|s| s == "self")
    {
        let this = Ident::new("self", span);
        let arg = respan(quote!(#private::arg), span);
        arguments.push(quote_spanned!(span=> #arg(&#this)));
    }
    for ident in &params.named {
        // The transaction's connection is a handle, never part of the key or fingerprint.
        if !args.skip.contains(ident) && args.transaction.as_ref() != Some(ident) {
            let arg = respan(quote!(#private::arg), ident.span());
            arguments.push(quote_spanned!(ident.span()=> #arg(&#ident)));
        }
    }
    let arguments = quote!((#(#arguments,)*));
    let checked = |expr: &KeyExpr| {
        let KeyExpr { lit, expr } = expr;
        let arg = respan(quote!(#private::arg), lit.span());
        quote_spanned!(lit.span()=> #arg(&(#expr)))
    };
    let key = match (&args.key, &args.fingerprint) {
        (Some(key), _) => {
            let key = checked(key);
            quote!(::core::option::Option::Some(#key))
        }
        // Without `key`, the key is derived from the fingerprint of the arguments.
        (None, None) => quote!(::core::option::Option::None::<&()>),
        // The key is still every argument not skipped; only the fingerprint is chosen.
        (None, Some(_)) => quote!(::core::option::Option::Some(&#arguments)),
    };
    let fingerprint = args.fingerprint.as_ref().map_or(arguments, checked);

    let store = match &args.store {
        Some(expr) => {
            let private = respan(private.clone(), expr.span());
            quote_spanned!(expr.span()=> #private::custom_store(&(#expr)))
        }
        None => quote!(#private::default_store()),
    };
    // `run` checks the return type (its bounds are the `__private` check traits), so its
    // path is spanned on the return type: a failed check points there.
    let ret_span = ret.span();
    let private_at_ret = respan(private.clone(), ret_span);
    let errors = if args.cache_errors {
        quote_spanned!(ret_span=> #private_at_ret::errors_cached())
    } else {
        quote_spanned!(ret_span=> #private_at_ret::errors_released())
    };
    let ret_at_ret = respan(ret.to_token_stream(), ret_span);
    let run = if args.detach {
        quote_spanned!(ret_span=> #private_at_ret::run_detached::<#ret_at_ret, _, _, _>)
    } else {
        quote_spanned!(ret_span=> #private_at_ret::run::<#ret_at_ret, _, _, _>)
    };
    let body = quote! {
        async move {
            #[allow(clippy::let_and_return, clippy::needless_return)]
            let __idem_return: #ret = #block;
            __idem_return
        }
    };

    let call = match &args.transaction {
        None => quote_spanned! {ret_span=>
            #run(&__IDEM_SPEC, #store, __idem_ids, #errors, #body).await
        },
        Some(tx) => transaction_call(args, &private, ret, tx, block),
    };

    // Inner attributes of the body (`#![allow(..)]`) stay inside the function.
    let (inner, outer): (Vec<_>, Vec<_>) = attrs
        .iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            // Named as `idem_core`'s `namespace.rs` expects (`ITEM_SUFFIX`, its fast path).
            fn __idem_site() {}
            static __IDEM_SPEC: #private::Spec = #private::Spec {
                name: #name,
                ttl: #ttl,
                lease: #lease,
                wait: #wait,
                in_flight: #in_flight,
            };
            let __idem_ids = #private::derive(
                &__IDEM_SPEC,
                #site,
                #key,
                #fingerprint,
            );
            #call
        }
    }
}

/// `transaction = "tx"` must name a parameter whose type is a `&mut` reference (the
/// `&mut sqlx::PgConnection` the body runs its statements on), and excludes `detach`
/// (the connection is borrowed from the caller).
fn check_transaction(errors: &mut Errors, args: &Args, sig: &syn::Signature, tx: &Ident) {
    let param = sig.inputs.iter().find_map(|input| match input {
        FnArg::Typed(typed) => match &*typed.pat {
            Pat::Ident(pat) if pat.ident == *tx => Some(&*typed.ty),
            _ => None,
        },
        FnArg::Receiver(_) => None,
    });
    match param {
        None => errors.push_at(
            tx.span(),
            format!(
                "`transaction`: `{}` has no parameter named `{tx}`; name its `&mut sqlx::PgConnection` parameter",
                sig.ident
            ),
        ),
        Some(Type::Reference(reference)) if reference.mutability.is_some() => {}
        Some(other) => errors.push(syn::Error::new_spanned(
            other,
            format!(
                "`transaction = \"{tx}\"` must name a `&mut sqlx::PgConnection` parameter (for a `sqlx::Transaction`, pass `&mut *tx`)"
            ),
        )),
    }
    if args.detach {
        errors.push_at(
            tx.span(),
            "`transaction` cannot be combined with `detach`: the connection is borrowed from the caller",
        );
    }
}

/// The call of transaction mode: claim through the caller's connection, run the body with
/// a reborrow of it, then write the outcome through it.
fn transaction_call(
    args: &Args,
    private: &TokenStream,
    ret: &Type,
    tx: &Ident,
    block: &syn::Block,
) -> TokenStream {
    let ret_span = ret.span();
    let private_at_ret = respan(private.clone(), ret_span);
    let pg = quote!(#private::postgres);
    let store = match &args.store {
        Some(expr) => {
            let private = respan(private.clone(), expr.span());
            quote_spanned!(expr.span()=> #private::custom_store(&(#expr)).map(::core::option::Option::Some))
        }
        None => quote!(#pg::installed_store()),
    };
    let errors = if args.cache_errors {
        quote_spanned!(ret_span=> #private_at_ret::errors_cached())
    } else {
        quote!(#private::errors_released())
    };
    let ret_at_ret = respan(ret.to_token_stream(), ret_span);
    let begin = quote_spanned!(ret_span=> #private_at_ret::postgres::begin::<#ret_at_ret, _, _>);
    let finish = quote_spanned!(ret_span=> #private_at_ret::postgres::finish::<#ret_at_ret, _, _>);
    // The parameter's own name, spanned at the parameter's use in the attribute.
    let conn = Ident::new(&tx.to_string(), tx.span());
    quote! {
        match #begin(&__IDEM_SPEC, #store, __idem_ids, #errors, &mut *#conn).await {
            #pg::Begin::Done(__idem_return) => __idem_return,
            #pg::Begin::Run(mut __idem_claim) => {
                let __idem_return: #ret = {
                    // A reborrow, moved into the body and ended with it, so the connection
                    // is the caller's again to write the outcome.
                    #[allow(unused_variables)]
                    let #conn = &mut *#conn;
                    #pg::scope(&mut __idem_claim, async move {
                        #[allow(clippy::let_and_return, clippy::needless_return)]
                        let __idem_return: #ret = #block;
                        __idem_return
                    })
                    .await
                };
                #finish(__idem_claim, &mut *#conn, __idem_return).await
            }
        }
    }
}

/// Whether a type's tokens hold a `&mut` (or `&'a mut`), generic arguments included.
fn has_mut_reference(tokens: TokenStream) -> bool {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    trees.iter().enumerate().any(|(i, tree)| match tree {
        TokenTree::Punct(amp) if amp.as_char() == '&' => {
            // `&mut`, or `&'a mut` (a lifetime is a `'` punct and an ident).
            let next = match trees.get(i + 1) {
                Some(TokenTree::Punct(tick)) if tick.as_char() == '\'' => trees.get(i + 3),
                other => other,
            };
            matches!(next, Some(TokenTree::Ident(ident)) if ident == "mut")
        }
        TokenTree::Group(group) => has_mut_reference(group.stream()),
        _ => false,
    })
}

/// The connection or transaction type named in a parameter's type (`PgConnection`,
/// `Transaction`, `PgTransaction`, `PoolConnection`), if any: the macro sees tokens only,
/// so it goes by the name.
fn connection_type(tokens: TokenStream) -> Option<String> {
    tokens.into_iter().find_map(|tree| match tree {
        TokenTree::Ident(ident) => {
            let name = ident.to_string();
            (name.ends_with("Connection") || name.ends_with("Transaction")).then_some(name)
        }
        TokenTree::Group(group) => connection_type(group.stream()),
        _ => None,
    })
}

/// For a `&mut` connection or transaction: transaction mode first, `skip` second. A bare
/// `skip` also compiles, but the record then goes to a store outside the caller's
/// transaction — the atomicity mistake transaction mode exists to prevent.
fn connection_argument_message(name: &Ident, ty: &str) -> String {
    format!(
        "#[idempotent] cannot put the `&mut {ty}` argument `{name}` in the key or fingerprint; to run the body in this transaction, write `#[idempotent(transaction = \"{name}\")]` (feature `postgres`): the claim, the body's writes and the stored result then commit together or not at all. `skip({name})` compiles too, but keeps the record outside the transaction (a rollback after the body keeps the record, so a retry replays a result whose writes are gone): use it only when the body's writes need not be atomic with the record"
    )
}

fn mut_argument_message(name: &Ident) -> String {
    format!(
        "#[idempotent] cannot put a `&mut` argument in the key or fingerprint: a replay returns the stored result without running the body, so the body's changes to `{name}` would not happen again; `skip({name})` it if its state does not matter to the result, or pass it by value or `&`"
    )
}

/// Every identifier in an expression's tokens (for `key` naming a parameter).
fn mentioned_idents(tokens: TokenStream) -> Vec<Ident> {
    let mut out = Vec::new();
    for tree in tokens {
        match tree {
            TokenTree::Ident(ident) => out.push(ident),
            TokenTree::Group(group) => out.extend(mentioned_idents(group.stream())),
            _ => {}
        }
    }
    out
}
