//! The event hash chain: canonical JSON, the exact bytes that are hashed, and the verifier.
//!
//! docs/catalog.md states the encoding; a change here is a new `HASH_DOMAIN` version.

use super::error::ChainError;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain-separation prefix: first bytes of every hashed event encoding.
pub const HASH_DOMAIN: &[u8] = b"coldtier.event.v1\0";

/// An event as stored, every column as its raw text/integer (nothing parsed, so that a
/// row with a mangled kind or detail can still be checked).
#[derive(Debug, Clone)]
pub(crate) struct RawEvent {
    pub id: i64,
    pub time_ns: i64,
    pub file_id: Option<String>,
    pub path: Option<String>,
    pub kind: String,
    /// The detail column: canonical JSON text.
    pub detail: String,
    pub config_version: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings escaped
/// as serde_json escapes them, numbers as serde_json prints them. Independent of whether
/// serde_json's `preserve_order` feature is on somewhere in the build.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn put_opt_str(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            put_str(h, s);
        }
    }
}

/// The fields of an event that its hash covers (everything but the hash itself).
pub(crate) struct HashInput<'a> {
    pub prev_hash: &'a str,
    pub id: i64,
    pub time_ns: i64,
    pub file_id: Option<&'a str>,
    pub path: Option<&'a str>,
    pub kind: &'a str,
    /// Canonical JSON text, exactly as stored.
    pub detail: &'a str,
    pub config_version: i64,
}

/// Lower-case hex SHA-256 over:
/// `HASH_DOMAIN ‖ str(prev_hash) ‖ i64(id) ‖ i64(time_ns) ‖ opt(file_id) ‖ opt(path) ‖
///  str(kind) ‖ str(detail) ‖ i64(config_version)`
/// where `i64` is 8 bytes big-endian two's complement, `str` is the UTF-8 byte length as
/// 8 bytes big-endian then the bytes, and `opt` is one byte 0 for None or 1 then `str`.
pub(crate) fn event_hash(e: &HashInput<'_>) -> String {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    put_str(&mut h, e.prev_hash);
    h.update(e.id.to_be_bytes());
    h.update(e.time_ns.to_be_bytes());
    put_opt_str(&mut h, e.file_id);
    put_opt_str(&mut h, e.path);
    put_str(&mut h, e.kind);
    put_str(&mut h, e.detail);
    h.update(e.config_version.to_be_bytes());
    hex::encode(h.finalize())
}

/// Lower-case hex SHA-256 of some text (config versions).
pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Walks the chain in id order and stops at the first link that does not hold.
pub(crate) struct Verifier {
    expected_id: i64,
    expected_prev: String,
    checked: u64,
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier {
            expected_id: 1,
            expected_prev: GENESIS_HASH.to_owned(),
            checked: 0,
        }
    }

    /// Checks the next row (rows must come in ascending id order).
    pub fn check(&mut self, row: &RawEvent) -> Result<(), ChainError> {
        let bad = |reason: String| ChainError {
            first_bad_id: row.id,
            reason,
        };
        if row.id != self.expected_id {
            return Err(bad(if row.id > self.expected_id {
                if self.expected_id == row.id - 1 {
                    format!(
                        "event {} is missing (deleted?): ids must run 1, 2, 3 ... without gaps",
                        self.expected_id
                    )
                } else {
                    format!(
                        "events {}..={} are missing (deleted?): ids must run 1, 2, 3 ... without gaps",
                        self.expected_id,
                        row.id - 1
                    )
                }
            } else {
                format!("id out of order: expected {}", self.expected_id)
            }));
        }
        if row.prev_hash != self.expected_prev {
            return Err(bad(if row.id == 1 {
                "the first event's prev_hash is not 64 zeros".to_owned()
            } else {
                format!(
                    "prev_hash does not match the hash of event {} (that event was rewritten, \
                     replaced or moved)",
                    row.id - 1
                )
            }));
        }
        let computed = event_hash(&HashInput {
            prev_hash: &row.prev_hash,
            id: row.id,
            time_ns: row.time_ns,
            file_id: row.file_id.as_deref(),
            path: row.path.as_deref(),
            kind: &row.kind,
            detail: &row.detail,
            config_version: row.config_version,
        });
        if computed != row.hash {
            return Err(bad(
                "stored hash does not match the row's contents (the row was changed)".to_owned(),
            ));
        }
        self.expected_id = row.id + 1;
        self.expected_prev.clone_from(&row.hash);
        self.checked += 1;
        Ok(())
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{ "b": [1, 2.5, {"z": null, "a": true}], "a": "x\"y\n" }"#)
                .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":"x\"y\n","b":[1,2.5,{"a":true,"z":null}]}"#
        );
        // Round trip is stable.
        let again: serde_json::Value = serde_json::from_str(&canonical_json(&v)).unwrap();
        assert_eq!(canonical_json(&again), canonical_json(&v));
    }

    /// Pins the encoding documented in docs/catalog.md: these values were computed by an
    /// independent implementation (Python's hashlib and struct) of that text.
    #[test]
    fn hash_matches_the_documented_encoding() {
        let first = event_hash(&HashInput {
            prev_hash: GENESIS_HASH,
            id: 1,
            time_ns: 1_700_000_000_123_456_789,
            file_id: None,
            path: None,
            kind: "CONFIG_CHANGED",
            detail: r#"{"hash":"ab","previous":null,"version":1}"#,
            config_version: 1,
        });
        assert_eq!(
            first,
            "aa7cadf4af2fdd694372eabe153adec17cf86b0154e65a2aa2476ab4b30b2538"
        );
        let second = event_hash(&HashInput {
            prev_hash: &first,
            id: 2,
            time_ns: -5,
            file_id: Some("f-1"),
            path: Some("dir/\u{e9}.txt"),
            kind: "STUBBED",
            detail: r#"{"freed":1001}"#,
            config_version: 1,
        });
        assert_eq!(
            second,
            "d3043d624858c3949e2011e780ceda5072183dea7e83dd932e5b5ca5bc82c1c5"
        );
    }

    #[test]
    fn hash_encoding_is_unambiguous() {
        let base = HashInput {
            prev_hash: GENESIS_HASH,
            id: 1,
            time_ns: 5,
            file_id: Some("ab"),
            path: Some("c"),
            kind: "COPIED",
            detail: "{}",
            config_version: 1,
        };
        let h0 = event_hash(&base);
        // Moving a byte from one field to the next changes the hash.
        let shifted = HashInput {
            file_id: Some("a"),
            path: Some("bc"),
            ..base
        };
        assert_ne!(h0, event_hash(&shifted));
        // None differs from the empty string.
        let none = HashInput {
            file_id: None,
            path: Some("c"),
            ..base
        };
        let empty = HashInput {
            file_id: Some(""),
            path: Some("c"),
            ..base
        };
        assert_ne!(event_hash(&none), event_hash(&empty));
        assert_eq!(h0.len(), 64);
    }
}
