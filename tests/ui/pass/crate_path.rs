//! `crate = "path"`: the generated code names the runtime through the given path. The
//! `rt` module re-exports idem_core but shadows `__private::errors_released` (called once
//! per call of a function without `cache_errors`) with a counting wrapper,
//! so `main` can tell that the override was really used.
#![deny(warnings)]

use std::sync::atomic::Ordering;

mod rt {
    pub use idem_core::*;

    pub mod __private {
        pub use idem_core::__private::*;

        pub static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

        // Shadows the glob-imported `errors_released`.
        pub fn errors_released<E>() -> ErrCodec<E> {
            CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            idem_core::__private::errors_released()
        }
    }
}

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[rt::idempotent(crate = "crate::rt")]
async fn through_module(a: u32, b: u32) -> Result<u32, MyError> {
    Ok(a + b)
}

mod nested {
    // A path relative to this module.
    #[idem_core::idempotent(crate = "super::rt", key = "id")]
    pub async fn relative(id: u32) -> Result<u32, super::MyError> {
        Ok(id)
    }
}

#[idem_core::idempotent(crate = "::idem_core")]
async fn absolute(a: u32) -> Result<u32, MyError> {
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(through_module(1, 2).await.unwrap(), 3);
    assert_eq!(rt::__private::CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(nested::relative(4).await.unwrap(), 4);
    assert_eq!(rt::__private::CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(absolute(5).await.unwrap(), 5);
    assert_eq!(rt::__private::CALLS.load(Ordering::SeqCst), 2);
}
