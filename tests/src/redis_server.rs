//! Real Redis servers for the tests: spawned on free loopback ports, torn down on drop.
//!
//! `IDEM_REDIS_URL` points the non-fault tests at an existing server; fault tests always
//! spawn their own and never touch 127.0.0.1:6379. With `CI=true`, a missing
//! `redis-server` fails the test instead of skipping it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether `redis-server` (and `redis-cli`) can be run. With `CI=true` a missing binary
/// panics, so CI never silently skips the Redis tests.
pub fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        crate::skips::skip("redis-server is not installed (install it to run the Redis tests)");
    }
    found
}

/// A loopback port that is free now (and, with `with_bus`, so is port + 10000).
pub fn free_port(with_bus: bool) -> u16 {
    for _ in 0..200 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local addr").port();
        if port == 6379 || (with_bus && port > 55535) {
            continue;
        }
        if with_bus && TcpListener::bind(("127.0.0.1", port + 10000)).is_err() {
            continue;
        }
        return port;
    }
    panic!("no free loopback port found");
}

fn scratch_dir(port: u16) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "idem-redis-{}-{port}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch dir");
    dir
}

/// One `redis-server` child process on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    cluster: bool,
    /// `--replicaof 127.0.0.1 {port}` when this server starts as a replica.
    replica_of: Option<u16>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn spawn() -> RedisServer {
        Self::spawn_on(free_port(false))
    }

    /// Starts a server on `port` and waits until it answers.
    pub fn spawn_on(port: u16) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            dir: scratch_dir(port),
            cluster: false,
            replica_of: None,
        };
        server.start();
        server
    }

    /// Starts a replica of `primary` on a free port and waits until its link to the
    /// primary is up (`master_link_status:up`).
    pub fn spawn_replica_of(primary: &RedisServer) -> RedisServer {
        let port = free_port(false);
        let mut server = RedisServer {
            child: None,
            port,
            dir: scratch_dir(port),
            cluster: false,
            replica_of: Some(primary.port),
        };
        server.start();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server
            .command(&["INFO", "replication"])
            .is_some_and(|info| info.contains("master_link_status:up"))
        {
            assert!(Instant::now() < deadline, "the replica did not sync");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Starts a cluster-enabled node on `port` (its bus port is port + 10000).
    pub fn spawn_cluster_node(port: u16) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            dir: scratch_dir(port),
            cluster: true,
            replica_of: None,
        };
        server.start();
        server
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // A replica syncs at once (the default waits 5 s for more replicas).
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(self.dir.join("nodes.conf"))
                .args(["--cluster-node-timeout", "5000"]);
        }
        if let Some(primary) = self.replica_of {
            cmd.args(["--replicaof", "127.0.0.1"])
                .arg(primary.to_string());
        }
        self.child = Some(cmd.spawn().expect("spawn redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers `PING`.
    fn answers(&self) -> bool {
        self.command(&["PING"])
            .is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Sends one command (RESP) and returns the raw first reply line(s), or `None`.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = format!("*{}\r\n", args.len());
        for arg in args {
            out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(out.as_bytes()).ok()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if let Some(len) = line.strip_prefix('$') {
            let len: i64 = len.trim().parse().ok()?;
            if len < 0 {
                return Some(line);
            }
            let mut body = vec![0u8; len as usize + 2];
            reader.read_exact(&mut body).ok()?;
            body.truncate(len as usize);
            return Some(String::from_utf8_lossy(&body).into_owned());
        }
        Some(line)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL, then waits until the port refuses).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.shutdown(Shutdown::Both);
            assert!(Instant::now() < deadline, "port {} still open", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal (`"STOP"`, `"CONT"`) to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Starts the server again on the same port (an empty data set).
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// `INFO commandstats` as (command, calls) pairs, e.g. `("evalsha", 3)`.
    pub fn command_calls(&self) -> Vec<(String, u64)> {
        let info = self
            .command(&["INFO", "commandstats"])
            .expect("INFO commandstats");
        info.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect()
    }

    /// Kills (`CLIENT KILL ID`) every connection with client-side caching on (flag `t` in
    /// `CLIENT LIST`); returns how many.
    pub fn kill_tracking_clients(&self) -> usize {
        let list = self.command(&["CLIENT", "LIST"]).unwrap_or_default();
        let ids: Vec<String> = list
            .lines()
            .filter(|line| {
                line.split(' ').any(|field| {
                    field
                        .strip_prefix("flags=")
                        .is_some_and(|f| f.contains('t'))
                })
            })
            .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_string)
            .collect();
        for id in &ids {
            let _ = self.command(&["CLIENT", "KILL", "ID", id]);
        }
        ids.len()
    }

    /// The calls of one command in `INFO commandstats` (0 if never called).
    pub fn calls_of(&self, command: &str) -> u64 {
        self.command_calls()
            .into_iter()
            .find(|(name, _)| name == command)
            .map_or(0, |(_, calls)| calls)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The URL of a Redis for tests that do not injure it: `IDEM_REDIS_URL` when set, else a
/// server spawned for the caller (kept alive by the returned guard). `None` (the test is
/// skipped) when `IDEM_REDIS_URL` does not answer or there is no `redis-server`, and `CI`
/// is not set.
pub fn shared_redis() -> Option<(String, Option<RedisServer>)> {
    if let Ok(url) = std::env::var("IDEM_REDIS_URL")
        && !url.trim().is_empty()
    {
        let mut authority = crate::postgres::authority(&url);
        if !authority.contains(':') {
            authority.push_str(":6379");
        }
        if std::net::TcpStream::connect(&authority).is_err() {
            crate::skips::skip(&format!(
                "Redis is not reachable at {authority} (IDEM_REDIS_URL)"
            ));
            return None;
        }
        return Some((url, None));
    }
    if !redis_available() {
        return None;
    }
    let server = RedisServer::spawn();
    Some((server.url(), Some(server)))
}

/// A local 3-node Redis Cluster (no replicas) on free loopback ports.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes, joins them with `redis-cli --cluster create`,
    /// and waits until the cluster state is `ok` on every node.
    pub fn spawn() -> RedisCluster {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 {
            let port = free_port(true);
            if !ports.contains(&port) && !ports.iter().any(|p| p.abs_diff(port) == 10000) {
                ports.push(port);
            }
        }
        let nodes: Vec<RedisServer> = ports
            .iter()
            .map(|&p| RedisServer::spawn_cluster_node(p))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The cluster node id of node `index` (`CLUSTER MYID`).
    pub fn node_id(&self, index: usize) -> String {
        let reply = self.nodes[index]
            .command(&["CLUSTER", "MYID"])
            .expect("CLUSTER MYID");
        reply
            .lines()
            .find(|l| !l.is_empty() && !l.starts_with('$'))
            .expect("a node id")
            .trim_start_matches('+')
            .trim()
            .to_string()
    }

    /// Starts moving `slots` slots from node `from` to node `to` with `redis-cli --cluster
    /// reshard` (a routine online migration: keys move with `MIGRATE`, clients meanwhile get
    /// `ASK` and then `MOVED`). Returns the running `redis-cli`.
    pub fn start_reshard(&self, from: usize, to: usize, slots: u32) -> Child {
        Command::new("redis-cli")
            .arg("--cluster")
            .arg("reshard")
            .arg(format!("127.0.0.1:{}", self.nodes[from].port()))
            .args(["--cluster-from", &self.node_id(from)])
            .args(["--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &slots.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-cli --cluster reshard")
    }
}

/// A worker process whose stdout lines are collected with the instant each arrived.
pub struct Worker {
    child: Child,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl Worker {
    /// Starts `program` with `args`, stdin piped (for [`Worker::go`]), stdout collected.
    pub fn spawn(program: &str, args: &[String]) -> Worker {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a worker");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Worker {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `timeout`) for a line starting with `prefix`; returns it and when it
    /// arrived.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Option<(Instant, String)> {
        if let Some(found) = self.seen.iter().find(|(_, l)| l.starts_with(prefix)) {
            return Some(found.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (at, line) = self.lines.recv_timeout(left).ok()?;
            self.seen.push((at, line.clone()));
            if line.starts_with(prefix) {
                return Some((at, line));
            }
        }
    }

    /// Whether a line starting with `prefix` arrived so far (without waiting).
    pub fn has_line(&mut self, prefix: &str) -> bool {
        while let Ok(entry) = self.lines.try_recv() {
            self.seen.push(entry);
        }
        self.seen.iter().any(|(_, l)| l.starts_with(prefix))
    }

    /// Sends one line to the worker's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("write a line");
        stdin.flush().expect("flush a line");
    }

    /// The next line not read yet (at most `timeout`), and when it arrived.
    pub fn next_line(&mut self, timeout: Duration) -> Option<(Instant, String)> {
        let (at, line) = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push((at, line.clone()));
        Some((at, line))
    }

    /// Tells a worker waiting on stdin to start.
    pub fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"GO\n").expect("write GO");
        stdin.flush().expect("flush GO");
    }

    /// Sends a signal (`"KILL"`, `"STOP"`, `"CONT"`) to the worker.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (at most `timeout`) for the worker to exit and returns all its lines.
    pub fn finish(mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(
                    status.success() || status.code().is_none(),
                    "worker failed: {status}"
                );
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "worker did not finish within {timeout:?}; lines: {:?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The reader thread ends at EOF.
        while let Ok(entry) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(entry);
        }
        std::mem::take(&mut self.seen)
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of an execution log (one line per body run), or none if it does not exist.
pub fn read_log(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A fresh path for an execution log in the temp dir.
pub fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("idem-log-{}", unique(name)))
}

/// A unique id for a test's keys, so tests sharing one server never meet.
pub fn unique(name: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    )
}

/// Starts the `idem_redis_worker` binary at `program` (see its docs for the protocol).
#[allow(clippy::too_many_arguments)]
pub fn spawn_worker(
    program: &str,
    url: &str,
    order: &str,
    amount: u64,
    callers: usize,
    body_ms: u64,
    log: &std::path::Path,
    wait_go: bool,
) -> Worker {
    let mut args = vec![
        "--url".to_string(),
        url.to_string(),
        "--order".to_string(),
        order.to_string(),
        "--amount".to_string(),
        amount.to_string(),
        "--callers".to_string(),
        callers.to_string(),
        "--body-ms".to_string(),
        body_ms.to_string(),
        "--log".to_string(),
        log.display().to_string(),
    ];
    if wait_go {
        args.push("--wait-go".to_string());
    }
    Worker::spawn(program, &args)
}

/// The charge ids of the `OK` lines.
pub fn receipts(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("OK "))
        .map(|rest| rest.split(' ').next().unwrap().to_string())
        .collect()
}

const LONG: Duration = Duration::from_secs(30);

/// Runs `processes` workers × `callers` callers on one key, released together; checks one
/// execution and one result; then a process started later replays it.
pub fn burst_across_processes(program: &str, url: &str, processes: usize, callers: usize) {
    let order = unique("burst");
    let log = log_path("burst");
    let mut workers: Vec<Worker> = (0..processes)
        .map(|_| spawn_worker(program, url, &order, 100, callers, 300, &log, true))
        .collect();
    for w in &mut workers {
        w.wait_line("READY", LONG).expect("worker ready");
    }
    for w in &mut workers {
        w.go();
    }
    let mut all = Vec::new();
    for w in workers {
        let lines = w.finish(LONG);
        assert!(!lines.iter().any(|l| l.starts_with("ERR")), "{lines:?}");
        all.extend(receipts(&lines));
    }
    let executions = read_log(&log);
    println!(
        "{processes} processes x {callers} callers: {} execution(s), {} results",
        executions.len(),
        all.len()
    );
    assert_eq!(executions.len(), 1, "{executions:?}");
    assert_eq!(all.len(), processes * callers);
    assert!(
        all.iter().all(|r| *r == all[0]),
        "every caller got the same result"
    );
    assert!(executions[0].ends_with(&all[0]));

    let later = spawn_worker(program, url, &order, 100, 1, 300, &log, false).finish(LONG);
    assert_eq!(
        receipts(&later),
        vec![all[0].clone()],
        "a later process replays"
    );
    assert_eq!(read_log(&log).len(), 1);
    let _ = std::fs::remove_file(&log);
}
