//! No key confusion (guarantee 10): functions that differ only in where they are defined or
//! in the generic arguments they run with never share a key, so one never replays another's
//! result. Each test calls two such functions with the same arguments and checks that the
//! second one ran its own body.

use idem_core::idempotent;
use tests::TestError;

// Two traits' methods of one name on one type, and an inherent method beside them.
mod traits {
    use super::*;

    pub struct Payments;

    pub trait Charge {
        async fn run(&self, order: u64) -> Result<String, TestError>;
    }

    pub trait Refund {
        async fn run(&self, order: u64) -> Result<String, TestError>;
    }

    impl Charge for Payments {
        #[idempotent]
        async fn run(&self, order: u64) -> Result<String, TestError> {
            Ok(format!("charged {order}"))
        }
    }

    impl Refund for Payments {
        #[idempotent]
        async fn run(&self, order: u64) -> Result<String, TestError> {
            Ok(format!("refunded {order}"))
        }
    }

    impl Payments {
        #[idempotent]
        pub async fn run(&self, order: u64) -> Result<String, TestError> {
            Ok(format!("inherent {order}"))
        }
    }
}

#[tokio::test]
async fn two_traits_methods_of_one_name() {
    use traits::{Charge, Payments, Refund};
    let p = Payments;
    assert_eq!(Charge::run(&p, 42).await.unwrap(), "charged 42");
    assert_eq!(Refund::run(&p, 42).await.unwrap(), "refunded 42");
    assert_eq!(p.run(42).await.unwrap(), "inherent 42");
    // And each still replays its own result.
    assert_eq!(Charge::run(&p, 42).await.unwrap(), "charged 42");
}

// Same-named nested fns in different enclosing fns.
mod nested {
    use super::*;

    pub async fn outer_a(x: u64) -> Result<String, TestError> {
        #[idempotent]
        async fn op(x: u64) -> Result<String, TestError> {
            Ok(format!("a {x}"))
        }
        op(x).await
    }

    pub async fn outer_b(x: u64) -> Result<String, TestError> {
        #[idempotent]
        async fn op(x: u64) -> Result<String, TestError> {
            Ok(format!("b {x}"))
        }
        op(x).await
    }
}

#[tokio::test]
async fn nested_fns_in_different_enclosing_fns() {
    assert_eq!(nested::outer_a(7).await.unwrap(), "a 7");
    assert_eq!(nested::outer_b(7).await.unwrap(), "b 7");
}

// Const generics.
#[idempotent]
async fn scaled<const N: u64>(x: u64) -> Result<String, TestError> {
    Ok((x * N).to_string())
}

#[tokio::test]
async fn const_generic_arguments() {
    assert_eq!(scaled::<2>(5).await.unwrap(), "10");
    assert_eq!(scaled::<3>(5).await.unwrap(), "15");
}

// `impl Trait` arguments are anonymous type parameters.
trait Op {
    fn apply(&self, x: u64) -> u64;
}

struct Double;
struct Square;

impl Op for Double {
    fn apply(&self, x: u64) -> u64 {
        x * 2
    }
}

impl Op for Square {
    fn apply(&self, x: u64) -> u64 {
        x * x
    }
}

#[idempotent(skip(op))]
async fn apply(x: u64, op: impl Op + Send + Sync) -> Result<String, TestError> {
    Ok(op.apply(x).to_string())
}

#[tokio::test]
async fn impl_trait_arguments() {
    assert_eq!(apply(3, Double).await.unwrap(), "6");
    assert_eq!(apply(3, Square).await.unwrap(), "9");
}

// An associated fn (no `self`) of a generic impl block.
struct Repo<T>(std::marker::PhantomData<T>);

impl<T> Repo<T> {
    #[idempotent]
    async fn load(id: u64) -> Result<String, TestError> {
        Ok(format!("{id} as {}", std::any::type_name::<T>()))
    }
}

#[tokio::test]
async fn generic_impl_block_associated_fn() {
    assert_eq!(Repo::<u8>::load(1).await.unwrap(), "1 as u8");
    assert_eq!(
        Repo::<String>::load(1).await.unwrap(),
        "1 as alloc::string::String"
    );
}

// `name = ".."` on a method of a generic type keeps the type arguments.
struct Svc<T>(std::marker::PhantomData<T>);

impl<T> Svc<T> {
    #[idempotent(name = "svc.v1")]
    async fn call(&self, id: u64) -> Result<String, TestError> {
        Ok(format!("{id} as {}", std::any::type_name::<T>()))
    }
}

#[idempotent(name = "named_generic.v1")]
async fn named_generic<T: Send>(id: u64) -> Result<String, TestError> {
    Ok(format!("{id} as {}", std::any::type_name::<T>()))
}

#[tokio::test]
async fn name_on_generic_type_or_fn_keeps_type_arguments() {
    let (a, b) = (
        Svc::<u8>(Default::default()),
        Svc::<String>(Default::default()),
    );
    assert_eq!(a.call(1).await.unwrap(), "1 as u8");
    assert_eq!(b.call(1).await.unwrap(), "1 as alloc::string::String");
    assert_eq!(named_generic::<u8>(1).await.unwrap(), "1 as u8");
    assert_eq!(named_generic::<i8>(1).await.unwrap(), "1 as i8");
}

// A trait's default body runs with each implementor as `Self`.
trait Make {
    fn label() -> &'static str;

    #[idempotent]
    async fn create(id: u64) -> Result<String, TestError> {
        Ok(format!("{} {id}", Self::label()))
    }

    #[idempotent(name = "make.named.v1")]
    async fn create_named(id: u64) -> Result<String, TestError> {
        Ok(format!("{} {id}", Self::label()))
    }
}

struct Alpha;
struct Beta;

impl Make for Alpha {
    fn label() -> &'static str {
        "alpha"
    }
}

impl Make for Beta {
    fn label() -> &'static str {
        "beta"
    }
}

#[tokio::test]
async fn trait_default_bodies_per_implementor() {
    assert_eq!(Alpha::create(1).await.unwrap(), "alpha 1");
    assert_eq!(Beta::create(1).await.unwrap(), "beta 1");
    assert_eq!(Alpha::create_named(1).await.unwrap(), "alpha 1");
    assert_eq!(Beta::create_named(1).await.unwrap(), "beta 1");
}

// A method and a generic free fn of one name in one module.
mod mail {
    use super::*;

    pub struct Mailer;

    impl Mailer {
        #[idempotent]
        pub async fn send(&self, id: u64) -> Result<String, TestError> {
            Ok(format!("method {id}"))
        }
    }

    #[idempotent]
    pub async fn send<T>(id: u64) -> Result<String, TestError> {
        Ok(format!("free {id} {}", std::any::type_name::<T>()))
    }
}

#[tokio::test]
async fn method_and_generic_free_fn_of_one_name() {
    use mail::{Mailer, send};
    assert_eq!(Mailer.send(7).await.unwrap(), "method 7");
    assert_eq!(
        send::<Mailer>(7).await.unwrap(),
        "free 7 namespaces::mail::Mailer"
    );
}

// A trait implemented for every `Vec<T>`: `Self` carries the type argument.
trait Describe {
    async fn describe(&self, id: u64) -> Result<String, TestError>;
}

impl<T: Sync> Describe for Vec<T> {
    #[idempotent]
    async fn describe(&self, id: u64) -> Result<String, TestError> {
        Ok(format!("{id} of {}", std::any::type_name::<T>()))
    }
}

#[tokio::test]
async fn generic_trait_impl() {
    assert_eq!(vec![1u8].describe(3).await.unwrap(), "3 of u8");
    assert_eq!(vec![1u16].describe(3).await.unwrap(), "3 of u16");
}

// A module-level fn and a nested fn of the same name in the same module.
#[idempotent]
async fn op(x: u64) -> Result<String, TestError> {
    Ok(format!("top {x}"))
}

async fn wraps_op(x: u64) -> Result<String, TestError> {
    #[idempotent]
    async fn op(x: u64) -> Result<String, TestError> {
        Ok(format!("inner {x}"))
    }
    op(x).await
}

#[tokio::test]
async fn module_fn_and_nested_fn_of_one_name() {
    assert_eq!(op(9).await.unwrap(), "top 9");
    assert_eq!(wraps_op(9).await.unwrap(), "inner 9");
}

// The documented limit: closures have no name of their own, so `type_name` names every
// closure written in one fn alike, and a generic fn called with two closures from one fn
// runs with the same namespace. A skipped closure argument is then not part of the key.
#[idempotent(skip(f))]
async fn with_callback<F: Fn(u64) -> u64 + Send + Sync>(x: u64, f: F) -> Result<u64, TestError> {
    Ok(f(x))
}

#[tokio::test]
async fn closures_of_one_fn_share_a_namespace() {
    assert_eq!(with_callback(4, |x| x + 1).await.unwrap(), 5);
    assert_eq!(with_callback(4, |x| x * 10).await.unwrap(), 5, "replayed");
    // A closure from another fn is another type argument.
    fn other() -> impl Fn(u64) -> u64 + Send + Sync {
        |x| x * 10
    }
    assert_eq!(with_callback(4, other()).await.unwrap(), 40);
}
