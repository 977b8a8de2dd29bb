//! Connection URLs without their secrets, for messages and `Debug` (the Redis and
//! PostgreSQL builders share it).

use url::Url;

/// What is shown for a string that is not a URL with an authority (`scheme://..`): it may
/// hold a password in a form the parser did not recognise (`user:secret@host` parses as
/// scheme `user` and an opaque path), so none of it is shown.
const UNPARSABLE: &str = "<unparsable url>";

/// Query parameters whose value is a password: `password` (PostgreSQL), `pass` (a Redis
/// unix socket URL).
const SECRET_PARAMS: [&str; 2] = ["password", "pass"];

/// `url` with its user and password replaced by `***`, and the value of each password
/// query parameter too.
pub(crate) fn redact_url(url: &str) -> String {
    let mut parsed = match Url::parse(url) {
        Ok(parsed) if parsed.has_authority() => parsed,
        _ => return UNPARSABLE.to_string(),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Refused only by a URL that cannot hold credentials (no host); were any left,
        // nothing is shown.
        if parsed.set_password(None).is_err() || parsed.set_username("***").is_err() {
            return UNPARSABLE.to_string();
        }
    }
    if parsed
        .query_pairs()
        .any(|(name, _)| SECRET_PARAMS.contains(&&*name))
    {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if SECRET_PARAMS.contains(&&*name) {
                    "***".to_string()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_are_replaced_and_the_rest_is_kept() {
        for (url, shown) in [
            ("redis://user:secret@host:6379/0", "redis://***@host:6379/0"),
            ("redis://:secret@h", "redis://***@h"),
            ("redis://user@h:6379", "redis://***@h:6379"),
            ("redis://host:6379/2", "redis://host:6379/2"),
            (
                "rediss://default:s3cr3t@cache.example.com:6380",
                "rediss://***@cache.example.com:6380",
            ),
            ("redis+unix:///tmp/r.sock", "redis+unix:///tmp/r.sock"),
            (
                "redis+unix:///tmp/r.sock?db=1&pass=secret",
                "redis+unix:///tmp/r.sock?db=1&pass=***",
            ),
            (
                "postgres://user:secret@host:5432/db",
                "postgres://***@host:5432/db",
            ),
            ("postgres://host/db", "postgres://host/db"),
            (
                "postgres:///db?host=/run/postgresql&password=secret",
                "postgres:///db?host=%2Frun%2Fpostgresql&password=***",
            ),
            ("postgres://u:p%40ss@h/db", "postgres://***@h/db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn an_unparsable_string_is_not_shown() {
        for url in [
            "user:secret@host:6379",
            "host=db password=secret",
            "redis://user:secret@[::1",
            "redis:user:secret@host",
            "redis+unix://user:secret@/tmp/r.sock",
            "",
        ] {
            assert_eq!(redact_url(url), "<unparsable url>", "{url}");
        }
    }
}
