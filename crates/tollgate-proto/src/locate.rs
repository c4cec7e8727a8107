//! Where a value is in a JSON document, for error messages that point at a file's line.
//!
//! [`line_of`] follows a path of (array field, index) pairs from the top-level object, the
//! form of [`Error::path`](crate::Error::path): `[("rateCards", 1), ("versions", 0),
//! ("dialOut", 17)]` is the 18th dial-out row of the first version of the second rate card.
//! Field names match in either spelling the proto3 JSON mapping accepts (`rateCards`,
//! `rate_cards`). The scan only skips over values: it does not build them, so it costs
//! little even on a large reference file, and it runs only when an error is reported.

/// The 1-based line on which the value at `path` starts in `text`, if the path leads to one.
pub fn line_of(text: &str, path: &[(&str, usize)]) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = skip_ws(bytes, 0);
    for &(field, index) in path {
        at = field_value(bytes, at, field)?;
        at = element(bytes, at, index)?;
    }
    Some(1 + bytes[..at].iter().filter(|&&b| b == b'\n').count())
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// The end of the string starting at `at` (a `"`), past its closing quote.
fn skip_string(bytes: &[u8], mut at: usize) -> Option<usize> {
    at += 1;
    loop {
        match bytes.get(at)? {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
}

/// The end of the value starting at `at`.
fn skip_value(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => skip_string(bytes, at),
        open @ (b'{' | b'[') => {
            let close = if *open == b'{' { b'}' } else { b']' };
            let mut i = skip_ws(bytes, at + 1);
            if bytes.get(i) == Some(&close) {
                return Some(i + 1);
            }
            loop {
                if *open == b'{' {
                    i = skip_ws(bytes, skip_string(bytes, i)?);
                    if bytes.get(i) != Some(&b':') {
                        return None;
                    }
                    i = skip_ws(bytes, i + 1);
                }
                i = skip_ws(bytes, skip_value(bytes, i)?);
                match bytes.get(i)? {
                    b',' => i = skip_ws(bytes, i + 1),
                    b if *b == close => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        _ => {
            let mut i = at;
            while bytes.get(i).is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace()) {
                i += 1;
            }
            (i > at).then_some(i)
        }
    }
}

/// `lowerCamelCase` of a proto field name (`rate_cards` -> `rateCards`); a camelCase name is
/// unchanged.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The start of the value of `field` in the object starting at `at`.
fn field_value(bytes: &[u8], at: usize, field: &str) -> Option<usize> {
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    let mut i = skip_ws(bytes, at + 1);
    while bytes.get(i) == Some(&b'"') {
        let end = skip_string(bytes, i)?;
        let name = std::str::from_utf8(&bytes[i + 1..end - 1]).ok()?;
        i = skip_ws(bytes, end);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(bytes, i + 1);
        if camel(name) == field {
            return Some(i);
        }
        i = skip_ws(bytes, skip_value(bytes, i)?);
        if bytes.get(i) == Some(&b',') {
            i = skip_ws(bytes, i + 1);
        }
    }
    None
}

/// The start of element `index` of the array starting at `at`.
fn element(bytes: &[u8], at: usize, index: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    let mut i = skip_ws(bytes, at + 1);
    for _ in 0..index {
        i = skip_ws(bytes, skip_value(bytes, i)?);
        if bytes.get(i) != Some(&b',') {
            return None;
        }
        i = skip_ws(bytes, i + 1);
    }
    matches!(bytes.get(i), Some(b) if *b != b']').then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
  "tenants": [
    {"tenantId": "a", "note": "a \"quoted\" ] , } string"},
    {
      "tenantId": "b"
    }
  ],
  "rate_cards": [
    {"rateCardId": "x", "versions": [
      {"version": "v1", "dialOut": [
        {"prefix": "1"},
        {"prefix": "44", "price": {"perMinute": "0.012.0"}}
      ]}
    ]}
  ]
}"#;

    #[test]
    fn finds_the_line_of_an_array_element_by_its_path() {
        assert_eq!(line_of(DOC, &[("tenants", 0)]), Some(3));
        assert_eq!(line_of(DOC, &[("tenants", 1)]), Some(4));
        assert_eq!(line_of(DOC, &[("rateCards", 0)]), Some(9));
        assert_eq!(line_of(DOC, &[("rateCards", 0), ("versions", 0)]), Some(10));
        assert_eq!(line_of(DOC, &[("rateCards", 0), ("versions", 0), ("dialOut", 1)]), Some(12));
    }

    #[test]
    fn finds_nothing_where_the_path_leads_nowhere() {
        assert_eq!(line_of(DOC, &[("tenants", 2)]), None);
        assert_eq!(line_of(DOC, &[("users", 0)]), None);
        assert_eq!(line_of("not json", &[("tenants", 0)]), None);
        assert_eq!(line_of(r#"{"tenants": []}"#, &[("tenants", 0)]), None);
    }
}
