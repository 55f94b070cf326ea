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

/// Appends the canonical form of the JSON `text` to `out`, reading the text
/// in place instead of building a [`Value`] first; the same bytes as
/// [`write`] of the parsed text.
///
/// Verification canonicalizes the `details` of every event it reads, as
/// PostgreSQL spells them: parsed into a `Value` (a node and a string
/// allocated per member) that took 2.3 us per event in a profile, more than
/// the canonical writing itself. Here names and strings without escapes are
/// borrowed from the text, and only objects whose members are out of order
/// are reordered. Anything this reader does not take as it is (an escape it
/// would have to decode with care, a repeated name, a document nested deeper
/// than `serde_json` accepts, text that is not JSON) goes through `Value`,
/// so both ways agree by construction on all but well-formed plain text, and
/// on that the tests hold them to the same output.
pub fn write_text(text: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let start = out.len();
    let mut reader = TextReader {
        source: text,
        text: text.as_bytes(),
        position: 0,
        members: Vec::new(),
        scratch: Vec::new(),
    };
    let read = reader.value(out, 0).and_then(|()| {
        reader.skip_whitespace();
        (reader.position == reader.text.len()).then_some(())
    });
    if read.is_none() {
        out.truncate(start);
        write(&serde_json::from_str::<Value>(text)?, out);
    }
    Ok(())
}

/// Deeper documents go the `Value` way, and fail there past `serde_json`'s
/// limit (127 levels).
const MAX_DEPTH: usize = 100;

/// A reader of JSON text that writes its canonical form as it goes; `None`
/// means "take the `Value` way" (see [`write_text`]).
struct TextReader<'a> {
    source: &'a str,
    /// `source`'s bytes.
    text: &'a [u8],
    position: usize,
    /// Members of the objects being read (name, span of `"name":value` in
    /// the output), innermost object last.
    members: Vec<(&'a str, std::ops::Range<usize>)>,
    /// Where an object's members are moved while they are put in order.
    scratch: Vec<u8>,
}

impl<'a> TextReader<'a> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.position) {
            self.position += 1;
        }
    }

    fn next_is(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        if self.text.get(self.position) == Some(&byte) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        self.skip_whitespace();
        let rest = &self.text[self.position..];
        match *rest.first()? {
            b'{' if depth < MAX_DEPTH => self.object(out, depth + 1),
            b'[' if depth < MAX_DEPTH => self.array(out, depth + 1),
            b'"' => {
                let text = self.string()?;
                write_string(text, out);
                Some(())
            }
            b'-' | b'0'..=b'9' => self.number(out),
            _ => {
                let word: &[u8] = [&b"null"[..], b"true", b"false"]
                    .into_iter()
                    .find(|word| rest.starts_with(word))?;
                out.extend_from_slice(word);
                self.position += word.len();
                Some(())
            }
        }
    }

    fn array(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        self.position += 1;
        out.push(b'[');
        if !self.next_is(b']') {
            loop {
                self.value(out, depth)?;
                if self.next_is(b']') {
                    break;
                }
                if !self.next_is(b',') {
                    return None;
                }
                out.push(b',');
            }
        }
        out.push(b']');
        Some(())
    }

    /// Writes the members as they come, then puts them in order if they
    /// are not.
    fn object(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        self.position += 1;
        out.push(b'{');
        let first = self.members.len();
        let body = out.len();
        if !self.next_is(b'}') {
            loop {
                self.skip_whitespace();
                if self.text.get(self.position) != Some(&b'"') {
                    return None;
                }
                let name = self.string()?;
                if !self.next_is(b':') {
                    return None;
                }
                let member = out.len();
                write_string(name, out);
                out.push(b':');
                self.value(out, depth)?;
                self.members.push((name, member..out.len()));
                if self.next_is(b'}') {
                    break;
                }
                if !self.next_is(b',') {
                    return None;
                }
                out.push(b',');
            }
        }
        let members = &mut self.members[first..];
        let in_order = members
            .windows(2)
            .all(|pair| utf16_order(pair[0].0, pair[1].0).is_lt());
        if !in_order {
            members.sort_by(|a, b| utf16_order(a.0, b.0));
            if members.windows(2).any(|pair| pair[0].0 == pair[1].0) {
                // A repeated name: the last one counts, as `Value` keeps it.
                return None;
            }
            self.scratch.clear();
            self.scratch.extend_from_slice(&out[body..]);
            out.truncate(body);
            for (index, (_, span)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&self.scratch[span.start - body..span.end - body]);
            }
        }
        self.members.truncate(first);
        out.push(b'}');
        Some(())
    }

    /// A string without escapes, borrowed from the text (the opening quote
    /// at the position).
    fn string(&mut self) -> Option<&'a str> {
        let start = self.position + 1;
        let length = self.text[start..]
            .iter()
            .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)?;
        if self.text[start + length] != b'"' {
            return None;
        }
        self.position = start + length + 1;
        // Between two ASCII bytes: on character boundaries.
        Some(&self.source[start..start + length])
    }

    /// A number, spelled as ECMAScript does (RFC 8785, 3.2.2.3) from the
    /// double `serde_json` reads it as.
    fn number(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.position;
        let length = self.text[start..]
            .iter()
            .position(|byte| !matches!(byte, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
            .unwrap_or(self.text.len() - start);
        let token = &self.source[start..start + length];
        let number: serde_json::Number = serde_json::from_str(token).ok()?;
        self.position += length;
        let mut buffer = ryu_js::Buffer::new();
        out.extend_from_slice(buffer.format(number.as_f64()?).as_bytes());
        Some(())
    }
}

/// RFC 8785's order of member names: by their UTF-16 code units.
fn utf16_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Members sorted by their names' UTF-16 code units (RFC 8785, 3.2.3).
fn write_object(members: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
    // Usually in order already (the map keeps byte order, which agrees with
    // UTF-16 order but for characters above U+FFFF): the sort then only
    // checks it.
    sorted.sort_by(|(a, _), (b, _)| utf16_order(a, b));
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

    /// Reading the text in place gives what parsing it into a `Value` and
    /// writing that gives: for random documents spelled compactly, pretty,
    /// and as PostgreSQL's `jsonb` spells them (names by length), and for
    /// hand-picked texts that take the `Value` way (escapes, repeated
    /// names, depth) or are not JSON at all.
    #[test]
    fn text_read_in_place_matches_the_parsed_value() {
        let agree = |text: &str| {
            let mut in_place = Vec::new();
            let read = write_text(text, &mut in_place);
            match serde_json::from_str::<Value>(text) {
                Ok(value) => {
                    assert!(read.is_ok(), "{text}");
                    assert_eq!(in_place, canonical(&value).into_bytes(), "{text}");
                }
                Err(_) => assert!(read.is_err(), "{text}"),
            }
        };
        let mut rng = StdRng::seed_from_u64(16);
        for _ in 0..2000 {
            let value = random_value(&mut rng, 4);
            agree(&serde_json::to_string(&value).unwrap());
            agree(&serde_json::to_string_pretty(&value).unwrap());
            agree(&postgres_spelling(&value));
        }
        let deep = |levels: usize| "[".repeat(levels) + &"]".repeat(levels);
        let texts = [
            r#"{"b": 1, "a": 2, "b": 3}"#.to_owned(),
            r#"{"a\u0062": "\ud83d\ude00", "ab": "\n", "\u00e9": 1}"#.to_owned(),
            r#" { "z" : [ 1.50 , -0 , -0.0, 1E2, 1e-7, 123456789012345678901234567890 ] , "y":{} } "#
                .to_owned(),
            "{\"\u{e000}\": 1, \"\u{1f600}\": 2}".to_owned(),
            deep(99),
            deep(100),
            deep(127),
            deep(128),
            String::new(),
            "{".to_owned(),
            r#"{"a" 1}"#.to_owned(),
            r#"{"a": 1,}"#.to_owned(),
            "[1,]".to_owned(),
            "[01]".to_owned(),
            "[1-2]".to_owned(),
            "[nul]".to_owned(),
            "nullx".to_owned(),
            "{} {}".to_owned(),
            "\"raw \u{1} control\"".to_owned(),
        ];
        for text in texts {
            agree(&text);
        }
    }

    /// `value` as PostgreSQL prints a `jsonb`: `", "` and `": "` between
    /// tokens, names ordered shorter first.
    fn postgres_spelling(value: &Value) -> String {
        match value {
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(postgres_spelling).collect();
                format!("[{}]", items.join(", "))
            }
            Value::Object(members) => {
                let mut members: Vec<(&String, &Value)> = members.iter().collect();
                members.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(name, value)| {
                        format!(
                            "{}: {}",
                            Value::from(name.as_str()),
                            postgres_spelling(value)
                        )
                    })
                    .collect();
                format!("{{{}}}", members.join(", "))
            }
            scalar => scalar.to_string(),
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
