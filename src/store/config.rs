//! The `[store]` table: its serde shape ([`RawStore`]) and the pure validation into a
//! [`StoreConfig`]. No I/O here: whether the path is writable or the bucket exists is found out
//! when the store is opened.
//!
//! ```toml
//! [store]
//! backend = "embedded"            # or "jetstream-kv" (needs a [nats] section)
//! path = "incident-bridge.redb"   # embedded: the redb file; relative to the working directory
//! temporary = false               # embedded: a fresh file in the temp dir, removed at exit (trials)
//! durability = "power-loss"       # embedded: fsync every commit; or "process-crash" (see below)
//! sync_interval = "1s"            # embedded, process-crash: fsync at most this often
//! cache_bytes = 8388608           # embedded: redb's page cache (8 MiB)
//! bucket = "incident-bridge"      # jetstream-kv: the KV bucket
//! create_bucket = true            # jetstream-kv: create the bucket when missing
//! kv_replicas = 1                 # jetstream-kv: copies of the bucket when creating it (1-5)
//! timeout = "5s"                  # bound on every store call
//! claim_ttl = "30s"               # how long a claim on a key holds before others may take over
//! on_scwm_change = "refuse"       # a store written against another SCWM: "refuse" or "adopt"
//! ```
//!
//! `durability` is the one trade between speed and safety the store offers. `power-loss`
//! (the default): a write is answered once its commit is on the disk (fsync), so nothing
//! answered is lost to a crash of the process, the kernel or the machine. `process-crash`: a
//! write is answered once its commit is in the kernel's page cache, which a crash of the
//! process (kill -9, OOM kill, panic) does not lose; the disk is synced at most every
//! `sync_interval`, at a clean close, and by the kernel's own writeback, so a power loss or
//! kernel crash can lose what was committed since (the file comes back as it was at an earlier
//! commit, or does not open: see the README).
//!
//! The default path is relative so that a local quickstart works on a fresh machine without a
//! system directory; deployments set an absolute path on a persistent volume (the Helm chart
//! does).

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::lenient;

/// The `[store]` table as written. Unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `"embedded"` or `"jetstream-kv"`; checked by [`build`] so that a typo is reported with
    /// every other problem.
    #[schemars(extend("enum" = ["embedded", "jetstream-kv"]))]
    pub backend: String,
    pub path: PathBuf,
    pub bucket: String,
    #[serde(deserialize_with = "lenient::value")]
    pub create_bucket: bool,
    #[serde(deserialize_with = "lenient::value")]
    pub kv_replicas: usize,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub timeout: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub claim_ttl: Duration,
    #[serde(deserialize_with = "lenient::value")]
    pub temporary: bool,
    #[schemars(extend("enum" = ["refuse", "adopt"]))]
    pub on_scwm_change: String,
    /// Embedded: what a commit is safe against before its write is answered. `power-loss`
    /// fsyncs every commit; `process-crash` answers once the commit is in the kernel's page
    /// cache and fsyncs at most every `sync_interval` (the README weighs the two).
    #[schemars(extend("enum" = ["power-loss", "process-crash"]))]
    pub durability: String,
    /// Embedded with `durability = "process-crash"`: the longest time between two fsyncs while
    /// commits are made.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub sync_interval: Duration,
    /// Embedded: redb's page cache in bytes (at least 1 MiB), memory the process holds once
    /// the file is that large; beyond it reads come from the kernel's page cache.
    #[serde(deserialize_with = "lenient::value")]
    pub cache_bytes: usize,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            backend: "embedded".into(),
            path: "incident-bridge.redb".into(),
            bucket: "incident-bridge".into(),
            create_bucket: true,
            kv_replicas: 1,
            timeout: Duration::from_secs(5),
            claim_ttl: Duration::from_secs(30),
            temporary: false,
            on_scwm_change: "refuse".into(),
            durability: "power-loss".into(),
            sync_interval: Duration::from_secs(1),
            cache_bytes: EmbeddedOptions::default().cache_bytes,
        }
    }
}

/// The validated store configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub backend: BackendConfig,
    /// Bound on every store call; past it the call fails as unavailable instead of hanging.
    pub timeout: Duration,
    /// How long a claim on a key holds before another replica may take it over. Used by the
    /// claim/finish protocol on top of the store, not by the store itself.
    pub claim_ttl: Duration,
    /// What to do when the store was written against another SCWM than the configured one.
    pub on_scwm_change: OnScwmChange,
}

/// What to do with a store whose mappings were written against another SCWM (another URL or
/// owner, or another run of the in-process simulator): its item ids name incidents that SCWM
/// does not have, or that are other incidents there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnScwmChange {
    /// Do not start; say which SCWM the store belongs to.
    Refuse,
    /// It is the same SCWM under a new address: record the new one and keep the mappings.
    Adopt,
}

/// What the embedded store safeguards a commit against before the write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync every commit: nothing answered is lost to any crash, power loss included.
    PowerLoss,
    /// A commit is in the kernel's page cache when answered, safe against the process dying;
    /// the disk is synced at most every `sync_interval` (and at a clean close).
    ProcessCrash { sync_interval: Duration },
}

/// The embedded store's settings beyond its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    pub durability: Durability,
    /// redb's page cache. Its memory is the process's: the cache fills up to this size as the
    /// file grows (each key's record is about 1 KiB), then evicts.
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        // 8 MiB holds the tree's inner pages and the records of the keys alerting now in most
        // deployments; other keys are read from the kernel's page cache (reclaimable, unlike
        // the process's own memory).
        Self { durability: Durability::PowerLoss, cache_bytes: 8 * 1024 * 1024 }
    }
}

/// redb's page cache at least: below this it thrashes on its own tree's pages.
const MIN_CACHE_BYTES: usize = 1024 * 1024;

/// Which backend, with its own settings only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// A redb file; one replica.
    Embedded {
        path: PathBuf,
        /// A fresh file in the system's temp directory instead of `path`, removed when the
        /// bridge exits: for trials, whose SCWM (the in-process simulator) forgets everything
        /// at exit too.
        temporary: bool,
        options: EmbeddedOptions,
    },
    /// A JetStream KV bucket on the bridge's NATS connection; any number of replicas.
    JetStreamKv {
        bucket: String,
        /// Create the bucket when it does not exist; when false a missing bucket is an error.
        create_bucket: bool,
        /// Copies the server keeps when the bridge creates the bucket (ignored for an existing one).
        replicas: usize,
    },
}

impl BackendConfig {
    /// The backend's label, as in the configuration and [`super::CorrelationStore::backend`].
    pub fn name(&self) -> &'static str {
        match self {
            BackendConfig::Embedded { .. } => "embedded",
            BackendConfig::JetStreamKv { .. } => "jetstream-kv",
        }
    }
}

/// JetStream's limit on stream replicas.
const MAX_KV_REPLICAS: usize = 5;

/// Validates `raw`, reporting every problem as (dotted key, message). `key_prefix` is the
/// table's own key (`"store"`), prepended to each field's name.
pub fn build(raw: RawStore, key_prefix: &str) -> Result<StoreConfig, Vec<(String, String)>> {
    let key = |field: &str| {
        if key_prefix.is_empty() { field.to_owned() } else { format!("{key_prefix}.{field}") }
    };
    let mut errors = Vec::new();
    if raw.path.as_os_str().is_empty() {
        errors.push((key("path"), "must not be empty".into()));
    }
    if !super::kv::is_valid_bucket(&raw.bucket) {
        errors.push((
            key("bucket"),
            format!("`{}` is not a KV bucket name: use letters, digits, `_` and `-`", raw.bucket),
        ));
    }
    if !(1..=MAX_KV_REPLICAS).contains(&raw.kv_replicas) {
        errors.push((key("kv_replicas"), format!("must be between 1 and {MAX_KV_REPLICAS}")));
    }
    if raw.timeout.is_zero() {
        errors.push((key("timeout"), "must be greater than zero".into()));
    }
    if raw.claim_ttl.is_zero() {
        errors.push((key("claim_ttl"), "must be greater than zero".into()));
    }
    let durability = match raw.durability.as_str() {
        "power-loss" => Some(Durability::PowerLoss),
        "process-crash" if raw.sync_interval.is_zero() => {
            errors.push((key("sync_interval"), "must be greater than zero".into()));
            None
        }
        "process-crash" => Some(Durability::ProcessCrash { sync_interval: raw.sync_interval }),
        other => {
            errors.push((
                key("durability"),
                format!("unknown value `{other}` (expected \"power-loss\" or \"process-crash\")"),
            ));
            None
        }
    };
    if raw.cache_bytes < MIN_CACHE_BYTES {
        errors.push((key("cache_bytes"), format!("must be at least {MIN_CACHE_BYTES} (1 MiB)")));
    }
    let options = EmbeddedOptions {
        durability: durability.unwrap_or(Durability::PowerLoss),
        cache_bytes: raw.cache_bytes,
    };
    let backend = match raw.backend.as_str() {
        "embedded" => Some(BackendConfig::Embedded { path: raw.path, temporary: raw.temporary, options }),
        "jetstream-kv" => Some(BackendConfig::JetStreamKv {
            bucket: raw.bucket,
            create_bucket: raw.create_bucket,
            replicas: raw.kv_replicas,
        }),
        other => {
            errors.push((
                key("backend"),
                format!("unknown backend `{other}` (expected \"embedded\" or \"jetstream-kv\")"),
            ));
            None
        }
    };
    let on_scwm_change = match raw.on_scwm_change.as_str() {
        "refuse" => Some(OnScwmChange::Refuse),
        "adopt" => Some(OnScwmChange::Adopt),
        other => {
            errors.push((
                key("on_scwm_change"),
                format!("unknown value `{other}` (expected \"refuse\" or \"adopt\")"),
            ));
            None
        }
    };
    if raw.temporary && raw.backend == "jetstream-kv" {
        errors.push((key("temporary"), "only the embedded store can be temporary".into()));
    }
    match (backend, on_scwm_change) {
        (Some(backend), Some(on_scwm_change)) if errors.is_empty() => {
            Ok(StoreConfig { backend, timeout: raw.timeout, claim_ttl: raw.claim_ttl, on_scwm_change })
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RawStore {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            store: RawStore,
        }
        toml::from_str::<File>(text).unwrap().store
    }

    #[test]
    fn an_absent_table_gives_the_embedded_store_in_the_working_directory() {
        let c = build(parse(""), "store").unwrap();
        assert_eq!(
            c.backend,
            BackendConfig::Embedded {
                path: "incident-bridge.redb".into(),
                temporary: false,
                options: EmbeddedOptions { durability: Durability::PowerLoss, cache_bytes: 8 * 1024 * 1024 },
            }
        );
        assert_eq!(c.on_scwm_change, OnScwmChange::Refuse);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.claim_ttl, Duration::from_secs(30));
    }

    #[test]
    fn the_kv_backend_takes_its_settings_typed_or_as_strings() {
        let c = build(
            parse(
                r#"
                [store]
                backend = "jetstream-kv"
                bucket = "corr_1"
                create_bucket = "false"
                kv_replicas = "3"
                timeout = "250ms"
                claim_ttl = "1m"
                "#,
            ),
            "store",
        )
        .unwrap();
        assert_eq!(
            c.backend,
            BackendConfig::JetStreamKv { bucket: "corr_1".into(), create_bucket: false, replicas: 3 }
        );
        assert_eq!(c.backend.name(), "jetstream-kv");
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.claim_ttl, Duration::from_secs(60));
    }

    #[test]
    fn every_problem_is_reported_with_its_dotted_key() {
        let raw = RawStore {
            backend: "redis".into(),
            path: PathBuf::new(),
            bucket: "no.dots".into(),
            kv_replicas: 0,
            timeout: Duration::ZERO,
            claim_ttl: Duration::ZERO,
            ..RawStore::default()
        };
        let errors = build(raw, "store").unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "store.path",
                "store.bucket",
                "store.kv_replicas",
                "store.timeout",
                "store.claim_ttl",
                "store.backend"
            ]
        );
    }

    #[test]
    fn the_embedded_store_can_trade_power_loss_safety_for_speed() {
        let c = build(
            parse("[store]\ndurability = \"process-crash\"\nsync_interval = \"250ms\"\ncache_bytes = \"4194304\""),
            "store",
        )
        .unwrap();
        let BackendConfig::Embedded { options, .. } = c.backend else { panic!("embedded") };
        assert_eq!(
            options,
            EmbeddedOptions {
                durability: Durability::ProcessCrash { sync_interval: Duration::from_millis(250) },
                cache_bytes: 4 * 1024 * 1024
            }
        );
        let errors =
            build(parse("[store]\ndurability = \"maybe\"\ncache_bytes = 1000"), "store").unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["store.durability", "store.cache_bytes"]);
        assert!(errors[0].1.contains("\"power-loss\" or \"process-crash\""), "{errors:?}");
        let errors = build(parse("[store]\ndurability = \"process-crash\"\nsync_interval = \"0s\""), "store")
            .unwrap_err();
        assert_eq!(errors[0].0, "store.sync_interval");
    }

    #[test]
    fn too_many_replicas_are_refused() {
        let raw = RawStore { kv_replicas: 6, ..RawStore::default() };
        assert_eq!(build(raw, "store").unwrap_err()[0].0, "store.kv_replicas");
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_syntax_errors() {
        assert!(toml::from_str::<RawStore>("pathh = \"x\"").is_err());
        assert!(toml::from_str::<RawStore>("timeout = \"soon\"").is_err());
    }
}
