//! Generic functions: type parameters, `where` clauses, and a generic result type.
#![deny(warnings)]

use idem_core::idempotent;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[idempotent]
async fn store_one<T: Serialize + Send + Sync>(item: T) -> Result<(), MyError> {
    let _ = item;
    Ok(())
}

#[idempotent(key = "id")]
async fn echo<T>(id: u64, items: Vec<T>) -> Result<Vec<T>, MyError>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let _ = id;
    Ok(items)
}

trait Repo {
    fn label(&self) -> String;
}

struct Memory;

impl Repo for Memory {
    fn label(&self) -> String {
        "memory".into()
    }
}

#[idempotent(skip(repo))]
async fn label<R: Repo + Sync>(repo: &R, n: u32) -> Result<String, MyError> {
    Ok(format!("{}-{n}", repo.label()))
}

#[tokio::main(flavor = "current_thread")]
pub async fn main() {
    store_one(5u8).await.unwrap();
    store_one("five").await.unwrap();
    assert_eq!(echo(1, vec![1u32, 2]).await.unwrap(), vec![1, 2]);
    assert_eq!(
        echo(2, vec!["a".to_string()]).await.unwrap(),
        vec!["a".to_string()]
    );
    assert_eq!(label(&Memory, 3).await.unwrap(), "memory-3");
}
