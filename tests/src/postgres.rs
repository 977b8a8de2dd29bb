//! Helpers of the PostgreSQL tests: the shared server on this machine, a table per test.

use std::sync::atomic::{AtomicU32, Ordering};

/// The URL of the PostgreSQL the tests use: `IDEM_TEST_DATABASE_URL`, else the server on
/// this machine (`postgres://postgres@127.0.0.1:5432/test`).
pub fn database_url() -> String {
    std::env::var("IDEM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// The URL if the server answers. With `CI=true` an unreachable server panics, so CI
/// never silently skips the PostgreSQL tests; otherwise the test is skipped (a note, and a
/// line in the run's summary: [`crate::skips`]).
pub fn shared_postgres() -> Option<String> {
    let url = database_url();
    let authority = authority(&url);
    let reachable = std::net::TcpStream::connect(&authority).is_ok();
    if !reachable {
        crate::skips::skip(&format!(
            "PostgreSQL is not reachable at {authority} (IDEM_TEST_DATABASE_URL)"
        ));
        return None;
    }
    Some(url)
}

/// A table name unique to this run and test (`idem_t_{name}_{pid}_{seq}_{time}`).
pub fn unique_table(name: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        % 1_000_000_000_000;
    format!(
        "idem_t_{name}_{}_{}_{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops a test's table and its claim function (best effort; errors are ignored).
pub async fn drop_table(pool: &sqlx::PgPool, table: &str) {
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS \"{table}\"; DROP FUNCTION IF EXISTS \"{table}_claim\";"
    )))
    .execute(pool)
    .await;
}

/// Counts the statements sqlx sends (its `sqlx::query` events, one per statement executed
/// on a connection), while installed as the thread's default subscriber: run the counted
/// code on a current-thread runtime.
#[derive(Clone, Default)]
pub struct StatementCounter(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl StatementCounter {
    /// The statements seen so far (their SQL, trimmed), and clears the list.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Collects an event's `summary` field (the statement's first words).
struct StatementField<'a>(&'a mut Option<String>);

impl tracing::field::Visit for StatementField<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "summary" {
            *self.0 = Some(value.trim().to_string());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            *self.0 = Some(format!("{value:?}"));
        }
    }
}

impl tracing::Subscriber for StatementCounter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "sqlx::query"
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == "sqlx::query" {
            let mut statement = None;
            event.record(&mut StatementField(&mut statement));
            self.0
                .lock()
                .unwrap()
                .push(statement.unwrap_or_else(|| "?".to_string()));
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// A TCP forwarder on a loopback port to the PostgreSQL server, which a test can stop
/// (closing every forwarded connection, so the port refuses) and start again on the same
/// port: the shared server itself is never touched.
pub struct Proxy {
    port: u16,
    upstream: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding a free loopback port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Proxy {
            port,
            upstream: upstream.to_string(),
            task: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let upstream = self.upstream.clone();
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            // Dropping this task (stop) drops the JoinSet, which aborts every connection.
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// The forwarded port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes the listener and every forwarded connection: the port now refuses.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same port again.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `host:port` of a `postgres://` URL.
pub fn authority(url: &str) -> String {
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .map(|auth| auth.rsplit('@').next().unwrap_or(auth).to_string())
        .unwrap_or_default()
}

/// `url` with its host and port replaced by `127.0.0.1:{port}`.
pub fn with_port(url: &str, port: u16) -> String {
    let authority = authority(url);
    url.replacen(&authority, &format!("127.0.0.1:{port}"), 1)
}
