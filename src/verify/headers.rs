//! Reading signature and credential headers: the rule that such a header must appear exactly
//! once and not be empty. Headers are looked up through the crate's one [`HeaderLookup`]
//! (`crate::headers`), the same for HTTP and NATS; this module must not interpret header values
//! (each scheme does that).

pub use crate::headers::HeaderLookup;

use super::VerifyError;

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
    fn a_header_sent_twice_in_differently_cased_nats_keys_is_refused() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Webhook-Signature", "v1,abc");
        assert_eq!(single(&h, "webhook-signature").unwrap(), b"v1,abc");
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
