//! Values read from and written to datasets.
//!
//! A [`Value`] is very often personal data. Its `Debug` output is therefore redacted: a value can
//! be logged by accident (`{:?}` on a struct) without the data leaking. Only [`Value::canonical`]
//! exposes the content, for keyed hashing and binding.

use std::fmt;

use chrono::{NaiveDate, NaiveDateTime};

#[derive(Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    /// A timestamp in UTC.
    Timestamp(NaiveDateTime),
    Date(NaiveDate),
    Bytes(Vec<u8>),
}

impl Value {
    /// A stable text form, used as input to keyed hashes (never printed).
    pub fn canonical(&self) -> String {
        match self {
            Value::Null => "\u{0}null".into(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Text(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Timestamp(t) => t.format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
            Value::Date(d) => d.format("%Y-%m-%d").to_string(),
            Value::Bytes(b) => hex::encode(b),
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
            Value::Bool(_) => "boolean",
            Value::Timestamp(_) => "timestamp",
            Value::Date(_) => "date",
            Value::Bytes(_) => "bytes",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "Null"),
            other => write!(f, "<redacted {}>", other.kind_name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_value() {
        let v = Value::Text("alice@example.com".into());
        assert_eq!(format!("{v:?}"), "<redacted text>");
        assert_eq!(format!("{:?}", vec![Value::Int(42)]), "[<redacted integer>]");
    }
}
