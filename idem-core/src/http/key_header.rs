//! The client's key: the `Idempotency-Key` header, as an RFC 8941 sf-string (what the IETF
//! draft specifies: `"8e03978e-40d5"`) or bare (what Stripe's clients send: `8e03978e-40d5`).
//! Both spellings give the same key.

use std::borrow::Cow;
use std::convert::Infallible;

use http::{HeaderMap, HeaderName};
use sfv::visitor::{Ignored, ItemVisitor, ParameterVisitor, parameter_visitor_with};
use sfv::{BareItemFromInput, Parser};

/// The key header a layer reads unless told otherwise, and the extractor without a layer.
pub(crate) const DEFAULT_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// The longest key accepted, in characters (as Stripe's).
pub(crate) const MAX_KEY_LEN: usize = 255;

/// Why a request's key header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// No key header.
    Missing,
    /// The key header appears more than once.
    Repeated,
    /// The key header is not 1–255 visible ASCII characters, bare or as an sf-string.
    Malformed(&'static str),
}

/// The client's key from `headers`.
pub(crate) fn client_key<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Cow<'a, str>, KeyError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(KeyError::Missing)?;
    if values.next().is_some() {
        return Err(KeyError::Repeated);
    }
    let bytes = value.as_bytes();
    let key = if bytes.first() == Some(&b'"') {
        let parsed = Parser::new(bytes)
            .parse_item_with_visitor(StringItem)
            .map_err(|_| KeyError::Malformed("the key is not a valid RFC 8941 string"))?;
        parsed.ok_or(KeyError::Malformed(
            "the key starts with a quote but is not an RFC 8941 string",
        ))?
    } else {
        // Visible ASCII, checked below; `from_utf8` cannot fail then, but stays an error.
        Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| NOT_VISIBLE)?)
    };
    check(&key)?;
    Ok(key)
}

const NOT_VISIBLE: KeyError =
    KeyError::Malformed("the key must be visible ASCII characters (no spaces or controls)");

fn check(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Malformed("the key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::Malformed("the key is longer than 255 characters"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(NOT_VISIBLE);
    }
    Ok(())
}

/// Takes an sf-string item and ignores its parameters (RFC 8941: unknown parameters are
/// ignored); any other item type gives `None`.
struct StringItem;

impl<'de> ItemVisitor<'de> for StringItem {
    type Out = Option<Cow<'de, str>>;
    type Error = Infallible;

    fn bare_item(
        self,
        bare_item: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = Self::Out>, Self::Error> {
        let out = match bare_item {
            BareItemFromInput::String(Cow::Borrowed(s)) => Some(Cow::Borrowed(s.as_str())),
            BareItemFromInput::String(Cow::Owned(s)) => Some(Cow::Owned(s.as_str().to_owned())),
            _ => None,
        };
        Ok(parameter_visitor_with(Ignored, move |_| Ok(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(values: &[&[u8]]) -> Result<String, KeyError> {
        let mut headers = HeaderMap::new();
        let name = HeaderName::from_static("idempotency-key");
        for value in values {
            headers.append(&name, HeaderValue::from_bytes(value).unwrap());
        }
        client_key(&headers, &name).map(Cow::into_owned)
    }

    #[test]
    fn bare_and_sf_string_are_the_same_key() {
        assert_eq!(parse(&[b"8e03-40d5"]).unwrap(), "8e03-40d5");
        assert_eq!(parse(&[b"\"8e03-40d5\""]).unwrap(), "8e03-40d5");
        assert_eq!(parse(&[b"\"8e03-40d5\";v=1"]).unwrap(), "8e03-40d5");
        assert_eq!(parse(&[b"\"a\\\"b\""]).unwrap(), "a\"b");
    }

    #[test]
    fn refused_keys() {
        assert_eq!(parse(&[]), Err(KeyError::Missing));
        assert_eq!(parse(&[b"a", b"b"]), Err(KeyError::Repeated));
        for bad in [
            &b""[..],
            b"\"\"",
            b"a b",
            b"\"a b\"",
            b"\"unterminated",
            b"\"a\" trailing",
            b"caf\xc3\xa9",
            b"tab\there",
        ] {
            assert!(
                matches!(parse(&[bad]), Err(KeyError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse(&[&[b'k'; 255]]).is_ok());
        assert!(matches!(
            parse(&[&[b'k'; 256]]),
            Err(KeyError::Malformed(_))
        ));
    }
}
