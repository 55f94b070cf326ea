//! RFC 8785 (JSON Canonicalization Scheme) written straight from a parsed
//! [`Value`] into a caller's buffer: the `details` field of every event hash
//! (`docs/integrity.md`, section 3, field 16).
//!
//! `serde_jcs` gives the same bytes, but through a serializer that buffers
//! each member of each object in its own vectors, boxes a writer for every
//! token and parses every key back into a `Value` to sort it: a profile of a
//! verification run found it the largest cost per event, above SHA-256. Here
//! an object's members are only sorted by reference, and every token is
//! appended to one buffer. The tests below hold the two to the same output.

use serde_json::{Map, Value};

/// Appends the canonical form of `value` to `out`.
pub fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            // ECMAScript's Number::toString of the double (RFC 8785, 3.2.2.3);
            // integers too go through the double, as JavaScript reads them.
            let double = number.as_f64().unwrap_or(f64::NAN);
            let mut buffer = ryu_js::Buffer::new();
            out.extend_from_slice(buffer.format(double).as_bytes());
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(members) => write_object(members, out),
    }
}

/// Members sorted by their names' UTF-16 code units (RFC 8785, 3.2.3).
fn write_object(members: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
    // Usually in order already (the map keeps byte order, which agrees with
    // UTF-16 order but for characters above U+FFFF): the sort then only
    // checks it.
    sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    out.push(b'{');
    for (index, (name, value)) in sorted.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_string(name, out);
        out.push(b':');
        write(value, out);
    }
    out.push(b'}');
}

/// A JSON string: `"` and `\` escaped, control characters as their short
/// escape or `\u00xx` (lower-case hex), everything else as it is (RFC 8785,
/// 3.2.2.2).
fn write_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\x08' => b"\\b",
            b'\x0c' => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..index]);
        out.extend_from_slice(escape);
        plain_from = index + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    use super::*;

    fn canonical(value: &Value) -> String {
        let mut out = Vec::new();
        write(value, &mut out);
        String::from_utf8(out).expect("canonical JSON is UTF-8")
    }

    #[test]
    fn matches_serde_jcs_on_hand_picked_values() {
        let values = [
            json!(null),
            json!({}),
            json!([]),
            json!({"b": [1, 2.50, "x"], "a": {"z": null, "é": true}}),
            json!({"\u{e000}": 1, "\u{1f600}": 2, "a": 3, "": 4, "\u{80}": 5}),
            json!("quote \" backslash \\ slash / controls \u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1f}\u{7f} \u{2028} é 😀"),
            json!([1e21, 1e-7, -0.0, 0.1, 123456789012345680000.0, 5e-324, 1.7976931348623157e308]),
            json!([u64::MAX, i64::MIN, 9007199254740993_u64, -1, 0]),
            json!({"nested": {"deeper": [{"k": "v", "a": [[], {}]}]}}),
        ];
        for value in values {
            assert_eq!(
                canonical(&value),
                serde_jcs::to_string(&value).unwrap(),
                "{value}"
            );
        }
    }

    /// RFC 8785 numbers as docs/vectors/numbers.json (made by reference.py) spells them.
    #[test]
    fn numbers_canonicalize_as_the_reference_does() {
        let vectors: Map<String, Value> =
            serde_json::from_str(include_str!("../../docs/vectors/numbers.json")).unwrap();
        for (input, expected) in vectors {
            let value: Value = serde_json::from_str(&input).unwrap();
            assert_eq!(canonical(&value), expected.as_str().unwrap(), "{input}");
        }
    }

    /// Random documents (strings over ASCII, controls, and characters on
    /// both sides of the UTF-16 surrogate range; numbers of every size)
    /// canonicalize as `serde_jcs` does.
    #[test]
    fn matches_serde_jcs_on_random_values() {
        let mut rng = StdRng::seed_from_u64(8785);
        for _ in 0..2000 {
            let value = random_value(&mut rng, 4);
            assert_eq!(
                canonical(&value),
                serde_jcs::to_string(&value).unwrap(),
                "{value}"
            );
        }
    }

    fn random_value(rng: &mut StdRng, depth: u32) -> Value {
        let kinds = if depth == 0 { 4 } else { 6 };
        match rng.random_range(0..kinds) {
            0 => Value::Null,
            1 => Value::Bool(rng.random()),
            2 => random_number(rng),
            3 => Value::String(random_text(rng)),
            4 => (0..rng.random_range(0..5))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
            _ => (0..rng.random_range(0..6))
                .map(|_| (random_text(rng), random_value(rng, depth - 1)))
                .collect::<Map<_, _>>()
                .into(),
        }
    }

    fn random_number(rng: &mut StdRng) -> Value {
        match rng.random_range(0..4) {
            0 => json!(rng.random::<u64>() >> rng.random_range(0..64)),
            1 => json!(-(rng.random::<i64>() >> rng.random_range(1..64)).abs()),
            2 => json!(rng.random::<f64>() * 10f64.powi(rng.random_range(-30..30))),
            _ => {
                let double = f64::from_bits(rng.random());
                if double.is_finite() {
                    json!(double)
                } else {
                    json!(0.5)
                }
            }
        }
    }

    fn random_text(rng: &mut StdRng) -> String {
        const CHARS: [char; 14] = [
            'a', 'Z', '0', '"', '\\', '/', '\u{0}', '\u{1f}', '\n', 'é', '\u{2028}', '\u{e000}',
            '\u{fffd}', '😀',
        ];
        (0..rng.random_range(0..8))
            .map(|_| CHARS[rng.random_range(0..CHARS.len())])
            .collect()
    }
}
