//! The NATS JetStream server of the consumer tests.

/// The address of the NATS server the tests use: `NATS_URL`, else `127.0.0.1:4222`.
pub fn nats_url() -> String {
    std::env::var("NATS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:4222".to_string())
}

/// The address if the server answers; otherwise the test is skipped (a note and a line in
/// the run's summary), or with `CI=true` it fails: [`crate::skips`].
pub fn shared_nats() -> Option<String> {
    let url = nats_url();
    // `nats://host:port` or `host:port`.
    let authority = url.rsplit("://").next().unwrap_or(&url);
    let authority = authority
        .rsplit('@')
        .next()
        .unwrap_or(authority)
        .to_string();
    if std::net::TcpStream::connect(&authority).is_err() {
        crate::skips::skip(&format!("NATS is not reachable at {authority} (NATS_URL)"));
        return None;
    }
    Some(url)
}
