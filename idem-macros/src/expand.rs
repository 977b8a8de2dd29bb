//! Checks the function against the options and generates the thin call into
//! `idem_core::__private`.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use crate::attr::{Args, Errors};

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

pub(crate) fn expand(args: Args, item: &ItemFn) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let sig = &item.sig;

    if sig.asyncness.is_none() {
        errors.push_at(sig.fn_token.span, "#[idempotent] requires an `async fn`");
    }
    let ret = match &sig.output {
        ReturnType::Type(_, ty) if is_result(ty) => Some(ty.as_ref()),
        ReturnType::Type(_, ty) => {
            errors.push(syn::Error::new_spanned(
                ty,
                "#[idempotent] functions must return `Result<T, E>` (`T` is stored and replayed; an `Err` releases the key)",
            ));
            None
        }
        ReturnType::Default => {
            errors.push_at(
                sig.paren_token.span.close(),
                "#[idempotent] functions must return `Result<T, E>`",
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
                Pat::Ident(pat) if pat.subpat.is_none() => params.named.push(pat.ident.clone()),
                other => errors.push(syn::Error::new_spanned(
                    other,
                    "#[idempotent] needs a plain name for each argument; destructure it in the body",
                )),
            },
        }
    }

    for skipped in &args.skip {
        if !params.contains(skipped) {
            errors.push(syn::Error::new_spanned(
                skipped,
                format!("`skip`: `{}` has no parameter named `{skipped}`", sig.ident),
            ));
        }
    }

    let key_names_self = args.key.as_ref().is_some_and(|key| {
        let mentioned = mentioned_idents(key.expr.to_token_stream());
        if !mentioned.iter().any(|ident| params.contains(ident)) {
            errors.push(syn::Error::new(
                key.lit.span(),
                format!(
                    "`key` must use an argument of `{}`; it names none of its parameters",
                    sig.ident
                ),
            ));
        }
        mentioned.iter().any(|ident| ident == "self")
    });

    errors.finish()?;
    let Some(ret) = ret else {
        // Unreachable: a missing `Result` was reported above. Kept as an error, not a panic.
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
    let cache_errors = args.cache_errors;

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

    // Every argument not skipped is fingerprinted (`self` only when the key names it).
    let mut fingerprinted = Vec::new();
    if let Some(span) = params.receiver
        && key_names_self
        && !args.skip.iter().any(|s| s == "self")
    {
        let this = Ident::new("self", span);
        let arg = respan(quote!(#private::arg), span);
        fingerprinted.push(quote_spanned!(span=> #arg(&#this)));
    }
    for ident in &params.named {
        if !args.skip.contains(ident) {
            let arg = respan(quote!(#private::arg), ident.span());
            fingerprinted.push(quote_spanned!(ident.span()=> #arg(&#ident)));
        }
    }
    let key = match &args.key {
        Some(key) => {
            let expr = &key.expr;
            let arg = respan(quote!(#private::arg), key.lit.span());
            quote_spanned!(key.lit.span()=> ::core::option::Option::Some(#arg(&(#expr))))
        }
        None => quote!(::core::option::Option::None::<&()>),
    };

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
        quote!(#private::errors_released())
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

    let call = quote_spanned! {ret_span=>
        #run(&__IDEM_SPEC, #store, __idem_ids, #errors, #body).await
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            fn __idem_site() {}
            static __IDEM_SPEC: #private::Spec = #private::Spec {
                name: #name,
                ttl: #ttl,
                lease: #lease,
                wait: #wait,
                in_flight: #in_flight,
                cache_errors: #cache_errors,
            };
            let __idem_ids = #private::derive(
                &__IDEM_SPEC,
                #site,
                #key,
                (#(#fingerprinted,)*),
            );
            #call
        }
    }
}

/// Whether `ty` looks like a `Result<T, E>` (`Result`, `io::Result<T>`, `anyhow::Result<T>`).
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident.to_string().ends_with("Result")),
        Type::Group(group) => is_result(&group.elem),
        Type::Paren(paren) => is_result(&paren.elem),
        _ => false,
    }
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

/// `tokens` with every span set to `span`, so that an error in a generated call points at
/// the user's token it stands for (its path included, not only its arguments).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|tree| match tree {
            TokenTree::Group(group) => {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                TokenTree::Group(respanned)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}
