use std::{collections::BTreeMap, io, path::Path};

use super::*;
use crate::incident::Operation;

const MINIMAL: &str = r#"
[scwm]
url = "https://scwm.example.com/api/incident"
token = "dXNlcjpwYXNz"
owner_id = "OWNER_ID"
"#;

fn no_files(_: &Path) -> io::Result<String> {
    Err(io::Error::new(io::ErrorKind::NotFound, "no such file"))
}

fn load_with(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    load(text, &env, &no_files)
}

#[test]
fn a_minimal_file_gets_defaults_for_everything_else() {
    let c = load_with(MINIMAL, &[]).unwrap();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.server.body_limit_bytes, 1024 * 1024);
    assert_eq!(c.scwm.endpoints.len(), 7);
    assert_eq!(
        c.scwm.endpoints[&Operation::Submit].event_name,
        "agile-process-teams:submit-incident-to-partner:v3"
    );
    assert_eq!(c.scwm.basic_token.expose(), "dXNlcjpwYXNz");
    assert!(c.simulator.is_none());
}

#[test]
fn environment_overrides_nested_keys_and_typed_values() {
    let c = load_with(
        MINIMAL,
        &[
            ("INCIDENT_BRIDGE_SCWM__TOKEN", "from-env"),
            ("INCIDENT_BRIDGE_PIPELINE__WORKERS", "7"),
            ("INCIDENT_BRIDGE_SCWM__REQUEST_TIMEOUT", "3s"),
            ("INCIDENT_BRIDGE_RESULTS__LOG", "false"),
        ],
    )
    .unwrap();
    assert_eq!(c.scwm.basic_token.expose(), "from-env");
    assert_eq!(c.pipeline.workers, 7);
    assert_eq!(c.scwm.request_timeout, Duration::from_secs(3));
    assert!(!c.results.log);
}

#[test]
fn secrets_can_come_from_files_without_their_trailing_newline() {
    let text = MINIMAL.replace("token = \"dXNlcjpwYXNz\"", "token_file = \"/run/secrets/scwm\"");
    let read = |p: &Path| -> io::Result<String> {
        assert_eq!(p, Path::new("/run/secrets/scwm"));
        Ok("s3cret\n".into())
    };
    let c = load(&text, &BTreeMap::new(), &read).unwrap();
    assert_eq!(c.scwm.basic_token.expose(), "s3cret");
}

#[test]
fn an_unreadable_secret_file_names_its_key() {
    let text = MINIMAL.replace("token = \"dXNlcjpwYXNz\"", "token_file = \"/missing\"");
    let err = load_with(&text, &[]).unwrap_err();
    assert!(err.has_key("scwm.token_file"), "{err}");
}

#[test]
fn username_and_password_become_a_basic_token() {
    let text = MINIMAL.replace("token = \"dXNlcjpwYXNz\"", "username = \"user\"\npassword = \"pass\"");
    let c = load_with(&text, &[]).unwrap();
    assert_eq!(c.scwm.basic_token.expose(), "dXNlcjpwYXNz");
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
[server]
listen = "nowhere"
body_limit_bytes = 0
[scwm]
url = "ftp://x"
[scwm.retry]
max_attempts = 0
[scwm.operations.delete]
url = "http://x"
[pipeline]
workers = 0
"#;
    let err = load_with(text, &[]).unwrap_err();
    for key in [
        "server.listen",
        "server.body_limit_bytes",
        "scwm.url",
        "scwm.token",
        "scwm.owner_id",
        "scwm.retry.max_attempts",
        "scwm.operations.delete",
        "pipeline.workers",
    ] {
        assert!(err.has_key(key), "missing {key} in:\n{err}");
    }
}

#[test]
fn an_unknown_key_is_an_error_naming_its_path() {
    let err = load_with(&format!("{MINIMAL}\n[pipeline]\nworkerz = 3\n"), &[]).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(err.0[0].key.starts_with("pipeline"), "{err}");
    assert!(err.0[0].message.contains("workerz"), "{err}");
}

#[test]
fn a_badly_typed_environment_value_names_its_key() {
    let err = load_with(MINIMAL, &[("INCIDENT_BRIDGE_PIPELINE__WORKERS", "many")]).unwrap_err();
    assert_eq!(err.0[0].key, "pipeline.workers", "{err}");
}

#[test]
fn a_misspelt_environment_variable_is_an_unknown_key() {
    let err = load_with(MINIMAL, &[("INCIDENT_BRIDGE_SCWM__TOKN", "x")]).unwrap_err();
    assert!(err.to_string().contains("tokn"), "{err}");
}

#[test]
fn per_operation_urls_and_event_names_override_the_defaults() {
    let text = format!(
        "{MINIMAL}\n[scwm.operations.close]\nurl = \"https://other.example.com/close\"\nevent_name = \"custom:close:v9\"\n"
    );
    let c = load_with(&text, &[]).unwrap();
    let close = &c.scwm.endpoints[&Operation::Close];
    assert_eq!(close.url.as_str(), "https://other.example.com/close");
    assert_eq!(close.event_name, "custom:close:v9");
    assert_eq!(c.scwm.endpoints[&Operation::Add].url.as_str(), "https://scwm.example.com/api/incident");
}

#[test]
fn error_messages_never_contain_secret_values() {
    let text = MINIMAL.replace("owner_id = \"OWNER_ID\"", "") + "\n[simulator]\ntoken = \"sim-secret\"\n";
    let err = load_with(&text, &[]).unwrap_err();
    let shown = err.to_string();
    assert!(!shown.contains("dXNlcjpwYXNz") && !shown.contains("sim-secret"), "{shown}");
}

/// What an example takes from its deployment, as its header documents it: environment
/// variables, and secret files (given placeholder contents here). Examples not listed need
/// nothing: they validate as they are.
fn documented_environment(
    example: &str,
) -> (&'static [(&'static str, &'static str)], &'static [&'static str]) {
    match example {
        "alertmanager.toml" => (
            &[
                ("INCIDENT_BRIDGE_SCWM__URL", "https://scwm.corp.example/incident"),
                ("INCIDENT_BRIDGE_SCWM__OWNER_ID", "PLATFORM-TEAM"),
                ("INCIDENT_BRIDGE_SCWM__TOKEN_FILE", "/etc/incident-bridge/secrets/scwm-token"),
            ],
            &["/etc/incident-bridge/secrets/scwm-token", "/etc/incident-bridge/secrets/alertmanager-token"],
        ),
        _ => (&[], &[]),
    }
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_str().unwrap();
            let (env, files) = documented_environment(name);
            for documented in env.iter().map(|(k, _)| *k).chain(files.iter().copied()) {
                assert!(text.contains(documented), "{name} does not document {documented}");
            }
            let read_paths = std::cell::RefCell::new(Vec::new());
            let read = |p: &Path| -> io::Result<String> {
                read_paths.borrow_mut().push(p.to_path_buf());
                if files.iter().any(|f| Path::new(f) == p) {
                    Ok("placeholder-secret\n".into())
                } else {
                    no_files(p)
                }
            };
            let env_map: BTreeMap<String, String> =
                env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            if let Err(e) = load(&text, &env_map, &read) {
                panic!("{}: {e}", path.display());
            }
            // What the example says comes from outside is really used.
            for file in files {
                assert!(
                    read_paths.borrow().iter().any(|p| p == Path::new(file)),
                    "{name} never reads {file}"
                );
            }
            if !env.is_empty() {
                assert!(
                    load_with(&text, &[]).is_err(),
                    "{name} validates without its documented environment"
                );
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs found in {}", dir.display());
}

#[test]
fn urls_with_credentials_are_refused_without_showing_them() {
    let text = format!(
        "{MINIMAL}\n[scwm.operations.close]\nurl = \"https://user:url-pa55@scwm.example.com/close\"\n\
         [nats]\nurl = [\"nats://nats.example.com:4222\", \"nats://s3cret-token@nats.example.com:4222\"]\n"
    );
    let errs = load(&text, &BTreeMap::new(), &no_files).unwrap_err();
    assert!(errs.has_key("scwm.operations.close.url"), "{errs}");
    assert!(errs.has_key("nats.url"), "{errs}");
    assert_eq!(errs.0.len(), 2, "{errs}");
    let shown = errs.to_string();
    assert!(!shown.contains("url-pa55") && !shown.contains("s3cret-token"), "{shown}");

    // A URL that does not parse is still shown, less what could be a password.
    let text = format!("{MINIMAL}\n[scwm.operations.read]\nurl = \"http://u:hunter2@[::1/read\"\n");
    let shown = load(&text, &BTreeMap::new(), &no_files).unwrap_err().to_string();
    assert!(shown.contains("http://…@[::1/read") && !shown.contains("hunter2"), "{shown}");
}

#[test]
fn nats_takes_no_commands_unless_a_subscription_is_configured() {
    let c = load_with(&format!("{MINIMAL}\n[nats]\nurl = \"nats://127.0.0.1:4222\"\n"), &[]).unwrap();
    assert!(c.nats.expect("nats is configured").subscriptions.is_empty());
    let c = load_with(
        &format!("{MINIMAL}\n[nats]\nurl = \"nats://127.0.0.1:4222\"\n[[nats.subscriptions]]\nsubject = \"incidents.commands.*\"\n"),
        &[],
    )
    .unwrap();
    let subs = c.nats.expect("nats is configured").subscriptions;
    assert_eq!(subs.len(), 1);
    assert_eq!((subs[0].source.as_str(), subs[0].queue_group.as_str()), ("native", "incident-bridge"));
}

#[test]
fn service_link_variables_are_ignored_but_section_keys_still_apply() {
    let mut env: Vec<(&str, &str)> = env::tests::service_links();
    env.push(("INCIDENT_BRIDGE_PIPELINE__WORKERS", "7"));
    let c = load_with(MINIMAL, &env).unwrap();
    assert_eq!(c.pipeline.workers, 7);
    assert_eq!(c.environment.ignored.len(), env::tests::service_links().len());
}

#[test]
fn the_schema_names_every_table_refuses_unknown_keys_and_is_self_contained() {
    let schema = schema();
    let text = schema.to_string();
    assert!(!text.contains("$ref"), "every subschema is inlined");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let tables = ["server", "scwm", "pipeline", "results", "simulator", "nats", "sources", "store"];
    for table in tables {
        assert!(schema["properties"][table].is_object(), "{table}");
    }
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["properties"]["server"]["additionalProperties"], false);
    assert_eq!(schema["properties"]["server"]["properties"]["shutdown_grace"]["default"], "20s");
    assert_eq!(
        schema["properties"]["store"]["properties"]["backend"]["enum"],
        serde_json::json!(["embedded", "jetstream-kv"])
    );
}

#[test]
fn every_table_whose_shape_is_wrong_is_reported_in_one_run() {
    let text = format!(
        "{MINIMAL}\n[server]\nbody_limit_bytes = \"a lot\"\n\n[pipeline]\nworkerz = 3\n\n\
         [sources.good]\nkind = \"alertmanager\"\n[[sources.good.auth]]\nscheme = \"none\"\n\n\
         [sources.bad]\nkind = \"alertmanager\"\nreopen_window = \"soon\"\n\n[reconcile]\nreads_per_second = 0\n\n\
         [stor]\npath = \"x\"\n"
    );
    let errors = load_with(&text, &[]).unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "server.body_limit_bytes",
        "pipeline.workerz",
        "sources.bad.reopen_window",
        "stor",
        "reconcile.reads_per_second",
    ] {
        assert!(keys.iter().any(|k| k.starts_with(key)), "{key} missing from {keys:?}");
    }
    assert!(!keys.iter().any(|k| k.starts_with("sources.good")), "the good source is fine: {keys:?}");
    assert!(errors.0.iter().any(|e| e.key == "stor" && e.message == "unknown key"), "{errors}");
}

#[test]
fn a_problem_from_the_environment_names_the_variable() {
    let errors = load_with(MINIMAL, &[("INCIDENT_BRIDGE_PIPELINE__WORKERS", "many")]).unwrap_err();
    let problem = errors.0.iter().find(|e| e.key.starts_with("pipeline")).expect("reported");
    assert!(
        problem.message.ends_with("(set by the environment variable INCIDENT_BRIDGE_PIPELINE__WORKERS)"),
        "{problem:?}"
    );
    let errors = load_with(MINIMAL, &[("INCIDENT_BRIDGE_RECONCILE__READS_PER_SECOND", "0")]).unwrap_err();
    assert!(errors.0[0].message.contains("INCIDENT_BRIDGE_RECONCILE__READS_PER_SECOND"), "{errors}");
}

#[test]
fn every_problem_of_one_table_is_reported_too() {
    let text = format!(
        "{MINIMAL}\n[server]\nbody_limit_bytes = \"a lot\"\nlistn = \"0.0.0.0:1\"\nmax_connections = \"many\"\n\n\
         [sources.am]\nkind = \"alertmanager\"\nreopen_window = \"soon\"\ngrouping = 7\n[[sources.am.routes]]\nmatchers = []\nactoin = \"drop\"\n"
    );
    let errors = load_with(&text, &[]).unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "server.body_limit_bytes",
        "server.listn",
        "server.max_connections",
        "sources.am.reopen_window",
        "sources.am.grouping",
        "sources.am.routes[0].actoin",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
}
