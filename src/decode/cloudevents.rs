//! CloudEvents 1.0 over HTTP and NATS, in structured and binary content mode, to a
//! [`CloudEvent`]; then its `data` to what the source is configured to carry inside
//! ([`InnerKind`]): an Alertmanager or Grafana notification, or a native command whose operation
//! is the last `.`-segment of the event `type` (`com.example.incident.close` → close).
//!
//! How the mode is chosen, the same way for both transports:
//! - `Content-Type: application/cloudevents+json` (or bare `application/cloudevents`, as the NATS
//!   binding allows) → structured: the body is the JSON event format, with `data` or
//!   `data_base64`.
//! - otherwise, a `ce-specversion` header → binary: attributes in `ce-*` headers, the body is the
//!   data, `datacontenttype` from `Content-Type` (HTTP) or `ce-datacontenttype` (NATS).
//! - otherwise → structured: a NATS message without headers can only be structured, and a plain
//!   `application/json` POST of a structured event is common enough to accept.
//!
//! Binary header values are decoded as both protocol bindings say: unquote an RFC 7230 quoted
//! string if the value is one, then one round of percent-decoding, refusing invalid UTF-8.
//! Batches (`application/cloudevents-batch+json`) and non-JSON event formats are refused with
//! 415. Nothing here performs I/O or panics on input.

use std::{collections::BTreeMap, fmt, str::FromStr};

use base64::{
    Engine,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use bytes::Bytes;
use serde_json::value::RawValue;

use super::{
    DecodeError, alertmanager, grafana,
    headers::HeaderLookup,
    native::{self, NativeCommand},
};
use crate::{alert::Notification, incident::Operation};

/// The only CloudEvents version this decoder reads.
pub const SPEC_VERSION: &str = "1.0";

/// One CloudEvent, whichever mode and transport it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    pub type_: String,
    pub subject: Option<String>,
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    /// Every other attribute, as its canonical string (numbers and booleans of the structured
    /// mode are written as text, as binary mode would carry them).
    pub extensions: BTreeMap<String, String>,
    /// The data as bytes: the JSON text of a structured `data` member (byte for byte as sent),
    /// the decoded `data_base64`, or the whole body in binary mode. Empty when the event has none.
    pub data: Bytes,
}

/// What a CloudEvents source carries in `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InnerKind {
    Alertmanager,
    Grafana,
    Native,
}

impl InnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InnerKind::Alertmanager => "alertmanager",
            InnerKind::Grafana => "grafana",
            InnerKind::Native => "native",
        }
    }
}

impl fmt::Display for InnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the inner kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown inner kind `{0}` (expected alertmanager, grafana or native)")]
pub struct UnknownInnerKind(pub String);

impl FromStr for InnerKind {
    type Err = UnknownInnerKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alertmanager" => Ok(InnerKind::Alertmanager),
            "grafana" => Ok(InnerKind::Grafana),
            "native" => Ok(InnerKind::Native),
            _ => Err(UnknownInnerKind(s.to_owned())),
        }
    }
}

/// A CloudEvent's data, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Inner {
    Notification(Notification),
    Native(NativeCommand),
}

/// Decodes one CloudEvent from a message's headers and body (see the module doc for how the
/// content mode is chosen).
pub fn decode<H: HeaderLookup + ?Sized>(headers: &H, body: Bytes) -> Result<CloudEvent, DecodeError> {
    let content_type = match headers.get_all("content-type").first() {
        Some(v) => Some(header_text("Content-Type", v)?.trim().to_owned()),
        None => None,
    };
    let media = content_type.as_deref().map(media_type);
    match media.as_deref() {
        Some("application/cloudevents-batch+json") => Err(DecodeError::UnsupportedMediaType(
            "CloudEvents batches (application/cloudevents-batch+json) are not accepted; send one event per message"
                .into(),
        )),
        Some("application/cloudevents+json" | "application/cloudevents") => structured(&body),
        Some(m) if m.starts_with("application/cloudevents") => Err(DecodeError::UnsupportedMediaType(format!(
            "event format `{m}` is not supported; use application/cloudevents+json"
        ))),
        _ if !headers.get_all("ce-specversion").is_empty() => binary(headers, content_type, body),
        _ => structured(&body),
    }
}

impl CloudEvent {
    /// The operation a native command event asks for: the last `.`-segment of `type`.
    pub fn native_operation(&self) -> Result<Operation, DecodeError> {
        let last = self.type_.rsplit('.').next().unwrap_or_default();
        last.parse().map_err(|_| {
            DecodeError::Invalid(format!(
                "event type `{}` must end in an operation (.add, .edit, .copy, .close, .reopen, .submit or .read)",
                self.type_
            ))
        })
    }

    /// Decodes `data` as the configured inner kind. `data` must be JSON: a `datacontenttype`
    /// that says otherwise is refused before parsing.
    pub fn decode_data(&self, kind: InnerKind) -> Result<Inner, DecodeError> {
        if let Some(ct) = &self.datacontenttype
            && !is_json_media(ct)
        {
            return Err(DecodeError::UnsupportedMediaType(format!(
                "event data of type `{ct}` is not JSON; {kind} data must be application/json"
            )));
        }
        match kind {
            InnerKind::Alertmanager => alertmanager::decode(&self.data).map(Inner::Notification),
            InnerKind::Grafana => grafana::decode(&self.data).map(Inner::Notification),
            InnerKind::Native => native::decode(self.native_operation()?, &self.data).map(Inner::Native),
        }
    }
}

fn binary<H: HeaderLookup + ?Sized>(
    headers: &H,
    content_type: Option<String>,
    body: Bytes,
) -> Result<CloudEvent, DecodeError> {
    let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
    headers.each(&mut |name, value| {
        if name.len() > 3 && name.is_char_boundary(3) && name[..3].eq_ignore_ascii_case("ce-") {
            raw.push((name[3..].to_ascii_lowercase(), value.to_vec()));
        }
    });
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in raw {
        let header = format!("ce-{name}");
        let value = header_attribute(&header, &value)?;
        if attrs.insert(name, value).is_some() {
            return Err(DecodeError::Invalid(format!("header `{header}` is given more than once")));
        }
    }
    let mut take = |name: &str| attrs.remove(name);
    let specversion = take("specversion");
    let id = take("id");
    let source = take("source");
    let type_ = take("type");
    let subject = take("subject");
    let time = take("time");
    let dataschema = take("dataschema");
    let ce_content_type = take("datacontenttype");
    let event = CloudEvent {
        specversion: required(specversion, "ce-specversion")?,
        id: required(id, "ce-id")?,
        source: required(source, "ce-source")?,
        type_: required(type_, "ce-type")?,
        subject,
        time,
        // HTTP carries it as Content-Type; the NATS binding as ce-datacontenttype.
        datacontenttype: content_type.filter(|c| !c.is_empty()).or(ce_content_type),
        dataschema,
        extensions: attrs,
        data: body,
    };
    check_version(&event.specversion, "ce-specversion")?;
    Ok(event)
}

fn structured(body: &[u8]) -> Result<CloudEvent, DecodeError> {
    let value: Box<RawValue> =
        serde_json::from_slice(body).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let mut members: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(value.get()).map_err(|_| DecodeError::NotAnObject)?;
    let mut string = |name: &str| -> Result<Option<String>, DecodeError> {
        match members.remove(name) {
            None => Ok(None),
            Some(raw) => match serde_json::from_str::<Option<String>>(raw.get()) {
                Ok(v) => Ok(v),
                Err(_) => Err(DecodeError::WrongTypeAt { path: name.to_owned(), expected: "a string" }),
            },
        }
    };
    let specversion = string("specversion")?;
    let id = string("id")?;
    let source = string("source")?;
    let type_ = string("type")?;
    let subject = string("subject")?;
    let time = string("time")?;
    let datacontenttype = string("datacontenttype")?;
    let dataschema = string("dataschema")?;
    let data_base64 = string("data_base64")?;
    let data = members.remove("data").filter(|raw| raw.get() != "null");
    let specversion = required(specversion, "specversion")?;
    check_version(&specversion, "specversion")?;
    let data = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(DecodeError::Invalid("an event must not have both `data` and `data_base64`".into()));
        }
        (None, Some(b64)) => Bytes::from(
            BASE64
                .decode(b64.trim())
                .map_err(|e| DecodeError::Invalid(format!("`data_base64` is not base64: {e}")))?,
        ),
        (Some(raw), None) => structured_data(&raw, datacontenttype.as_deref()),
        (None, None) => Bytes::new(),
    };
    let mut extensions = BTreeMap::new();
    for (name, raw) in members {
        if let Some(text) = extension_text(&name, &raw)? {
            extensions.insert(name, text);
        }
    }
    Ok(CloudEvent {
        specversion,
        id: required(id, "id")?,
        source: required(source, "source")?,
        type_: required(type_, "type")?,
        subject,
        time,
        datacontenttype,
        dataschema,
        extensions,
        data,
    })
}

/// The JSON event format: with a JSON content type (or none, which means JSON) `data` is a JSON
/// value and its text is the data; otherwise a string member is the data itself.
fn structured_data(raw: &RawValue, content_type: Option<&str>) -> Bytes {
    if content_type.is_none_or(is_json_media) {
        return Bytes::copy_from_slice(raw.get().as_bytes());
    }
    match serde_json::from_str::<String>(raw.get()) {
        Ok(s) => Bytes::from(s.into_bytes()),
        Err(_) => Bytes::copy_from_slice(raw.get().as_bytes()),
    }
}

/// An extension's canonical string: strings as they are, numbers and booleans as their JSON
/// text. `null` means absent. Objects and arrays are not CloudEvents types.
fn extension_text(name: &str, raw: &RawValue) -> Result<Option<String>, DecodeError> {
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(serde_json::Value::String(s)) => Ok(Some(s)),
        Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(Some(v.to_string())),
        _ => Err(DecodeError::WrongTypeAt { path: name.to_owned(), expected: "a string, number or boolean" }),
    }
}

fn required(value: Option<String>, name: &str) -> Result<String, DecodeError> {
    match value {
        None => Err(DecodeError::MissingAt(name.to_owned())),
        Some(v) if v.is_empty() => {
            Err(DecodeError::WrongTypeAt { path: name.to_owned(), expected: "a non-empty string" })
        }
        Some(v) => Ok(v),
    }
}

fn check_version(v: &str, name: &str) -> Result<(), DecodeError> {
    if v == SPEC_VERSION {
        Ok(())
    } else {
        Err(DecodeError::Invalid(format!("`{name}` must be \"{SPEC_VERSION}\", not \"{v}\"")))
    }
}

/// A header value as text; header values are ASCII, anything else is refused.
fn header_text(name: &str, value: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(value.to_vec())
        .map_err(|_| DecodeError::Invalid(format!("header `{name}` is not valid text")))
}

/// A `ce-*` header value as the bindings define it: an optional quoted string, then one round of
/// percent-decoding that must yield UTF-8.
fn header_attribute(name: &str, value: &[u8]) -> Result<String, DecodeError> {
    let text = header_text(name, value)?;
    let text = text.trim_matches([' ', '\t']);
    let unquoted = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => unquote(inner)
            .ok_or_else(|| DecodeError::Invalid(format!("header `{name}` has a malformed quoted string")))?,
        None => text.to_owned(),
    };
    percent_encoding::percent_decode_str(&unquoted)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| DecodeError::Invalid(format!("header `{name}` percent-decodes to invalid UTF-8")))
}

/// The inside of an RFC 7230 quoted-string: `\x` stands for `x`; a bare `"` cannot occur.
fn unquote(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// `type/subtype` of a Content-Type, lowercased, without parameters.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

fn is_json_media(content_type: &str) -> bool {
    let m = media_type(content_type);
    m == "application/json" || m == "text/json" || m.ends_with("+json")
}

/// Standard alphabet; padding optional, as senders differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::headers::NoHeaders;

    const AM: &str = r#"{"status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"}}]}"#;

    fn structured_body(extra: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"specversion":"1.0","id":"e-1","source":"/am","type":"io.prometheus.alert"{extra}}}"#
        ))
    }

    fn ce_json() -> Vec<(&'static str, &'static str)> {
        vec![("Content-Type", "application/cloudevents+json; charset=utf-8")]
    }

    #[test]
    fn http_structured_with_json_data() {
        let ev = decode(
            ce_json().as_slice(),
            structured_body(&format!(r#","data":{AM},"subject":"s","tenant":"t""#)),
        )
        .unwrap();
        assert_eq!(
            (ev.id.as_str(), ev.source.as_str(), ev.type_.as_str()),
            ("e-1", "/am", "io.prometheus.alert")
        );
        assert_eq!(ev.subject.as_deref(), Some("s"));
        assert_eq!(ev.extensions["tenant"], "t");
        assert_eq!(ev.data, Bytes::from(AM), "the data member's text, byte for byte");
        let Inner::Notification(n) = ev.decode_data(InnerKind::Alertmanager).unwrap() else { panic!() };
        assert_eq!(n.alerts[0].labels["alertname"], "A");
    }

    #[test]
    fn structured_with_data_base64() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(AM);
        let ev = decode(
            ce_json().as_slice(),
            structured_body(&format!(r#","datacontenttype":"application/json","data_base64":"{b64}""#)),
        )
        .unwrap();
        assert_eq!(ev.data, Bytes::from(AM));
        assert!(matches!(ev.decode_data(InnerKind::Alertmanager), Ok(Inner::Notification(_))));
        let unpadded = b64.trim_end_matches('=');
        let ev = decode(ce_json().as_slice(), structured_body(&format!(r#","data_base64":"{unpadded}""#)))
            .unwrap();
        assert_eq!(ev.data, Bytes::from(AM));
    }

    #[test]
    fn structured_text_data_is_the_string_itself() {
        let ev = decode(
            ce_json().as_slice(),
            structured_body(r#","datacontenttype":"text/plain","data":"hi \"x\"""#),
        )
        .unwrap();
        assert_eq!(ev.data, Bytes::from("hi \"x\""));
        assert!(matches!(ev.decode_data(InnerKind::Grafana), Err(DecodeError::UnsupportedMediaType(_))));
    }

    #[test]
    fn structured_extensions_take_canonical_strings() {
        let ev = decode(ce_json().as_slice(), structured_body(r#","n":42,"b":true,"z":null"#)).unwrap();
        assert_eq!(ev.extensions["n"], "42");
        assert_eq!(ev.extensions["b"], "true");
        assert!(!ev.extensions.contains_key("z"));
        assert_eq!(
            decode(ce_json().as_slice(), structured_body(r#","o":{}"#)).unwrap_err(),
            DecodeError::WrongTypeAt { path: "o".into(), expected: "a string, number or boolean" }
        );
    }

    #[test]
    fn nats_structured_has_no_headers_at_all() {
        let ev = decode(&NoHeaders, structured_body(&format!(r#","data":{AM}"#))).unwrap();
        assert_eq!(ev.data, Bytes::from(AM));
        let mut h = async_nats::HeaderMap::new();
        h.insert("content-type", "application/cloudevents");
        assert!(decode(&Some(h), structured_body("")).is_ok());
    }

    #[test]
    fn http_binary_reads_ce_headers_and_content_type() {
        let mut h = http::HeaderMap::new();
        h.insert("ce-specversion", http::HeaderValue::from_static("1.0"));
        h.insert("ce-id", http::HeaderValue::from_static("b-1"));
        h.insert("ce-source", http::HeaderValue::from_static("/am/%E2%82%AC"));
        h.insert("ce-type", http::HeaderValue::from_static("io.prometheus.alert"));
        h.insert("ce-time", http::HeaderValue::from_static("2026-11-28T12:41:49Z"));
        h.insert("ce-traceparent", http::HeaderValue::from_static("00-abc-01"));
        h.insert("content-type", http::HeaderValue::from_static("application/json"));
        let ev = decode(&h, Bytes::from(AM)).unwrap();
        assert_eq!(ev.source, "/am/€");
        assert_eq!(ev.time.as_deref(), Some("2026-11-28T12:41:49Z"));
        assert_eq!(ev.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(ev.extensions.get("traceparent").map(String::as_str), Some("00-abc-01"));
        assert_eq!(ev.data, Bytes::from(AM));
        assert!(matches!(ev.decode_data(InnerKind::Alertmanager), Ok(Inner::Notification(_))));
    }

    #[test]
    fn nats_binary_percent_decodes_and_unquotes_values() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("ce-specversion", "1.0");
        h.insert("ce-id", "n-1");
        h.insert("ce-source", "Euro%20%e2%82%ac%20%F0%9F%98%80");
        h.insert("ce-type", "com.example.incident.close");
        h.insert("ce-subject", r#""quoted \"value\" %41""#);
        h.insert("ce-datacontenttype", "application/json");
        let ev = decode(&h, Bytes::from_static(br#"{"id":"IT-1","resolution":"fixed"}"#)).unwrap();
        assert_eq!(ev.source, "Euro € 😀");
        assert_eq!(ev.subject.as_deref(), Some("quoted \"value\" A"));
        assert_eq!(ev.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(ev.native_operation(), Ok(Operation::Close));
        let Inner::Native(cmd) = ev.decode_data(InnerKind::Native).unwrap() else { panic!() };
        assert_eq!(cmd.command.op, Operation::Close);
        assert_eq!(cmd.command.payload["resolution"], "fixed");
    }

    #[test]
    fn invalid_utf8_after_percent_decoding_is_refused() {
        let h = [("ce-specversion", "1.0"), ("ce-id", "%C0%A0"), ("ce-source", "s"), ("ce-type", "t")];
        assert_eq!(
            decode(h.as_slice(), Bytes::new()).unwrap_err(),
            DecodeError::Invalid("header `ce-id` percent-decodes to invalid UTF-8".into())
        );
    }

    #[test]
    fn missing_required_attributes_are_named() {
        let h = [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "t")];
        assert_eq!(
            decode(h.as_slice(), Bytes::new()).unwrap_err(),
            DecodeError::MissingAt("ce-source".into())
        );
        for (body, want) in [
            (r#"{"id":"1","source":"s","type":"t"}"#, DecodeError::MissingAt("specversion".into())),
            (r#"{"specversion":"1.0","source":"s","type":"t"}"#, DecodeError::MissingAt("id".into())),
            (r#"{"specversion":"1.0","id":"1","type":"t"}"#, DecodeError::MissingAt("source".into())),
            (r#"{"specversion":"1.0","id":"1","source":"s"}"#, DecodeError::MissingAt("type".into())),
            (
                r#"{"specversion":"1.0","id":"","source":"s","type":"t"}"#,
                DecodeError::WrongTypeAt { path: "id".into(), expected: "a non-empty string" },
            ),
            (
                r#"{"specversion":"1.0","id":7,"source":"s","type":"t"}"#,
                DecodeError::WrongTypeAt { path: "id".into(), expected: "a string" },
            ),
            (
                r#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#,
                DecodeError::Invalid("`specversion` must be \"1.0\", not \"0.3\"".into()),
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":{},"data_base64":"e30="}"#,
                DecodeError::Invalid("an event must not have both `data` and `data_base64`".into()),
            ),
            (r#"[]"#, DecodeError::NotAnObject),
        ] {
            assert_eq!(decode(ce_json().as_slice(), Bytes::from(body)).unwrap_err(), want, "{body}");
        }
        assert!(matches!(decode(ce_json().as_slice(), Bytes::from("{")), Err(DecodeError::NotJson(_))));
        let e = decode(ce_json().as_slice(), Bytes::from(r#"{"specversion":"1.0","source":"s","type":"t"}"#))
            .unwrap_err();
        assert_eq!(e.to_string(), "`id` is required");
    }

    #[test]
    fn duplicate_binary_headers_are_ambiguous() {
        let h =
            [("ce-specversion", "1.0"), ("ce-id", "1"), ("CE-ID", "2"), ("ce-source", "s"), ("ce-type", "t")];
        assert_eq!(
            decode(h.as_slice(), Bytes::new()).unwrap_err(),
            DecodeError::Invalid("header `ce-id` is given more than once".into())
        );
    }

    #[test]
    fn batches_and_other_formats_are_unsupported() {
        for ct in ["application/cloudevents-batch+json", "application/cloudevents+avro"] {
            let e = decode([("content-type", ct)].as_slice(), Bytes::from("[]")).unwrap_err();
            assert!(matches!(e, DecodeError::UnsupportedMediaType(_)), "{ct}: {e:?}");
        }
    }

    #[test]
    fn native_operation_comes_from_the_type() {
        let mut ev = decode(ce_json().as_slice(), structured_body("")).unwrap();
        ev.type_ = "com.example.incident.reopen".into();
        assert_eq!(ev.native_operation(), Ok(Operation::Reopen));
        ev.type_ = "submit".into();
        assert_eq!(ev.native_operation(), Ok(Operation::Submit));
        ev.type_ = "com.example.incident.delete".into();
        assert!(matches!(ev.native_operation(), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn inner_kinds_parse_from_their_names() {
        for k in [InnerKind::Alertmanager, InnerKind::Grafana, InnerKind::Native] {
            assert_eq!(k.as_str().parse::<InnerKind>(), Ok(k));
        }
        assert!("cloudevents".parse::<InnerKind>().is_err());
    }
}
