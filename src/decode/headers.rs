//! One read-only view of message headers, so decoders that read headers (CloudEvents binary
//! mode) share code between HTTP ([`http::HeaderMap`]), NATS ([`async_nats::HeaderMap`]) and the
//! headers a dead letter carries (`[(String, String)]`).
//!
//! Names compare case-insensitively: HTTP header names are, and the CloudEvents NATS binding
//! says its header names are too, even though NATS itself preserves case.

/// Headers a decoder can read.
pub trait HeaderLookup {
    /// Calls `f` once per header value with its name as sent. A name given twice is seen twice.
    fn each(&self, f: &mut dyn FnMut(&str, &[u8]));
}

/// For a message that has no headers at all (a NATS message published without any).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl HeaderLookup for NoHeaders {
    fn each(&self, _f: &mut dyn FnMut(&str, &[u8])) {}
}

impl HeaderLookup for http::HeaderMap {
    fn each(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for (name, value) in self {
            f(name.as_str(), value.as_bytes());
        }
    }
}

impl HeaderLookup for async_nats::HeaderMap {
    fn each(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for (name, values) in self.iter() {
            for value in values {
                f(name.as_ref(), value.as_str().as_bytes());
            }
        }
    }
}

impl HeaderLookup for [(String, String)] {
    fn each(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for (name, value) in self {
            f(name, value.as_bytes());
        }
    }
}

impl HeaderLookup for [(&str, &str)] {
    fn each(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for (name, value) in self {
            f(name, value.as_bytes());
        }
    }
}

impl<T: HeaderLookup + ?Sized> HeaderLookup for &T {
    fn each(&self, f: &mut dyn FnMut(&str, &[u8])) {
        (**self).each(f)
    }
}

/// `None` reads as no headers: NATS gives `Option<HeaderMap>`.
impl<T: HeaderLookup> HeaderLookup for Option<T> {
    fn each(&self, f: &mut dyn FnMut(&str, &[u8])) {
        if let Some(h) = self {
            h.each(f)
        }
    }
}

/// Every value of the header `name` (compared case-insensitively), in the order seen.
pub fn get_all<H: HeaderLookup + ?Sized>(headers: &H, name: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    headers.each(&mut |n, v| {
        if n.eq_ignore_ascii_case(name) {
            out.push(v.to_vec());
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for (what, ct, xs) in [
            ("http", get_all(&h, "content-type"), get_all(&h, "CE-x")),
            ("nats", get_all(&n, "content-type"), get_all(&n, "ce-x")),
            ("pairs", get_all(pairs.as_slice(), "Content-Type"), get_all(pairs.as_slice(), "ce-x")),
        ] {
            assert_eq!(ct, vec![b"application/json".to_vec()], "{what}");
            assert_eq!(xs, vec![b"1".to_vec(), b"2".to_vec()], "{what}");
        }
        assert!(get_all(&NoHeaders, "ce-x").is_empty());
        assert!(get_all(&None::<http::HeaderMap>, "ce-x").is_empty());
        assert_eq!(get_all(&Some(&h), "ce-x").len(), 2);
    }
}
