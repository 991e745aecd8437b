//! Moving headers between NATS and the bridge's transport-neutral form.

use async_nats::HeaderMap;

/// NATS headers in arrival order as (name, value) pairs.
pub fn original_from(headers: Option<&HeaderMap>) -> Vec<(String, String)> {
    let Some(headers) = headers else { return Vec::new() };
    let mut out = Vec::new();
    for (name, values) in headers.iter() {
        for value in values {
            out.push((name.to_string(), value.as_str().to_owned()));
        }
    }
    out
}

/// Pairs to NATS headers, skipping what NATS cannot carry (names with spaces or colons, values
/// with line breaks) rather than failing the whole message.
pub fn to_nats_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if valid_name(name) && !value.contains(['\r', '\n']) {
            headers.append(name, value);
        }
    }
    headers
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}
