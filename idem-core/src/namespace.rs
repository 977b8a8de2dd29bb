//! A function's namespace: its name and, unless it is a plain free function, where it is
//! defined and the generic arguments it runs with.
//!
//! A proc macro on a function cannot see the `impl`, trait or function around it, so the
//! generated code asks the compiler: `type_name` of a closure in the body prints the
//! function's path *as instantiated* (`<a::Payments as a::Charge>::run`,
//! `a::Repo<u8>::load`, `a::scaled<2>`, `<a::Alpha as a::Make>::create`,
//! `a::outer::{{closure}}::op`), and `type_name` of a local `fn` item prints it *as
//! defined* (`a::Repo<_>::load`, `a::scaled`, `a::Make::create`): local items do not
//! inherit their parent's generics. The two differ exactly when the function runs with
//! generic arguments (its own, its impl's, or a trait's `Self`).

use std::any::type_name;

/// What `type_name` of the closure the generated code writes in the function's async body
/// prints after the function's path: the body's coroutine, then the closure.
const CLOSURE_SUFFIX: &str = "::{{closure}}::{{closure}}";

/// What `type_name` of the local `fn __idem_site() {}` the generated code writes in the
/// function's async body prints after the function's path (idem-macros' `expand.rs` names
/// the item; another name only costs the slower scan).
const ITEM_SUFFIX: &str = "::{{closure}}::__idem_site";

/// Where one call of an `#[idempotent]` function runs.
#[derive(Clone, Copy, Debug)]
pub struct Site {
    /// The function's path with its generic arguments.
    instance: &'static str,
    /// The function's path as defined.
    definition: &'static str,
    /// `module_path!()::fn_name` when the function has no `name = ".."`.
    default_name: Option<&'static str>,
}

impl Site {
    /// `closure` is a closure and `item` a local `fn __idem_site() {}`, both written
    /// directly in the function's (async) body; `default_name` is `module_path!()::fn_name`
    /// unless the attribute gave a `name`.
    #[inline]
    pub fn new<C, F>(closure: &C, item: &F, default_name: Option<&'static str>) -> Site {
        let _ = (closure, item);
        Site {
            instance: function_path(type_name::<C>(), CLOSURE_SUFFIX),
            definition: function_path(type_name::<F>(), ITEM_SUFFIX),
            default_name,
        }
    }

    /// The site of a non-generic function with a `name = ".."`: its namespace is the name
    /// alone (to compute such a function's keys by hand).
    pub const fn named() -> Site {
        Site {
            instance: "",
            definition: "",
            default_name: None,
        }
    }

    /// Whether the function runs with generic arguments.
    #[inline]
    fn is_generic(&self) -> bool {
        self.instance != self.definition
    }

    /// The namespace of the function called `name`: `[name]` for a plain free function
    /// (module path and fn name) and for a non-generic function with an explicit `name`;
    /// otherwise `name` and the instantiated path (default name), or `name` and each generic
    /// argument (explicit name, so moving the function keeps its keys).
    #[inline]
    pub(crate) fn namespace(&self, name: &'static str) -> Namespace {
        match self.default_name {
            Some(default) if self.definition == default && !self.is_generic() => {
                Namespace::One([name])
            }
            Some(_) => Namespace::Two([name, self.instance]),
            None if !self.is_generic() => Namespace::One([name]),
            None => {
                let mut parts = vec![name];
                match generic_arguments(self.instance) {
                    Some(args) if !args.is_empty() => parts.extend(args),
                    // Not parsed (a printing this code does not know): the whole path.
                    _ => parts.push(self.instance),
                }
                Namespace::Many(parts)
            }
        }
    }
}

/// The parts of a namespace, without allocating in the common cases.
pub(crate) enum Namespace {
    One([&'static str; 1]),
    Two([&'static str; 2]),
    Many(Vec<&'static str>),
}

impl Namespace {
    pub(crate) fn parts(&self) -> &[&'static str] {
        match self {
            Namespace::One(parts) => parts,
            Namespace::Two(parts) => parts,
            Namespace::Many(parts) => parts,
        }
    }
}

/// The function's path in the `type_name` of a marker in its async body: `path` without
/// `suffix`, as this compiler prints it (inlined, the comparisons of constant strings fold
/// away: this runs on every call), else without its last two `::` segments (the marker,
/// then the body's coroutine).
#[inline]
fn function_path(path: &'static str, suffix: &str) -> &'static str {
    path.strip_suffix(suffix)
        .unwrap_or_else(|| parent(parent(path)))
}

/// `path` without its last `::` segment.
fn parent(path: &str) -> &str {
    // A byte scan from the end: the last segment is short and holds no `:`.
    let bytes = path.as_bytes();
    match bytes.iter().rposition(|&b| b == b':') {
        Some(i) if i > 0 && bytes[i - 1] == b':' => path.get(..i - 1).unwrap_or(path),
        _ => path,
    }
}

/// The generic arguments printed in a path, in order: every top-level `<..>` group, split
/// at its top-level commas. `a::Svc<u8>::call` gives `["u8"]`; `a::f<u8, 3>` gives
/// `["u8", "3"]`; `<a::Alpha as a::Make>::create` gives `["a::Alpha as a::Make"]`. `None`
/// if the brackets do not balance.
fn generic_arguments(path: &str) -> Option<Vec<&str>> {
    let bytes = path.as_bytes();
    let mut args = Vec::new();
    // The open brackets (`<`, `(`, `[`), and where the current argument starts.
    let mut open = Vec::new();
    let mut start = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            // A `char` const argument: skip it whole (`'<'`, `'\''`).
            b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            // `->` of a fn pointer or `Fn` bound is not a bracket.
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            open_bracket @ (b'<' | b'(' | b'[') => {
                if open.is_empty() {
                    start = i + 1;
                }
                open.push(open_bracket);
            }
            b'>' | b')' | b']' => {
                let opened = open.pop()?;
                if open.is_empty() && opened == b'<' {
                    args.push(path.get(start..i)?.trim());
                }
            }
            b',' if open.as_slice() == b"<" => {
                args.push(path.get(start..i)?.trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    open.is_empty().then_some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_of_printed_paths() {
        let cases: [(&str, &[&str]); 9] = [
            ("a::f", &[]),
            ("a::Svc<u8>::call", &["u8"]),
            (
                "a::f<u8, alloc::string::String>",
                &["u8", "alloc::string::String"],
            ),
            ("a::scaled<-3>", &["-3"]),
            ("<a::Alpha as a::Make>::create", &["a::Alpha as a::Make"]),
            (
                "<alloc::vec::Vec<(u8, i8)> as a::Tr>::go<[u8; 2]>",
                &["alloc::vec::Vec<(u8, i8)> as a::Tr", "[u8; 2]"],
            ),
            ("a::f<fn(u8) -> u8, bool>", &["fn(u8) -> u8", "bool"]),
            ("a::f<'<', ','>", &["'<'", "','"]),
            ("a::f<a::main::{{closure}}>", &["a::main::{{closure}}"]),
        ];
        for (path, expected) in cases {
            assert_eq!(generic_arguments(path).as_deref(), Some(expected), "{path}");
        }
        assert_eq!(generic_arguments("a::f<u8"), None);
        assert_eq!(generic_arguments("a::f>u8"), None);
    }

    fn site<C, F>(closure: &C, item: &F, default_name: Option<&'static str>) -> Site {
        // The suffixes of the fast path are what this compiler prints (else every call
        // would take the slower scan, with the same result).
        assert!(
            type_name::<C>().ends_with(CLOSURE_SUFFIX),
            "{}",
            type_name::<C>()
        );
        assert!(
            type_name::<F>().ends_with(ITEM_SUFFIX),
            "{}",
            type_name::<F>()
        );
        let site = Site::new(closure, item, default_name);
        assert_eq!(site.instance, parent(parent(type_name::<C>())));
        assert_eq!(site.definition, parent(parent(type_name::<F>())));
        site
    }

    // The paths `type_name` prints here, checked against this compiler (the namespaces
    // depend on them; a change would show here first).
    mod m {
        pub struct Repo<T>(pub T);

        impl<T> Repo<T> {
            pub async fn load() -> super::Site {
                fn __idem_site() {}
                super::site(&|| (), &__idem_site, Some("x"))
            }
        }

        pub async fn plain() -> super::Site {
            fn __idem_site() {}
            super::site(
                &|| (),
                &__idem_site,
                Some(concat!(module_path!(), "::plain")),
            )
        }

        pub async fn scaled<const N: u8>() -> super::Site {
            fn __idem_site() {}
            super::site(&|| (), &__idem_site, None)
        }
    }

    fn now<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => unreachable!("the markers do not await"),
        }
    }

    #[test]
    fn printed_paths() {
        let plain = now(m::plain());
        assert_eq!(plain.instance, "idem_core::namespace::tests::m::plain");
        assert_eq!(plain.namespace("n").parts(), ["n"]);

        let repo = now(m::Repo::<u8>::load());
        assert_eq!(
            repo.instance,
            "idem_core::namespace::tests::m::Repo<u8>::load"
        );
        assert_eq!(
            repo.definition,
            "idem_core::namespace::tests::m::Repo<_>::load"
        );
        assert_eq!(
            repo.namespace("n").parts(),
            ["n", "idem_core::namespace::tests::m::Repo<u8>::load"]
        );

        let scaled = now(m::scaled::<7>());
        assert_eq!(scaled.instance, "idem_core::namespace::tests::m::scaled<7>");
        assert_eq!(scaled.definition, "idem_core::namespace::tests::m::scaled");
        assert_eq!(scaled.namespace("n").parts(), ["n", "7"]);
    }
}
