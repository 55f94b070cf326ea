//! Keyset-pagination cursors: `base64url("<time in µs>:<id>")` of a page's
//! last row. The microsecond is PostgreSQL's precision, so the keyset is exact;
//! the id breaks ties between rows of the same time.

use std::fmt::Display;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};

pub fn encode(time: DateTime<Utc>, id: impl Display) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", time.timestamp_micros()))
}

/// `None` for anything [`encode`] did not make.
pub fn decode<Id: FromStr>(cursor: &str) -> Option<(DateTime<Utc>, Id)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (micros, id) = text.split_once(':')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}
