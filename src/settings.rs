//! What every component's configuration check shares: the list of problems it reports (each
//! with the dotted key that has it), the reader of secret files, and the checks more than one
//! component makes (positive numbers, socket addresses, secrets given inline or as a file,
//! URLs without credentials).
//!
//! Each component owns its table's shape and turns it into its own settings with these (the
//! SCWM client builds its `ClientSettings` from `[scwm]`, the HTTP server its settings from
//! `[server]`, ...); `crate::config` only loads the file, applies the environment and gathers
//! the tables. Nothing here performs I/O except through the reader it is given.

use std::{io, net::SocketAddr, path::Path};

use reqwest::Url;

use crate::secret::Secret;

/// Reads a secret file (a mounted Kubernetes Secret); tests pass their own.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> io::Result<String>;

/// Every problem found so far, and how secret files are read.
pub struct Problems<'a> {
    read_file: ReadFile<'a>,
    found: Vec<(String, String)>,
}

impl<'a> Problems<'a> {
    pub fn new(read_file: ReadFile<'a>) -> Self {
        Self { read_file, found: Vec::new() }
    }

    pub fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.found.push((key.into(), message.into()));
    }

    /// Every `(dotted key, message)` of `problems`, as reported by another component's check.
    pub fn extend(&mut self, problems: impl IntoIterator<Item = (String, String)>) {
        self.found.extend(problems);
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// How many problems were found so far: a component compares before and after its check.
    pub fn count(&self) -> usize {
        self.found.len()
    }

    pub fn into_vec(self) -> Vec<(String, String)> {
        self.found
    }

    pub fn read_file(&self) -> ReadFile<'a> {
        self.read_file
    }

    /// `v`, with a problem reported when it is not greater than zero.
    pub fn positive<T: PartialOrd + Default + Copy>(&mut self, key: &str, v: T) -> T {
        if v <= T::default() {
            self.error(key, "must be greater than zero");
        }
        v
    }

    pub fn socket_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(key, format!("`{value}` is not an address like 0.0.0.0:8080"));
                None
            }
        }
    }

    /// A secret given inline or as a file path (a mounted Kubernetes Secret); not both. The
    /// file's trailing newline is not part of the secret.
    pub fn secret(&mut self, key: &str, inline: Option<String>, file: Option<&Path>) -> Option<Secret> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.error(key, format!("set either `{key}` or `{key}_file`, not both"));
                None
            }
            (Some(v), None) => Some(Secret::new(v)),
            (None, Some(path)) => match (self.read_file)(path) {
                // Secret files usually end with a newline the value does not include.
                Ok(v) => Some(Secret::new(v.trim_end_matches(['\r', '\n']))),
                Err(e) => {
                    self.error(format!("{key}_file"), format!("cannot read {}: {e}", path.display()));
                    None
                }
            },
            (None, None) => None,
        }
    }
}

/// Whether a URL carries a user name or password. Credentials in a URL would be shown wherever
/// the URL is (`Debug` of the config, client errors, logs), so configurations refuse them.
pub fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// `value` for an error message, with anything before an `@` in its authority left out.
pub fn without_userinfo(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else { return value.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://…{}", &rest[at..]),
        None => value.to_owned(),
    }
}
