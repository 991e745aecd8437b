//! One read-only view of message headers, so that verification (signature and credential
//! headers) and decoding (CloudEvents binary mode) read an HTTP request ([`http::HeaderMap`]), a
//! NATS message ([`async_nats::HeaderMap`], or `Option` of one), and stored or test headers
//! (`[(name, value)]` pairs) the same way. Owns looking headers up; must not interpret values
//! (each scheme and decoder does that).
//!
//! It also holds the conversions between the transports' header maps and the pairs an event
//! carries on ([`pairs_from_http`], [`pairs_from_nats`], [`to_nats_headers`]) and the one rule of
//! what never travels further: credentials ([`without_credentials`]).
//!
//! Names compare without regard to ASCII case. HTTP header names are case-insensitive; NATS
//! preserves case on the wire, but senders vary and the CloudEvents NATS binding says its header
//! names are case-insensitive too. So `Webhook-Id` and `webhook-id` in one NATS message are two
//! values of one header, and a signature header sent twice that way counts as sent twice.

/// Headers that can be read. [`HeaderLookup::each`] is the one method to implement;
/// [`HeaderLookup::get_all`] has a default built on it that an implementation may replace with
/// a direct lookup.
pub trait HeaderLookup {
    /// Calls `f` once per header value with its name as sent, in the order received. A name
    /// given twice is seen twice.
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a str, &'a [u8]));

    /// Every value of the header `name` (ASCII case ignored), in the order received; empty when
    /// absent.
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        let mut values = Vec::new();
        self.each(&mut |n, v| {
            if n.eq_ignore_ascii_case(name) {
                values.push(v);
            }
        });
        values
    }
}

/// For a message that has no headers at all (a NATS message published without any).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl HeaderLookup for NoHeaders {
    fn each<'a>(&'a self, _f: &mut dyn FnMut(&'a str, &'a [u8])) {}
}

impl HeaderLookup for http::HeaderMap {
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a str, &'a [u8])) {
        for (name, value) in self {
            f(name.as_str(), value.as_bytes());
        }
    }

    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        // `http` stores names lower-cased and lower-cases `&str` keys on lookup; a name that is
        // not a valid header name simply finds nothing.
        http::HeaderMap::get_all(self, name).iter().map(http::HeaderValue::as_bytes).collect()
    }
}

impl HeaderLookup for async_nats::HeaderMap {
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a str, &'a [u8])) {
        // Iterating is the only case-insensitive lookup NATS header maps offer.
        for (name, values) in self.iter() {
            for value in values {
                f(name.as_ref(), value.as_str().as_bytes());
            }
        }
    }
}

/// Name/value pairs: the headers an event carries on and a dead letter keeps, and what tests,
/// fuzz targets and other transports build.
impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderLookup for [(N, V)] {
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a str, &'a [u8])) {
        for (name, value) in self {
            f(name.as_ref(), value.as_ref());
        }
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderLookup for Vec<(N, V)> {
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a str, &'a [u8])) {
        self.as_slice().each(f)
    }
}

impl<T: HeaderLookup + ?Sized> HeaderLookup for &T {
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a str, &'a [u8])) {
        (**self).each(f)
    }

    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        (**self).get_all(name)
    }
}

/// `None` reads as no headers: NATS gives `Option<HeaderMap>`.
impl<T: HeaderLookup> HeaderLookup for Option<T> {
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a str, &'a [u8])) {
        if let Some(h) = self {
            h.each(f)
        }
    }

    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.as_ref().map(|h| h.get_all(name)).unwrap_or_default()
    }
}

/// Request headers that never travel further (into events, dead letters or logs).
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// Header pairs minus credentials: what may travel on with an event.
pub fn without_credentials(headers: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    headers.filter(|(name, _)| !CREDENTIAL_HEADERS.iter().any(|c| name.eq_ignore_ascii_case(c))).collect()
}

/// An HTTP request's headers as pairs, in order; values that are not UTF-8 are made so lossily.
pub fn pairs_from_http(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect()
}

/// NATS headers in arrival order as (name, value) pairs.
pub fn pairs_from_nats(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, String)> {
    let Some(headers) = headers else { return Vec::new() };
    let mut out = Vec::new();
    for (name, values) in headers.iter() {
        for value in values {
            out.push((name.to_string(), value.as_str().to_owned()));
        }
    }
    out
}

/// Pairs to HTTP headers, as a sender would send them; the first name or value HTTP cannot
/// carry is the error.
pub fn to_http_headers<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<http::HeaderMap, String> {
    let mut headers = http::HeaderMap::new();
    for (name, value) in pairs {
        let name: http::HeaderName = name.parse().map_err(|e| format!("header name `{name}`: {e}"))?;
        let value: http::HeaderValue = value.parse().map_err(|e| format!("header {name}: {e}"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Pairs to NATS headers, skipping what NATS cannot carry (names with spaces or colons, values
/// with line breaks) rather than failing the whole message.
pub fn to_nats_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in pairs {
        if nats_can_carry(name, value) {
            headers.append(name, value);
        }
    }
    headers
}

/// Whether NATS can carry this header: a name without spaces or colons, a value without line
/// breaks.
pub fn nats_can_carry(name: &str, value: &str) -> bool {
    valid_nats_name(name) && !value.contains(['\r', '\n'])
}

fn valid_nats_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_travel_on() {
        let pairs = vec![
            ("Authorization".to_owned(), "Bearer x".to_owned()),
            ("cookie".to_owned(), "c".to_owned()),
            ("PROXY-AUTHORIZATION".to_owned(), "p".to_owned()),
            ("traceparent".to_owned(), "t".to_owned()),
        ];
        assert_eq!(without_credentials(pairs.into_iter()), [("traceparent".to_owned(), "t".to_owned())]);
    }

    #[test]
    fn nats_headers_skip_what_nats_cannot_carry() {
        let h = to_nats_headers([("Good", "1"), ("bad name", "2"), ("Bad:Name", "3"), ("Line", "a\nb")]);
        assert_eq!(pairs_from_nats(Some(&h)), [("Good".to_owned(), "1".to_owned())]);
        assert!(pairs_from_nats(None).is_empty());
    }

    #[test]
    fn every_header_source_reads_the_same() {
        let mut h = http::HeaderMap::new();
        h.insert("Content-Type", http::HeaderValue::from_static("application/json"));
        h.append("ce-x", http::HeaderValue::from_static("1"));
        h.append("ce-x", http::HeaderValue::from_static("2"));
        let mut n = async_nats::HeaderMap::new();
        n.insert("Content-Type", "application/json");
        n.append("CE-X", "1");
        n.append("CE-X", "2");
        let pairs: Vec<(String, String)> = vec![
            ("content-type".into(), "application/json".into()),
            ("ce-x".into(), "1".into()),
            ("Ce-X".into(), "2".into()),
        ];
        let ct: &[u8] = b"application/json";
        let xs: [&[u8]; 2] = [b"1", b"2"];
        for (what, headers) in
            [("http", &h as &dyn HeaderLookup), ("nats", &n), ("pairs", &pairs.as_slice()), ("vec", &pairs)]
        {
            assert_eq!(headers.get_all("content-type"), [ct], "{what}");
            assert_eq!(headers.get_all("CE-x"), xs, "{what}");
            let mut seen = Vec::new();
            headers.each(&mut |name, value| seen.push((name.to_ascii_lowercase(), value.to_vec())));
            assert_eq!(seen.len(), 3, "{what}: {seen:?}");
        }
        assert!(NoHeaders.get_all("ce-x").is_empty());
        assert!(None::<http::HeaderMap>.get_all("ce-x").is_empty());
        assert_eq!(Some(&h).get_all("ce-x").len(), 2);
        assert_eq!(HeaderLookup::get_all(&Some(n), "ce-x").len(), 2);
    }

    #[test]
    fn http_lookup_ignores_case_and_returns_every_value() {
        let mut h = http::HeaderMap::new();
        h.append("webhook-id", http::HeaderValue::from_static("a"));
        h.append("Webhook-Id", http::HeaderValue::from_static("b"));
        assert_eq!(HeaderLookup::get_all(&h, "WEBHOOK-ID"), vec![b"a".as_slice(), b"b".as_slice()]);
        assert!(HeaderLookup::get_all(&h, "not a header name").is_empty());
    }

    #[test]
    fn nats_names_that_differ_only_in_case_are_one_header() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Webhook-Signature", "v1,abc");
        assert_eq!(HeaderLookup::get_all(&h, "webhook-signature"), vec![b"v1,abc".as_slice()]);
        h.insert("webhook-signature", "v1,def");
        assert_eq!(HeaderLookup::get_all(&h, "WEBHOOK-SIGNATURE").len(), 2);
    }
}
