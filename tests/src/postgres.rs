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

/// A private PostgreSQL cluster (`initdb` + `pg_ctl`) on a free loopback port, in a temp
/// directory, for the tests that restart the server: the shared server is never touched.
/// Stopped (immediately) and removed on drop.
pub struct PrivateCluster {
    dir: std::path::PathBuf,
    port: u16,
}

impl PrivateCluster {
    /// Creates and starts a cluster. Without `initdb` on the PATH the test is skipped
    /// (with a note), except under `CI=true`, where it panics.
    pub fn start(name: &str) -> Option<PrivateCluster> {
        let found = std::process::Command::new("initdb")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!(
                    "initdb is not on the PATH, and CI=true: the PostgreSQL restart tests must run"
                );
            }
            eprintln!("skipped: initdb is not on the PATH");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        let dir = std::env::temp_dir().join(unique_table(name));
        std::fs::create_dir_all(&dir).expect("the cluster's directory");
        let cluster = PrivateCluster { dir, port };
        if as_root() {
            // initdb refuses to run as root: the cluster belongs to `postgres`.
            cluster.run(
                "chown",
                &["-R", "postgres:", cluster.dir.to_str().unwrap()],
                false,
            );
        }
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            true,
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            cluster.dir.display()
        );
        let log = cluster.log();
        cluster.run(
            "pg_ctl",
            &[
                "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
            ],
            true,
        );
        Some(cluster)
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every connection gets FATAL 57P01 and is closed; returns
    /// when the server accepts connections again.
    pub fn restart_fast(&self) {
        let (data, log) = (self.data(), self.log());
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-m", "fast", "-w", "-t", "60", "restart",
            ],
            true,
        );
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// The server's log (`pg_ctl -l`), so the server never writes to the test's pipes.
    fn log(&self) -> String {
        self.dir.join("log").display().to_string()
    }

    /// Runs a PostgreSQL tool (as `postgres` when this process is root), bounded by the
    /// tool's own `-t` or its quick exit; panics on failure. Its output goes to a file: a
    /// server `pg_ctl` starts would hold a pipe open for as long as it runs.
    fn run(&self, tool: &str, args: &[&str], as_postgres: bool) {
        let mut command = if as_postgres && as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--", tool]);
            command
        } else {
            std::process::Command::new(tool)
        };
        let output = self.dir.join(format!("{tool}.out"));
        let file = std::fs::File::create(&output).expect("the tool's output file");
        let status = command
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("the tool's output file"))
            .stderr(file)
            .status()
            .unwrap_or_else(|err| panic!("{tool}: {err}"));
        assert!(
            status.success(),
            "{tool} {args:?} failed: {}",
            std::fs::read_to_string(&output).unwrap_or_default()
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data();
        let mut command = if as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--", "pg_ctl"]);
            command
        } else {
            std::process::Command::new("pg_ctl")
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this process runs as root (`id -u` is 0).
fn as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}
