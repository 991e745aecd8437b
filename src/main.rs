//! The `incident-bridge` binary: parse the command line, load the config, run until a signal.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use incident_bridge::{
    app::App,
    config,
    secret::Secret,
    sim::{Faults, SimConfig, Simulator},
    telemetry::Telemetry,
};
use tokio_util::sync::CancellationToken;

// Every event allocates and frees many small values (JSON, headers, templates) across worker
// threads; with mimalloc the bridge spends about a quarter less CPU per event than with glibc's
// malloc (BENCHMARKS.md). Built without transparent huge pages (`no_thp`): with them, memory it
// had freed stayed resident in half-used 2 MiB pages and RSS climbed for as long as a soak ran.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "incident-bridge",
    version,
    about = "Bridges alerts and incident commands to the SCWM Incident API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short, env = "INCIDENT_BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration (file and environment) and exit.
    CheckConfig {
        #[arg(long, short, env = "INCIDENT_BRIDGE_CONFIG")]
        config: PathBuf,
        /// Also print the configuration in effect, key by key, with where each value came from
        /// (the file, an environment variable, the default); secrets redacted.
        #[arg(long)]
        print: bool,
    },
    /// Print the JSON Schema of the configuration file (draft-07, self-contained).
    ConfigSchema,
    /// Print the configuration reference (every key, type, default, environment variable) as
    /// Markdown: docs/CONFIG.md.
    ConfigReference,
    /// What a message would do, and why, without doing it: verification, each alert's key and
    /// route, what the store holds, the decision and its reason, every SCWM request as it would
    /// be sent. Asks a running bridge's admin API, or with --config answers offline (every key
    /// unknown).
    Explain {
        /// The source the message is for (`/webhooks/<source>`).
        #[arg(long)]
        source: String,
        /// The message body, as the sender would send it; `-` reads standard input.
        file: PathBuf,
        /// A header the sender would send, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The bridge to ask.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The admin API's bearer token.
        #[arg(long, env = "INCIDENT_BRIDGE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A file holding the admin API's bearer token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Explain offline with this configuration instead of asking a bridge.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Offline: what the store holds for the key, as a test suite's `given` in JSON, e.g.
        /// `{"state": "closed", "closed_ago": "30m"}`; else the key is unknown.
        #[arg(long, requires = "config")]
        given: Option<String>,
    },
    /// Run a test suite (YAML): cases of a payload, an optional given state and time, and what
    /// each alert must do; a line per case and `N passed, M failed`; exit 1 on any failure.
    Test {
        suite: PathBuf,
        /// The bridge configuration; else the suite's `config`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// What the correlation store of a running bridge holds (its admin API).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
        /// The bridge to ask.
        #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The admin API's bearer token.
        #[arg(long, global = true, env = "INCIDENT_BRIDGE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A file holding the admin API's bearer token.
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
    },
    /// The dead letters a running bridge keeps (its admin API): list, show, replay, purge.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        /// The bridge to ask.
        #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The admin API's bearer token.
        #[arg(long, global = true, env = "INCIDENT_BRIDGE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A file holding the admin API's bearer token.
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
    },
    /// Run the SCWM simulator alone.
    SimulateScwm {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// Require `Authorization: Basic <TOKEN>`.
        #[arg(long, env = "SCWM_SIM_TOKEN")]
        token: Option<String>,
        /// Answer contract errors with HTTP 200 and `isErr: true` instead of the matching status.
        #[arg(long)]
        errors_in_http_200: bool,
        /// The initial fault plan as JSON (the body `POST /_sim/faults` takes).
        #[arg(long)]
        faults: Option<String>,
        /// How many of the newest requests `GET /_sim/requests` keeps; 0 keeps every one.
        #[arg(long, default_value_t = incident_bridge::sim::DEFAULT_REQUEST_LOG_LIMIT)]
        request_log_limit: usize,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// One key's record and its revision.
    Get { key: String },
    /// Keys in key order, a page at a time.
    List {
        #[arg(long)]
        prefix: Option<String>,
        /// `open`, `closed`, `none` or `pending`.
        #[arg(long)]
        state: Option<String>,
        /// Keys after this one: the previous page's `next`.
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Forget a key: the next firing of its alert opens a new incident; SCWM is not touched.
    Forget {
        key: String,
        /// The revision a get showed; without it, the current one is read first.
        #[arg(long)]
        revision: Option<u64>,
    },
}

/// Which dead letters a dlq command is about.
#[derive(clap::Args)]
struct LetterFilter {
    #[arg(long)]
    source: Option<String>,
    #[arg(long)]
    op: Option<String>,
    /// The `reason_kind` (`retries_exhausted`, `scwm_rejected`, ...).
    #[arg(long)]
    reason: Option<String>,
    #[arg(long)]
    key: Option<String>,
    /// RFC 3339, or a duration back from now (`12h`).
    #[arg(long)]
    since: Option<String>,
}

impl LetterFilter {
    fn pairs(self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("source", self.source),
            ("op", self.op),
            ("reason", self.reason),
            ("key", self.key),
            ("since", self.since),
        ]
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Kept dead letters, newest first, without their bodies.
    List {
        #[command(flatten)]
        filter: LetterFilter,
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// One dead letter, with its whole original message.
    Show { id: String },
    /// Send dead letters through the pipeline again, with their original licensePlates (a
    /// letter that succeeds leaves the store; replaying twice cannot act twice).
    Replay {
        /// One letter; or use the filters.
        id: Option<String>,
        #[command(flatten)]
        filter: LetterFilter,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
        /// Say what would be replayed; replay nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Forget dead letters: one, the filtered ones, or --all.
    Purge {
        id: Option<String>,
        #[command(flatten)]
        filter: LetterFilter,
        #[arg(long)]
        all: bool,
    },
}

/// Exit code for a configuration that does not validate (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config, print } => match config::load_from_path(&config) {
            Ok(_) => {
                println!("{}: configuration is valid", config.display());
                if print {
                    let text = std::fs::read_to_string(&config).unwrap_or_default();
                    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
                    if let Ok(lines) = config::effective(&text, &env) {
                        let width =
                            lines.iter().map(|l| l.key.len() + l.value.len() + 3).max().unwrap_or(0).min(72);
                        for l in lines {
                            let kv = format!("{} = {}", l.key, l.value);
                            println!("{kv:width$}  # {}", l.origin);
                        }
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{}: {e}", config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::ConfigReference => {
            print!("{}", config::reference());
            ExitCode::SUCCESS
        }
        Command::ConfigSchema => {
            let schema = config::schema();
            println!("{}", serde_json::to_string_pretty(&schema).expect("a schema serialises"));
            ExitCode::SUCCESS
        }
        Command::Explain { source, file, headers, url, token, token_file, config, given } => printed(
            "explain",
            explain(
                source,
                &file,
                &headers,
                &url,
                token,
                token_file.as_deref(),
                config.as_deref(),
                given.as_deref(),
            ),
        ),
        Command::Test { suite, config, junit } => {
            match test_suite(&suite, config.as_deref(), junit.as_deref()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("test: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Store { command, url, token, token_file } => printed(
            "store",
            AdminApi::new(&url, token, token_file.as_deref()).and_then(|api| store(command, &api)),
        ),
        Command::Dlq { command, url, token, token_file } => printed(
            "dlq",
            AdminApi::new(&url, token, token_file.as_deref()).and_then(|api| dlq(command, &api)),
        ),
        Command::Serve { config } => {
            // Validation happens before anything starts, including the runtime and logging.
            let config = match config::load_from_path(&config) {
                Ok(c) => c,
                Err(e) => {
                    config_errors(&config, &e);
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            run(move || async move {
                let app = App::build(config).await?;
                app.run(shutdown_on_signal()).await
            })
        }
        Command::SimulateScwm { listen, token, errors_in_http_200, faults, request_log_limit } => {
            let faults: Faults = match faults.as_deref().map(serde_json::from_str).transpose() {
                Ok(f) => f.unwrap_or_default(),
                Err(e) => {
                    eprintln!("--faults: {e}");
                    return ExitCode::from(2);
                }
            };
            run(move || async move {
                let config = SimConfig {
                    token: token.map(Secret::new),
                    errors_in_http_200,
                    faults,
                    request_log_limit: (request_log_limit > 0).then_some(request_log_limit),
                    ..SimConfig::default()
                };
                let sim = Simulator::start(config, listen).await?;
                tracing::info!(addr = %sim.addr(), "SCWM simulator listening");
                shutdown_on_signal().cancelled().await;
                sim.stop().await?;
                Ok(())
            })
        }
    }
}

/// `incident-bridge explain`: the explanation as pretty JSON.
#[allow(clippy::too_many_arguments)]
fn explain(
    source: String,
    file: &std::path::Path,
    headers: &[String],
    url: &str,
    token: Option<String>,
    token_file: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
    given: Option<&str>,
) -> anyhow::Result<String> {
    use std::io::Read;

    use anyhow::Context;
    use incident_bridge::operate;

    let body = if file == std::path::Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("reading standard input")?;
        buf
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
    };
    let headers = headers.iter().map(|h| operate::header(h)).collect::<anyhow::Result<Vec<_>>>()?;
    let message = operate::Message { source, body: body.into(), headers };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match config {
        Some(path) => {
            let config =
                config::load_from_path(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let given = given
                .map(|text| {
                    let state: operate::suite::GivenState = serde_json::from_str(text).context("--given")?;
                    state.to_given()
                })
                .transpose()?;
            let against = incident_bridge::pipeline::explain::Against { given: Some(given), now: None };
            let explained = runtime.block_on(operate::explain_offline(config, &message, &against))?;
            Ok(serde_json::to_string_pretty(&explained)?)
        }
        None => {
            let token = operate::token(token, token_file)?;
            runtime.block_on(operate::explain_online(url, token.as_deref(), &message))
        }
    }
}

/// `incident-bridge test`: whether every case passed.
fn test_suite(
    path: &std::path::Path,
    config: Option<&std::path::Path>,
    junit: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    use anyhow::Context;
    use incident_bridge::operate::suite;

    let loaded = suite::read(path)?;
    let config_path = match (config, &loaded.config) {
        (Some(c), _) => c.to_path_buf(),
        (None, Some(c)) => path.parent().unwrap_or(std::path::Path::new(".")).join(c),
        (None, None) => anyhow::bail!("no configuration: give --config or the suite's `config`"),
    };
    let config = config::load_from_path(&config_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let results = runtime.block_on(suite::run(&loaded, path, config))?;
    let mut failed = 0;
    for r in &results {
        if r.failures.is_empty() {
            println!("ok    {}", r.name);
        } else {
            failed += 1;
            println!("FAIL  {}", r.name);
            for f in &r.failures {
                println!("      {f}");
            }
        }
    }
    println!("{} passed, {failed} failed", results.len() - failed);
    if let Some(out) = junit {
        std::fs::write(out, suite::junit(&path.display().to_string(), &results))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(failed == 0)
}

/// A configuration `serve` refuses, in the log's format: as text, or one JSON line per problem
/// (so a log pipeline that parses the bridge's lines parses these too).
fn config_errors(path: &std::path::Path, errors: &config::ConfigErrors) {
    if !incident_bridge::telemetry::log_as_json() {
        eprint!("{}: {errors}", path.display());
        return;
    }
    let at = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    for e in &errors.0 {
        let line = serde_json::json!({
            "timestamp": at,
            "level": "ERROR",
            "target": "incident_bridge::config",
            "file": path.display().to_string(),
            "key": e.key,
            "problem": e.message,
            "message": "invalid configuration",
        });
        eprintln!("{line}");
    }
}

/// An operator command's outcome: its answer on stdout, or the error on stderr and a failure.
fn printed(command: &str, answer: anyhow::Result<String>) -> ExitCode {
    match answer {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A running bridge's admin API, as the operator commands call it.
struct AdminApi {
    url: String,
    token: Option<String>,
    runtime: tokio::runtime::Runtime,
}

impl AdminApi {
    fn new(url: &str, token: Option<String>, token_file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let token = incident_bridge::operate::token(token, token_file)?;
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        Ok(Self { url: url.to_owned(), token, runtime })
    }

    /// `method` on `path` with the query `pairs` (those without a value left out).
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        pairs: &[(&str, Option<String>)],
    ) -> anyhow::Result<String> {
        let target = format!("{path}{}", incident_bridge::operate::query(pairs));
        self.runtime.block_on(incident_bridge::operate::admin(
            method,
            &self.url,
            &target,
            self.token.as_deref(),
        ))
    }
}

/// `incident-bridge dlq ...`: the admin API's answer.
fn dlq(command: DlqCommand, api: &AdminApi) -> anyhow::Result<String> {
    use reqwest::Method;

    let (method, path, pairs) = match command {
        DlqCommand::List { filter, max } => {
            let mut p = filter.pairs();
            p.push(("limit", Some(max.to_string())));
            (Method::GET, "/v1/dlq", p)
        }
        DlqCommand::Show { id } => (Method::GET, "/v1/dlq/letter", vec![("id", Some(id))]),
        DlqCommand::Replay { id, filter, max, dry_run } => {
            let mut p = filter.pairs();
            p.push(("id", id));
            p.push(("limit", Some(max.to_string())));
            p.push(("dry_run", dry_run.then(|| "true".to_owned())));
            (Method::POST, "/v1/dlq/replay", p)
        }
        DlqCommand::Purge { id, filter, all } => {
            let mut p = filter.pairs();
            p.push(("id", id));
            p.push(("all", all.then(|| "true".to_owned())));
            (Method::DELETE, "/v1/dlq", p)
        }
    };
    api.call(method, path, &pairs)
}

/// `incident-bridge store ...`: the admin API's answer.
fn store(command: StoreCommand, api: &AdminApi) -> anyhow::Result<String> {
    use anyhow::Context;
    use reqwest::Method;

    let get = |key: &str| api.call(Method::GET, "/v1/store/key", &[("key", Some(key.to_owned()))]);
    match command {
        StoreCommand::Get { key } => get(&key),
        StoreCommand::List { prefix, state, after, limit } => api.call(
            Method::GET,
            "/v1/store/keys",
            &[("prefix", prefix), ("state", state), ("after", after), ("limit", Some(limit.to_string()))],
        ),
        StoreCommand::Forget { key, revision } => {
            let revision = match revision {
                Some(r) => r,
                None => {
                    let got: serde_json::Value =
                        serde_json::from_str(&get(&key)?).context("reading the record")?;
                    got["revision"].as_u64().context("the record has no revision")?
                }
            };
            api.call(
                Method::DELETE,
                "/v1/store/key",
                &[("key", Some(key.clone())), ("revision", Some(revision.to_string()))],
            )?;
            Ok(format!("forgot {key} (revision {revision})"))
        }
    }
}

/// Runs `f` on a fresh runtime with telemetry installed, flushing traces before exit.
fn run<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let telemetry = match Telemetry::init() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot set up telemetry: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let result = f().await;
        if let Err(e) = &result {
            tracing::error!(error = format!("{e:#}"), "exiting on error");
        }
        telemetry.shutdown().await;
        if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    })
}

/// A token cancelled on the first SIGTERM or SIGINT.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
