//! A skipped `&mut` argument (a connection, a transaction) is allowed, as is a `mut`
//! binding of an owned argument and a `&mut self` method whose key does not name `self`.
#![deny(warnings)]

use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

struct Conn {
    queries: u64,
}

#[idempotent(skip(conn))]
async fn charge(conn: &mut Conn, id: u64, mut note: String) -> Result<String, MyError> {
    conn.queries += 1;
    note.push('!');
    Ok(format!("{id}{note}"))
}

struct Worker {
    runs: u64,
}

impl Worker {
    #[idempotent(key = "id")]
    async fn run(&mut self, id: u64) -> Result<u64, MyError> {
        self.runs += 1;
        Ok(id)
    }
}

#[tokio::main(flavor = "current_thread")]
pub async fn main() {
    let mut conn = Conn { queries: 0 };
    assert_eq!(charge(&mut conn, 1, "hi".into()).await.unwrap(), "1hi!");
    let mut worker = Worker { runs: 0 };
    assert_eq!(worker.run(2).await.unwrap(), 2);
    assert_eq!(worker.runs, 1);
}
