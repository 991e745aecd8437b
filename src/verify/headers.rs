//! Reading headers the same way from HTTP requests and NATS messages. Owns the [`HeaderLookup`]
//! trait and the rule that a signature or credential header must appear exactly once; must not
//! interpret header values (each scheme does that).

use super::VerifyError;

/// Every value of a header, looked up without regard to ASCII case. HTTP header names are
/// case-insensitive; NATS header names are case-sensitive on the wire, but senders vary, so the
/// NATS implementation compares names case-insensitively too.
pub trait HeaderLookup {
    /// All values of the header `name`, in any order; empty when absent.
    fn get_all(&self, name: &str) -> Vec<&[u8]>;
}

impl HeaderLookup for http::HeaderMap {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        // `http` stores names lower-cased and lower-cases `&str` keys on lookup; a name that is
        // not a valid header name simply finds nothing.
        http::HeaderMap::get_all(self, name).iter().map(http::HeaderValue::as_bytes).collect()
    }
}

impl HeaderLookup for async_nats::HeaderMap {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        // Iterating is the only case-insensitive lookup NATS header maps offer. `Webhook-Id` and
        // `webhook-id` are separate keys there; both count, so sending both is a duplicate.
        self.iter()
            .filter(|(n, _)| AsRef::<str>::as_ref(*n).eq_ignore_ascii_case(name))
            .flat_map(|(_, values)| values.iter().map(AsRef::<[u8]>::as_ref))
            .collect()
    }
}

/// Name/value pairs, as tests, fuzz targets and other transports have them.
impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderLookup for [(N, V)] {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.iter().filter(|(n, _)| n.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref()).collect()
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderLookup for Vec<(N, V)> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.as_slice().get_all(name)
    }
}

/// No headers at all, as a NATS message without headers has them (`Message::headers` is an
/// `Option`).
impl<T: HeaderLookup> HeaderLookup for Option<T> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.as_ref().map_or_else(Vec::new, |h| h.get_all(name))
    }
}

impl<T: HeaderLookup + ?Sized> HeaderLookup for &T {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        (**self).get_all(name)
    }
}

/// The one value of a header that must appear exactly once and not be empty.
pub(crate) fn single<'a>(headers: &'a dyn HeaderLookup, name: &str) -> Result<&'a [u8], VerifyError> {
    let values = headers.get_all(name);
    match values.as_slice() {
        [] => Err(VerifyError::missing(name)),
        [[]] => Err(VerifyError::malformed(name, "empty value")),
        [one] => Ok(one),
        _ => Err(VerifyError::malformed(name, "sent more than once")),
    }
}

/// Like [`single`], for headers whose value must be ASCII text. Surrounding spaces and tabs are
/// dropped, as HTTP parsers drop them.
pub(crate) fn single_ascii<'a>(headers: &'a dyn HeaderLookup, name: &str) -> Result<&'a str, VerifyError> {
    let value = single(headers, name)?.trim_ascii();
    if value.is_empty() {
        return Err(VerifyError::malformed(name, "empty value"));
    }
    if !value.is_ascii() {
        return Err(VerifyError::malformed(name, "not ASCII"));
    }
    std::str::from_utf8(value).map_err(|_| VerifyError::malformed(name, "not ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_lookup_ignores_case_and_returns_every_value() {
        let mut h = http::HeaderMap::new();
        h.append("webhook-id", http::HeaderValue::from_static("a"));
        h.append("Webhook-Id", http::HeaderValue::from_static("b"));
        assert_eq!(HeaderLookup::get_all(&h, "WEBHOOK-ID"), vec![b"a".as_slice(), b"b".as_slice()]);
        assert!(HeaderLookup::get_all(&h, "not a header name").is_empty());
    }

    #[test]
    fn nats_lookup_ignores_case_across_differently_cased_keys() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Webhook-Signature", "v1,abc");
        assert_eq!(HeaderLookup::get_all(&h, "webhook-signature"), vec![b"v1,abc".as_slice()]);
        h.insert("webhook-signature", "v1,def");
        let err = single(&h, "webhook-signature").unwrap_err();
        assert_eq!(err.kind(), "malformed_header");
    }

    #[test]
    fn a_message_without_headers_has_none() {
        let none: Option<async_nats::HeaderMap> = None;
        assert!(none.get_all("webhook-id").is_empty());
        let mut some = async_nats::HeaderMap::new();
        some.insert("webhook-id", "x");
        assert_eq!(Some(some).get_all("webhook-id"), vec![b"x".as_slice()]);
    }

    #[test]
    fn single_refuses_missing_empty_and_duplicate_headers() {
        let none: Vec<(&str, &str)> = vec![];
        assert_eq!(single(&none, "x").unwrap_err().kind(), "missing_header");
        assert_eq!(single(&vec![("x", "")], "x").unwrap_err().kind(), "malformed_header");
        assert_eq!(single(&vec![("x", "1"), ("X", "2")], "x").unwrap_err().kind(), "malformed_header");
        assert_eq!(single(&vec![("X", "1")], "x").unwrap(), b"1");
    }

    #[test]
    fn single_ascii_trims_and_refuses_non_ascii() {
        assert_eq!(single_ascii(&vec![("x", " 12 ")], "x").unwrap(), "12");
        assert_eq!(single_ascii(&vec![("x", "   ")], "x").unwrap_err().kind(), "malformed_header");
        assert_eq!(single_ascii(&vec![("x", "é")], "x").unwrap_err().kind(), "malformed_header");
    }
}
