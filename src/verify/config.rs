//! The `auth` entries of a source as the configuration file has them, and [`build`], the pure
//! step that turns them into a [`SourceAuth`]. Owns the TOML shape and its validation; must not
//! touch the file system itself (the caller passes the reader) and must never put secret
//! material into a message or a `Debug` string.
//!
//! ```toml
//! [[sources.alertmanager.auth]]
//! scheme = "bearer"
//! token_files = ["/run/secrets/alertmanager-token"]
//!
//! [[sources.billing.auth]]
//! scheme = "standard-webhooks"
//! secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]   # two while rotating
//! tolerance = "5m"
//! replay_cache_size = 100000
//! ```

use std::{
    fmt, io,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine;
use serde::Deserialize;

use super::{
    Fresh, Scheme, SourceAuth, authorization, generic_hmac, github, grafana,
    mac::{BASE64, KeyRing, MacKey},
    replay::DEFAULT_REPLAY_CACHE_SIZE,
    standard_webhooks, stripe,
    timestamp::DEFAULT_TOLERANCE,
};
use crate::secret::Secret;

/// Longest tolerance accepted: a wider window keeps replayable messages valid for longer and
/// needs a bigger cache to hold them.
const MAX_TOLERANCE: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest replay cache accepted (about 1.5 GB at the ~150 bytes an entry takes).
const MAX_REPLAY_CACHE_SIZE: usize = 10_000_000;

const SCHEMES: &str = "standard-webhooks, github, grafana, stripe, hmac, bearer, basic or none";

/// One `[[sources.<name>.auth]]` entry. `scheme` says which of the other keys apply:
///
/// | scheme | keys |
/// |---|---|
/// | `standard-webhooks` | `secrets`/`secret_files` (`whsec_` + base64, or bare base64), `tolerance`, `replay_cache_size` |
/// | `github` | `secrets`/`secret_files` |
/// | `grafana` | `secrets`/`secret_files`, `header` (default `X-Grafana-Alerting-Signature`), `timestamp_header`, and with it `tolerance`, `replay_cache_size` |
/// | `stripe` | `secrets`/`secret_files` (the `whsec_...` text as Stripe shows it), `tolerance`, `replay_cache_size` |
/// | `hmac` | `secrets`/`secret_files`, `header` (required), `encoding` (`hex`, lower-case and the default; `hex-upper`; or `base64`), `prefix`, `timestamp_header`, and with it `separator` (default `.`), `tolerance`, `replay_cache_size` |
/// | `bearer` | `tokens`/`token_files` |
/// | `basic` | `username`, `passwords`/`password_files` |
/// | `none` | nothing: accepts every message; must be the source's only entry |
///
/// Lists hold several values while a secret is rotated; any one matching is enough. Files are
/// read whole, without their trailing newline. `Debug` shows how many secrets there are, never
/// their values.
#[derive(Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[schemars(extend("enum" = ["standard-webhooks", "github", "grafana", "stripe", "hmac", "bearer", "basic", "none"]))]
    pub scheme: String,
    pub secrets: Option<Vec<String>>,
    pub secret_files: Option<Vec<PathBuf>>,
    pub tokens: Option<Vec<String>>,
    pub token_files: Option<Vec<PathBuf>>,
    pub username: Option<String>,
    pub passwords: Option<Vec<String>>,
    pub password_files: Option<Vec<PathBuf>>,
    /// The signature header (grafana, hmac).
    pub header: Option<String>,
    /// The header with the signed Unix timestamp (grafana, hmac).
    pub timestamp_header: Option<String>,
    /// `hex` (lower-case), `hex-upper` or `base64` (hmac).
    #[schemars(extend("enum" = ["hex", "hex-upper", "base64", null]))]
    pub encoding: Option<String>,
    /// Text before the encoded signature, such as `sha256=` (hmac).
    pub prefix: Option<String>,
    /// Between timestamp and body in the signed content (hmac with a timestamp header).
    pub separator: Option<String>,
    /// How far a signed timestamp may be from our clock, either way, such as `"5m"`.
    pub tolerance: Option<String>,
    /// How many accepted messages are remembered against replays.
    pub replay_cache_size: Option<usize>,
}

impl fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |v: &Option<Vec<String>>| v.as_ref().map(|v| format!("<{} redacted>", v.len()));
        f.debug_struct("RawAuth")
            .field("scheme", &self.scheme)
            .field("secrets", &count(&self.secrets))
            .field("secret_files", &self.secret_files)
            .field("tokens", &count(&self.tokens))
            .field("token_files", &self.token_files)
            .field("username", &self.username)
            .field("passwords", &count(&self.passwords))
            .field("password_files", &self.password_files)
            .field("header", &self.header)
            .field("timestamp_header", &self.timestamp_header)
            .field("encoding", &self.encoding)
            .field("prefix", &self.prefix)
            .field("separator", &self.separator)
            .field("tolerance", &self.tolerance)
            .field("replay_cache_size", &self.replay_cache_size)
            .finish()
    }
}

impl RawAuth {
    /// The optional keys this entry sets, by name.
    fn keys_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let mut add = |name, present: bool| {
            if present {
                set.push(name);
            }
        };
        add("secrets", self.secrets.is_some());
        add("secret_files", self.secret_files.is_some());
        add("tokens", self.tokens.is_some());
        add("token_files", self.token_files.is_some());
        add("username", self.username.is_some());
        add("passwords", self.passwords.is_some());
        add("password_files", self.password_files.is_some());
        add("header", self.header.is_some());
        add("timestamp_header", self.timestamp_header.is_some());
        add("encoding", self.encoding.is_some());
        add("prefix", self.prefix.is_some());
        add("separator", self.separator.is_some());
        add("tolerance", self.tolerance.is_some());
        add("replay_cache_size", self.replay_cache_size.is_some());
        set
    }
}

/// Turns a source's `auth` entries into a [`SourceAuth`], or reports every problem found, each
/// with its dotted key under `key_prefix` (such as `sources.alertmanager.auth`), e.g.
/// `sources.alertmanager.auth[0].secrets[1]`. `read_file` reads the `*_files` entries.
pub fn build(
    raw: &[RawAuth],
    key_prefix: &str,
    read_file: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<SourceAuth, Vec<(String, String)>> {
    let mut b = Builder { read_file, errors: Vec::new() };
    if raw.is_empty() {
        b.error(
            key_prefix,
            "at least one scheme is required (scheme = \"none\" accepts unauthenticated messages)",
        );
    }
    let mut schemes = Vec::new();
    let mut authorization_user: Option<usize> = None;
    for (i, entry) in raw.iter().enumerate() {
        let key = format!("{key_prefix}[{i}]");
        if entry.scheme == "none" && raw.len() > 1 {
            b.error(format!("{key}.scheme"), "`none` must be the only scheme of a source");
        }
        if matches!(entry.scheme.as_str(), "bearer" | "basic") {
            if let Some(first) = authorization_user {
                b.error(
                    format!("{key}.scheme"),
                    format!(
                        "{key_prefix}[{first}] already reads the Authorization header; a request carries only one"
                    ),
                );
            }
            authorization_user = Some(i);
        }
        if let Some(scheme) = b.scheme(&key, entry) {
            schemes.push(scheme);
        }
    }
    if b.errors.is_empty() { Ok(SourceAuth { schemes }) } else { Err(b.errors) }
}

struct Builder<'a> {
    read_file: &'a dyn Fn(&Path) -> io::Result<String>,
    errors: Vec<(String, String)>,
}

impl Builder<'_> {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push((key.into(), message.into()));
    }

    fn scheme(&mut self, key: &str, raw: &RawAuth) -> Option<Scheme> {
        let timestamped = raw.timestamp_header.is_some();
        let allowed: &[&str] = match raw.scheme.as_str() {
            "standard-webhooks" | "stripe" => &["secrets", "secret_files", "tolerance", "replay_cache_size"],
            "github" => &["secrets", "secret_files"],
            "grafana" if timestamped => {
                &["secrets", "secret_files", "header", "timestamp_header", "tolerance", "replay_cache_size"]
            }
            "grafana" => &["secrets", "secret_files", "header", "timestamp_header"],
            "hmac" if timestamped => &[
                "secrets",
                "secret_files",
                "header",
                "encoding",
                "prefix",
                "timestamp_header",
                "separator",
                "tolerance",
                "replay_cache_size",
            ],
            "hmac" => &["secrets", "secret_files", "header", "encoding", "prefix", "timestamp_header"],
            "bearer" => &["tokens", "token_files"],
            "basic" => &["username", "passwords", "password_files"],
            "none" => &[],
            other => {
                self.error(format!("{key}.scheme"), format!("unknown scheme `{other}` (expected {SCHEMES})"));
                return None;
            }
        };
        for name in raw.keys_set() {
            if !allowed.contains(&name) {
                let why = match name {
                    "tolerance" | "replay_cache_size" | "separator"
                        if matches!(raw.scheme.as_str(), "grafana" | "hmac") =>
                    {
                        "applies only with `timestamp_header`".to_owned()
                    }
                    _ => format!("does not apply to scheme `{}`", raw.scheme),
                };
                self.error(format!("{key}.{name}"), why);
            }
        }

        let scheme = match raw.scheme.as_str() {
            "standard-webhooks" => {
                let keys = self.standard_webhooks_keys(key, raw);
                Scheme::StandardWebhooks(standard_webhooks::StandardWebhooks {
                    keys,
                    fresh: self.fresh(key, raw)?,
                })
            }
            "github" => Scheme::Github(github::Github { keys: self.text_keys(key, raw) }),
            "grafana" => {
                let keys = self.text_keys(key, raw);
                let header = match &raw.header {
                    Some(h) => self.header_name(&format!("{key}.header"), h),
                    None => grafana::DEFAULT_SIGNATURE.to_owned(),
                };
                let timestamp = match &raw.timestamp_header {
                    Some(h) => {
                        let name = self.header_name(&format!("{key}.timestamp_header"), h);
                        Some((name, self.fresh(key, raw)?))
                    }
                    None => None,
                };
                Scheme::Grafana(grafana::Grafana { keys, header, timestamp })
            }
            "stripe" => {
                let keys = self.text_keys(key, raw);
                Scheme::Stripe(stripe::Stripe { keys, fresh: self.fresh(key, raw)? })
            }
            "hmac" => self.generic_hmac(key, raw)?,
            "bearer" => {
                let tokens = self.secrets(key, ("tokens", &raw.tokens), ("token_files", &raw.token_files));
                for (k, t) in &tokens {
                    if t.expose().bytes().any(|b| b.is_ascii_whitespace()) {
                        self.error(
                            k.as_str(),
                            "must not contain whitespace: it could not be sent in a header",
                        );
                    }
                }
                Scheme::Bearer(authorization::Bearer { tokens: tokens.into_iter().map(|(_, t)| t).collect() })
            }
            "basic" => {
                let username = raw.username.clone().unwrap_or_default();
                if username.is_empty() {
                    self.error(format!("{key}.username"), "required");
                } else if username.contains(':') {
                    self.error(format!("{key}.username"), "must not contain `:` (RFC 7617)");
                }
                let passwords =
                    self.secrets(key, ("passwords", &raw.passwords), ("password_files", &raw.password_files));
                Scheme::Basic(authorization::Basic {
                    username,
                    passwords: passwords.into_iter().map(|(_, p)| p).collect(),
                })
            }
            _ => Scheme::None,
        };
        Some(scheme)
    }

    fn generic_hmac(&mut self, key: &str, raw: &RawAuth) -> Option<Scheme> {
        let keys = self.text_keys(key, raw);
        let header = match &raw.header {
            Some(h) => self.header_name(&format!("{key}.header"), h),
            None => {
                self.error(format!("{key}.header"), "required: the header that carries the signature");
                String::new()
            }
        };
        let encoding = match raw.encoding.as_deref() {
            None | Some("hex") => generic_hmac::Encoding::Hex,
            Some("hex-upper") => generic_hmac::Encoding::HexUpper,
            Some("base64") => generic_hmac::Encoding::Base64,
            Some(other) => {
                self.error(
                    format!("{key}.encoding"),
                    format!("unknown encoding `{other}` (expected hex, hex-upper or base64)"),
                );
                generic_hmac::Encoding::Hex
            }
        };
        let timestamp = match &raw.timestamp_header {
            Some(h) => {
                let name = self.header_name(&format!("{key}.timestamp_header"), h);
                let separator = raw.separator.clone().unwrap_or_else(|| ".".to_owned());
                Some((name, separator, self.fresh(key, raw)?))
            }
            None => None,
        };
        Some(Scheme::Hmac(generic_hmac::GenericHmac {
            keys,
            header,
            encoding,
            prefix: raw.prefix.clone().unwrap_or_default(),
            timestamp,
        }))
    }

    /// A header name as configured; kept as written (lookups ignore case).
    fn header_name(&mut self, key: &str, name: &str) -> String {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.error(key, format!("`{name}` is not a valid header name"));
        }
        name.to_owned()
    }

    fn fresh(&mut self, key: &str, raw: &RawAuth) -> Option<Fresh> {
        let tolerance = match raw.tolerance.as_deref() {
            None => DEFAULT_TOLERANCE,
            Some(text) => match humantime::parse_duration(text.trim()) {
                Ok(d) if d.subsec_nanos() != 0 => {
                    self.error(format!("{key}.tolerance"), "must be whole seconds, as timestamps are");
                    return None;
                }
                Ok(d) if d.is_zero() || d > MAX_TOLERANCE => {
                    self.error(format!("{key}.tolerance"), "must be between 1s and 24h");
                    return None;
                }
                Ok(d) => d,
                Err(e) => {
                    self.error(
                        format!("{key}.tolerance"),
                        format!("`{text}` is not a duration like \"5m\": {e}"),
                    );
                    return None;
                }
            },
        };
        let size = raw.replay_cache_size.unwrap_or(DEFAULT_REPLAY_CACHE_SIZE);
        if size == 0 || size > MAX_REPLAY_CACHE_SIZE {
            self.error(
                format!("{key}.replay_cache_size"),
                format!("must be between 1 and {MAX_REPLAY_CACHE_SIZE}"),
            );
            return None;
        }
        Some(Fresh::new(tolerance.as_secs(), size))
    }

    /// Keys that are the secret's text as is (GitHub, Grafana, Stripe, generic HMAC).
    fn text_keys(&mut self, key: &str, raw: &RawAuth) -> KeyRing {
        let secrets = self.secrets(key, ("secrets", &raw.secrets), ("secret_files", &raw.secret_files));
        KeyRing::new(secrets.iter().map(|(_, s)| MacKey::from_secret(s)).collect())
    }

    /// Standard Webhooks keys: base64 after an optional `whsec_` prefix.
    fn standard_webhooks_keys(&mut self, key: &str, raw: &RawAuth) -> KeyRing {
        let secrets = self.secrets(key, ("secrets", &raw.secrets), ("secret_files", &raw.secret_files));
        let mut keys = Vec::new();
        for (k, secret) in secrets {
            let text = secret.expose();
            let encoded = text.strip_prefix("whsec_").unwrap_or(text);
            // The decoder's own error names the offending byte and its offset, which would
            // leak part of the secret: report a fixed message instead.
            match BASE64.decode(encoded) {
                Ok(bytes) if !bytes.is_empty() => keys.push(MacKey::from_bytes(&bytes)),
                _ => self.error(k, "not base64 (after an optional `whsec_` prefix)"),
            }
        }
        KeyRing::new(keys)
    }

    /// The values of an inline list and a file list together, each with the key it came from.
    /// At least one is required; none may be empty.
    fn secrets(
        &mut self,
        key: &str,
        (inline_name, inline): (&str, &Option<Vec<String>>),
        (files_name, files): (&str, &Option<Vec<PathBuf>>),
    ) -> Vec<(String, Secret)> {
        let mut out = Vec::new();
        for (j, value) in inline.iter().flatten().enumerate() {
            out.push((format!("{key}.{inline_name}[{j}]"), Secret::new(value.as_str())));
        }
        for (j, path) in files.iter().flatten().enumerate() {
            let item_key = format!("{key}.{files_name}[{j}]");
            match (self.read_file)(path) {
                // Secret files usually end with a newline the value does not include.
                Ok(v) => out.push((item_key, Secret::new(v.trim_end_matches(['\r', '\n'])))),
                Err(e) => self.error(item_key, format!("cannot read {}: {e}", path.display())),
            }
        }
        let empty: Vec<String> =
            out.iter().filter(|(_, s)| s.expose().is_empty()).map(|(k, _)| k.clone()).collect();
        for k in empty {
            self.error(k, "must not be empty");
        }
        let listed = inline.as_ref().map_or(0, Vec::len) + files.as_ref().map_or(0, Vec::len);
        if listed == 0 {
            self.error(
                format!("{key}.{inline_name}"),
                format!("at least one is required (`{inline_name}` or `{files_name}`)"),
            );
        }
        out.retain(|(_, s)| !s.expose().is_empty());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_files(_: &Path) -> io::Result<String> {
        Err(io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn parse(toml_text: &str) -> Vec<RawAuth> {
        #[derive(Deserialize)]
        struct File {
            auth: Vec<RawAuth>,
        }
        toml::from_str::<File>(toml_text).unwrap().auth
    }

    fn errors(toml_text: &str) -> Vec<(String, String)> {
        build(&parse(toml_text), "sources.s.auth", &no_files).unwrap_err()
    }

    fn keys(errors: &[(String, String)]) -> Vec<&str> {
        errors.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn every_scheme_builds_from_toml() {
        let auth = build(
            &parse(
                r#"
                [[auth]]
                scheme = "standard-webhooks"
                secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
                tolerance = "2m"
                replay_cache_size = 10
                [[auth]]
                scheme = "github"
                secrets = ["a"]
                [[auth]]
                scheme = "grafana"
                secrets = ["b"]
                timestamp_header = "X-Grafana-Alerting-Timestamp"
                [[auth]]
                scheme = "stripe"
                secrets = ["whsec_c"]
                [[auth]]
                scheme = "hmac"
                header = "X-Signature"
                encoding = "base64"
                prefix = "sha256="
                timestamp_header = "X-Timestamp"
                separator = ":"
                secret_files = ["/s"]
                [[auth]]
                scheme = "basic"
                username = "am"
                passwords = ["p"]
                "#,
            ),
            "sources.s.auth",
            &|_| Ok("from-file\n".into()),
        )
        .unwrap();
        assert_eq!(
            auth.scheme_names(),
            ["standard-webhooks", "github", "grafana", "stripe", "hmac", "basic"]
        );
        assert!(!auth.is_unauthenticated());
    }

    #[test]
    fn unknown_keys_are_refused_by_serde() {
        let err = toml::from_str::<RawAuth>("scheme = \"github\"\nsecret = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `secret`"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let errs = errors(
            r#"
            [[auth]]
            scheme = "standard-webhooks"
            secrets = ["whsec_not*base64!", ""]
            tolerance = "5 fortnights"
            [[auth]]
            scheme = "github"
            secrets = []
            header = "X-Other"
            [[auth]]
            scheme = "sha1"
            [[auth]]
            scheme = "hmac"
            secrets = ["x"]
            encoding = "rot13"
            separator = ":"
            [[auth]]
            scheme = "grafana"
            secrets = ["x"]
            header = "bad header"
            tolerance = "1m"
            "#,
        );
        assert_eq!(
            keys(&errs),
            [
                "sources.s.auth[0].secrets[1]",
                "sources.s.auth[0].secrets[0]",
                "sources.s.auth[0].tolerance",
                "sources.s.auth[1].header",
                "sources.s.auth[1].secrets",
                "sources.s.auth[2].scheme",
                "sources.s.auth[3].separator",
                "sources.s.auth[3].header",
                "sources.s.auth[3].encoding",
                "sources.s.auth[4].tolerance",
                "sources.s.auth[4].header",
            ],
            "{errs:#?}"
        );
        assert!(errs[5].1.contains("unknown scheme `sha1`"));
        assert!(errs[9].1.contains("only with `timestamp_header`"));
    }

    #[test]
    fn no_message_repeats_a_secret() {
        let errs = errors(
            r#"
            [[auth]]
            scheme = "standard-webhooks"
            secrets = ["whsec_sup3r-s3cret!"]
            "#,
        );
        assert_eq!(keys(&errs), ["sources.s.auth[0].secrets[0]"]);
        for (k, m) in &errs {
            assert!(!k.contains("s3cret") && !m.contains("s3cret") && !m.contains('-'), "{m}");
        }
    }

    #[test]
    fn an_empty_list_and_mixed_authorization_schemes_are_refused() {
        let errs = build(&[], "sources.s.auth", &no_files).unwrap_err();
        assert_eq!(keys(&errs), ["sources.s.auth"]);
        let errs = errors(
            r#"
            [[auth]]
            scheme = "bearer"
            tokens = ["t"]
            [[auth]]
            scheme = "basic"
            username = "a:b"
            passwords = ["p"]
            [[auth]]
            scheme = "none"
            "#,
        );
        assert_eq!(
            keys(&errs),
            ["sources.s.auth[1].scheme", "sources.s.auth[1].username", "sources.s.auth[2].scheme"],
            "{errs:#?}"
        );
    }

    #[test]
    fn secret_files_are_read_and_trimmed_and_their_errors_keyed() {
        let raw = parse(
            r#"
            [[auth]]
            scheme = "bearer"
            tokens = ["inline"]
            token_files = ["/ok", "/missing", "/blank"]
            "#,
        );
        let read = |p: &Path| match p.to_str() {
            Some("/ok") => Ok("tok\r\n".to_owned()),
            Some("/blank") => Ok("\n".to_owned()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        };
        let errs = build(&raw, "sources.s.auth", &read).unwrap_err();
        assert_eq!(keys(&errs), ["sources.s.auth[0].token_files[1]", "sources.s.auth[0].token_files[2]"]);
        assert!(errs[0].1.contains("/missing"));
    }

    #[test]
    fn tolerance_and_cache_size_are_bounded() {
        for (tol, ok) in [("1s", true), ("24h", true), ("0s", false), ("25h", false), ("1500ms", false)] {
            let text = format!("[[auth]]\nscheme = \"stripe\"\nsecrets = [\"s\"]\ntolerance = \"{tol}\"\n");
            assert_eq!(build(&parse(&text), "k", &no_files).is_ok(), ok, "{tol}");
        }
        let text = "[[auth]]\nscheme = \"stripe\"\nsecrets = [\"s\"]\nreplay_cache_size = 0\n";
        assert_eq!(keys(&build(&parse(text), "k", &no_files).unwrap_err()), ["k[0].replay_cache_size"]);
    }

    #[test]
    fn none_stands_alone_and_says_so() {
        let auth = build(&parse("[[auth]]\nscheme = \"none\"\n"), "k", &no_files).unwrap();
        assert!(auth.is_unauthenticated());
        let errs =
            build(&parse("[[auth]]\nscheme = \"none\"\ntokens = [\"x\"]\n"), "k", &no_files).unwrap_err();
        assert_eq!(keys(&errs), ["k[0].tokens"]);
    }

    #[test]
    fn raw_debug_counts_secrets_without_showing_them() {
        let raw = parse(
            r#"
            [[auth]]
            scheme = "basic"
            username = "am"
            passwords = ["pa55word-one", "pa55word-two"]
            "#,
        );
        let shown = format!("{raw:?}");
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(shown.contains("<2 redacted>"), "{shown}");
    }
}
