//! The row format: what a claim statement returns, read into a [`Claim`], and the
//! columns a record is written as.
//!
//! A row is `(key, version, fingerprint, token, value, expires_at)`: `value` is NULL while
//! the row is a claim (its `expires_at` is the lease deadline) and the encoded outcome
//! once it is a completed record (its `expires_at` is the TTL deadline). `token` is the
//! 16-byte fencing token of the claim that wrote the row; `version` is
//! [`RECORD_VERSION`]. Deadlines are on the database server's clock, so the processes'
//! clocks never have to agree.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{ChangeNotice, Claim, RECORD_VERSION, Record, Token};

/// The version column's value for this layout.
pub(crate) const VERSION: i16 = RECORD_VERSION as i16;

/// The fields of a stored row a claim statement hands back (`None` for SQL NULL).
#[derive(Debug, Default)]
pub(crate) struct Stored {
    pub(crate) version: Option<i16>,
    pub(crate) fingerprint: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
}

/// A token from its 16 stored bytes.
pub(crate) fn token(bytes: &[u8]) -> Result<Token, Error> {
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| {
        Error::codec(format!(
            "the claim's token has {} bytes, expected 16",
            bytes.len()
        ))
    })?;
    Ok(Token::new(u128::from_be_bytes(bytes)))
}

/// The 16 bytes a token is stored as.
pub(crate) fn token_bytes(token: Token) -> [u8; 16] {
    token.get().to_be_bytes()
}

/// A duration in whole milliseconds for SQL (`$n * interval '1 millisecond'`), at least 1.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis())
        .unwrap_or(i64::MAX / 4)
        .clamp(1, i64::MAX / 4)
}

/// A completed row as a [`Claim::Completed`]; rows of another layout, or whose columns do
/// not have this layout's shape, are [`Error::Codec`] (never a silent rerun).
pub(crate) fn completed(row: Stored) -> Result<Claim, Error> {
    let version = row.version.unwrap_or_default();
    if version != VERSION {
        return Err(Error::codec(format!(
            "the stored record has version {version}, this build reads version {RECORD_VERSION}"
        )));
    }
    let fingerprint = row.fingerprint.unwrap_or_default();
    let fingerprint: [u8; 32] = fingerprint.as_slice().try_into().map_err(|_| {
        Error::codec(format!(
            "the stored record's fingerprint has {} bytes, expected 32",
            fingerprint.len()
        ))
    })?;
    let value = row
        .value
        .ok_or_else(|| Error::codec("the stored record has no value"))?;
    Ok(Claim::Completed(Arc::new(Record::new(
        Fingerprint::from_bytes(fingerprint),
        value,
    ))))
}

/// A live claim of another holder: poll again.
pub(crate) fn in_progress(row: &Stored) -> Result<Claim, Error> {
    match row.version {
        Some(VERSION) | None => Ok(Claim::InProgress(ChangeNotice::poll())),
        Some(version) => Err(Error::codec(format!(
            "the stored claim has version {version}, this build reads version {RECORD_VERSION}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: i16, fingerprint: &[u8], value: Option<&[u8]>) -> Stored {
        Stored {
            version: Some(version),
            fingerprint: Some(fingerprint.to_vec()),
            value: value.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn completed_rows_are_read_and_bad_ones_are_codec_errors() {
        match completed(row(VERSION, &[7; 32], Some(b"O1"))) {
            Ok(Claim::Completed(record)) => {
                assert_eq!(record.fingerprint().as_bytes(), &[7; 32]);
                assert_eq!(record.value(), b"O1");
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            row(VERSION + 1, &[7; 32], Some(b"O1")),
            row(VERSION, &[7; 31], Some(b"O1")),
            row(VERSION, &[7; 32], None),
            Stored::default(),
        ] {
            assert!(matches!(completed(bad), Err(Error::Codec(_))));
        }
        assert!(matches!(
            in_progress(&row(VERSION + 1, &[0; 32], None)),
            Err(Error::Codec(_))
        ));
        assert!(matches!(
            in_progress(&row(VERSION, &[0; 32], None)),
            Ok(Claim::InProgress(_))
        ));
    }

    #[test]
    fn tokens_round_trip_and_bad_lengths_are_codec_errors() {
        let token_value = Token::new(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        assert_eq!(token(&token_bytes(token_value)).unwrap(), token_value);
        assert!(matches!(token(&[1; 15]), Err(Error::Codec(_))));
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
        assert_eq!(millis(Duration::MAX), i64::MAX / 4);
    }
}
