#!/usr/bin/env python3
"""Checks of what the Helm chart renders, run by scripts/check-chart.sh.

  chart_checks.py unit HELM CHART
      Renders the chart with its default values and each ci/ scenario and asserts the fields
      that matter: Pod Security "restricted", config checksums that roll the pods, secrets that
      reach the bridge only as mounted files named by *_FILE variables (or paths in the config:
      *_files lists, a source's auth entries), each source secret mounted from where the values
      say, the store volume at the directory of config.store.path (a claim per pod by default),
      no secret value in any ConfigMap, a grace period longer than the bridge's drain, no
      service links, the knobs of values.yaml rendered where they belong, an Ingress that keeps
      unauthenticated native commands in, NOTES that say what is exposed and how it is
      authenticated, and alert rules with a `for`, a runbook link and labels from the values.

  chart_checks.py check-config HELM CHART BINARY [VALUES...]
      Renders config.toml from the default values (plus VALUES files) and runs
      `BINARY check-config` on it, with every secret file replaced by a temporary file.

  chart_checks.py rule-file HELM CHART OUT [VALUES...]
      Writes the Prometheus rule file the chart renders (the alert-rules ConfigMap's) to OUT.

  chart_checks.py readme-values README OUT
      Writes the values examples of README.md's "Deploy on Kubernetes" section, merged, to OUT,
      and each one on its own to OUT.<n>.yaml, so that every example is a config on its own too.

Needs PyYAML; tomllib (Python 3.11+) or tomli.
"""

import base64
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

CONFIG_DIR = "/etc/incident-bridge"
SECRETS_DIR = f"{CONFIG_DIR}/secrets"

failures = []


def check(cond, what):
    print(f"  {'ok  ' if cond else 'FAIL'} {what}")
    if not cond:
        failures.append(what)
    return cond


def render(helm, chart, values_files=(), sets=()):
    cmd = [helm, "template", "ib", str(chart), "--namespace", "bridge"]
    for f in values_files:
        cmd += ["-f", str(f)]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def one(docs, kind, name_suffix=""):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind}*{name_suffix}, found {len(found)}"
    return found[0]


def kinds(docs):
    return sorted(d["kind"] for d in docs)


def duration_seconds(text):
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for n, unit in re.findall(r"(\d+)\s*([a-z]+)", text):
        total += int(n) * units[unit]
    return total


def config_of(docs):
    """The bridge's ConfigMap and its config.toml, parsed."""
    found = [d for d in docs if d["kind"] == "ConfigMap" and "config.toml" in (d.get("data") or {})]
    assert len(found) == 1, f"expected one ConfigMap with config.toml, found {len(found)}"
    return found[0], tomllib.loads(found[0]["data"]["config.toml"])


def workload(docs):
    return one(docs, "StatefulSet")


def pod_spec(docs):
    return workload(docs)["spec"]["template"]["spec"]


def pod_annotations(docs):
    return workload(docs)["spec"]["template"]["metadata"]["annotations"]


def claim_templates(docs):
    return workload(docs)["spec"].get("volumeClaimTemplates") or []


def notes(helm, chart, values_files=(), sets=()):
    """NOTES.txt as `helm install` prints it (helm template leaves it out)."""
    cmd = [helm, "install", "ib", str(chart), "--namespace", "bridge", "--dry-run=client"]
    for f in values_files:
        cmd += ["-f", str(f)]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return out[out.index("NOTES:"):]


def bridge_container(docs):
    return pod_spec(docs)["containers"][0]


def check_restricted(spec, who):
    """The Pod Security "restricted" profile's requirements on a pod spec."""
    psc = spec.get("securityContext", {})
    check(spec.get("automountServiceAccountToken") is False, f"{who}: automountServiceAccountToken is false")
    check(psc.get("runAsNonRoot") is True, f"{who}: pod runAsNonRoot")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{who}: seccompProfile RuntimeDefault")
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        check(sc.get("allowPrivilegeEscalation") is False, f"{who}/{c['name']}: allowPrivilegeEscalation false")
        check(sc.get("readOnlyRootFilesystem") is True, f"{who}/{c['name']}: readOnlyRootFilesystem")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{who}/{c['name']}: drops ALL capabilities")
        check(not sc.get("capabilities", {}).get("add"), f"{who}/{c['name']}: adds no capability")
    for v in spec.get("volumes", []):
        check("hostPath" not in v, f"{who}: volume {v['name']} is not a hostPath")


def secret_wiring(docs):
    """(file env vars, projected secret items by path, inline Secret data) of the bridge pod."""
    c = bridge_container(docs)
    env = {e["name"]: e.get("value") for e in c.get("env", []) if e["name"].endswith("_FILE")}
    config_vol = next(v for v in pod_spec(docs)["volumes"] if v["name"] == "config")
    items = {}
    for src in config_vol["projected"]["sources"]:
        if "secret" in src:
            for it in src["secret"]["items"]:
                items[f"{CONFIG_DIR}/{it['path']}"] = (src["secret"]["name"], it["key"])
    secrets = [d for d in docs if d["kind"] == "Secret"]
    data = {}
    for s in secrets:
        for k, v in (s.get("data") or {}).items():
            data[(s["metadata"]["name"], k)] = base64.b64decode(v).decode()
    return env, items, data


def inline_values(values_file):
    """Every `value:` under `secrets` in a values file."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("value"), str) and node["value"]:
                found.append(node["value"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk((yaml.safe_load(Path(values_file).read_text()) or {}).get("secrets"))
    return found


def source_secret_leaves(values_file):
    """(source, auth index, *_files key, item position, leaf) of every source secret in a values
    file: secrets.sources.<name>.auth[i].<key>_files[j]. Null items are skipped, as the chart
    skips them; j counts the items kept."""
    if values_file is None:
        return []
    sources = (((yaml.safe_load(Path(values_file).read_text()) or {}).get("secrets") or {}).get("sources")) or {}
    out = []
    for name, tree in sources.items():
        for i, entry in enumerate((tree or {}).get("auth") or []):
            for key, leaves in (entry or {}).items():
                kept = [leaf for leaf in leaves or [] if leaf and (leaf.get("value") or (leaf.get("existingSecret") or {}).get("name"))]
                for j, leaf in enumerate(kept):
                    out.append((name, i, key, j, leaf))
    return out


def check_store_volume(docs, cfg, who):
    """The embedded store's volume is mounted at the directory of config.store.path, and comes
    from exactly one place: a claim template, an existing claim or an emptyDir."""
    spec = pod_spec(docs)
    store = cfg.get("store", {})
    backend = store.get("backend", "embedded")
    data_mounts = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "data"]
    data_volumes = [v for v in spec["volumes"] if v["name"] == "data"]
    templates = [t for t in claim_templates(docs) if t["metadata"]["name"] == "data"]
    if backend != "embedded":
        check(not data_mounts and not data_volumes and not templates, f"{who}: no store volume with the {backend} store")
        return
    path = store.get("path", "")
    check(path.startswith("/"), f"{who}: config.store.path is absolute ({path!r})")
    check(len(data_mounts) == 1 and data_mounts[0]["mountPath"] == os.path.dirname(path),
          f"{who}: store volume mounted at {os.path.dirname(path)}, the directory of config.store.path")
    check(len(data_mounts) == 1 and not data_mounts[0].get("readOnly"), f"{who}: store volume writable")
    sources = len(templates) + len(data_volumes)
    check(sources == 1 and (templates or "emptyDir" in data_volumes[0] or "persistentVolumeClaim" in data_volumes[0]),
          f"{who}: store volume is a claim template, an existing claim or an emptyDir, exactly one of them")


def check_source_secrets(docs, cfg, toml_text, values_file, who):
    """Each source secret of the values file is mounted from where the values say and its path
    is the matching item of the auth entry's *_files list in config.toml."""
    _, items, data = secret_wiring(docs)
    chart_secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    for name, i, key, j, leaf in source_secret_leaves(values_file):
        where = f"sources.{name}.auth[{i}].{key}[{j}]"
        try:
            path = cfg["sources"][name]["auth"][i][key][j]
        except (KeyError, IndexError, TypeError):
            check(False, f"{who}: config.toml has {where}")
            continue
        check(path.startswith(SECRETS_DIR + "/") and f'"{path}"' in toml_text,
              f"{who}: config.toml names {where} by its path {path}")
        source = items.get(path)
        if leaf.get("value"):
            ok = source is not None and source[0] in chart_secrets and data.get(source) == leaf["value"]
            check(ok, f"{who}: {where} mounted from the chart's Secret with its value")
        else:
            ref = leaf["existingSecret"]
            check(source == (ref["name"], ref["key"]), f"{who}: {where} mounted from Secret {ref['name']}, key {ref['key']}")


def check_integration(cfg, who, backend):
    """A scenario that uses what the bridge offers: NATS (the official chart's Service), the
    store, a JetStream consumer, result events and the three webhook sources with their secrets
    as files."""
    nats = cfg.get("nats") or {}
    urls = nats.get("url") or []
    urls = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else urls
    check(bool(urls) and all(re.fullmatch(r"nats://[a-z0-9.-]+\.nats\.svc:4222", u) for u in urls),
          f"{who}: [nats] url names the NATS chart's Service in namespace nats ({', '.join(urls)})")
    check(cfg.get("store", {}).get("backend") == backend, f"{who}: [store] backend = {backend}")
    check(bool(nats.get("consumers")) and all(c.get("stream") for c in nats["consumers"]), f"{who}: [[nats.consumers]] with a stream")
    check(isinstance(nats.get("results"), dict) and nats["results"].get("enabled", True) is not False, f"{who}: [nats.results] on")
    sources = cfg.get("sources", {})
    for name, kind, scheme, files in [("alertmanager", "alertmanager", "bearer", "token_files"),
                                      ("grafana", "grafana", "grafana", "secret_files"),
                                      ("signed", None, "standard-webhooks", "secret_files")]:
        src = sources.get(name, {})
        auth = (src.get("auth") or [{}])[0]
        check((kind is None or src.get("kind") == kind) and auth.get("scheme") == scheme and bool(auth.get(files))
              and all(p.startswith(SECRETS_DIR + "/") for p in auth.get(files, [])),
              f"{who}: [sources.{name}] {scheme} with {files} under {SECRETS_DIR}")


def unit(helm, chart):
    chart = Path(chart)
    ci = sorted(chart.glob("ci/*-values.yaml"))
    scenarios = [("default values", [])] + [(f.name, [f]) for f in ci]

    for name, files in scenarios:
        print(f"- {name}")
        docs = render(helm, chart, files)
        spec = pod_spec(docs)
        c = bridge_container(docs)
        check_restricted(spec, "StatefulSet")
        if any(d["kind"] == "Pod" for d in docs):
            check_restricted(one(docs, "Pod")["spec"], "test Pod")

        cm, cfg = config_of(docs)
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        check(mounts.get(CONFIG_DIR) == "config", f"config volume mounted at {CONFIG_DIR}")
        check(c["args"] == ["--config", f"{CONFIG_DIR}/config.toml"], "bridge started with --config on the mounted file")
        tmp = next((v for v in spec["volumes"] if v["name"] == mounts.get("/tmp")), None)
        check(tmp is not None and "emptyDir" in tmp, "/tmp is a writable emptyDir")
        probes = (c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"], c["startupProbe"]["httpGet"])
        check(probes[0]["path"] == "/healthz" and probes[1]["path"] == "/readyz" and probes[2]["path"] == "/healthz",
              "probes: liveness and startup on /healthz, readiness on /readyz")
        startup = c["startupProbe"]
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        check(budget >= 60, f"startupProbe allows {budget}s to start (at least 60)")
        port = int(cfg.get("server", {}).get("listen", "0.0.0.0:8080").rsplit(":", 1)[1])
        check(c["ports"][0]["containerPort"] == port, f"containerPort {port} matches config.server.listen")
        check(spec.get("enableServiceLinks") is False, "enableServiceLinks: false (no <SERVICE>_PORT variables)")

        sts = workload(docs)
        headless = [d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"]
        check(len(headless) == 1 and sts["spec"]["serviceName"] == headless[0]["metadata"]["name"],
              f"StatefulSet serviceName is the headless Service ({sts['spec']['serviceName']})")
        check(headless and headless[0]["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"],
              "headless Service selects the StatefulSet's pods")
        check(sts["spec"]["template"]["metadata"]["labels"].items() >= sts["spec"]["selector"]["matchLabels"].items(),
              "pod template carries the selector labels")

        annotations = pod_annotations(docs)
        check(re.fullmatch(r"[0-9a-f]{64}", annotations.get("checksum/config", "")) is not None, "checksum/config annotation")
        has_inline = any(d["kind"] == "Secret" for d in docs)
        check(("checksum/secret" in annotations) == has_inline, "checksum/secret annotation exactly when the chart makes a Secret")

        server = cfg.get("server", {})
        drain = duration_seconds(server.get("shutdown_delay", "0s")) + duration_seconds(server.get("shutdown_grace", "20s"))
        check(spec["terminationGracePeriodSeconds"] > drain,
              f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} > shutdown_delay + shutdown_grace ({drain:g}s)")

        env, items, data = secret_wiring(docs)
        for var, path in env.items():
            check(path in items, f"{var} names a file of the projected secrets ({path})")
            check(path.startswith(SECRETS_DIR + "/"), f"{var} points under {SECRETS_DIR}")
        for src, (sname, key) in items.items():
            if any(n == sname for n, _ in data):
                check((sname, key) in data, f"{src}: key {key} exists in the chart's Secret {sname}")
        for path in list_paths(cfg):
            check(path in items, f"config list entry {path} is a mounted secret file")
        check_store_volume(docs, cfg, name)
        check_source_secrets(docs, cfg, cm["data"]["config.toml"], files[0] if files else None, name)
        secret_values = [v for f in files for v in inline_values(f)] + list(data.values())
        cm_texts = [yaml.safe_dump(d) for d in docs if d["kind"] == "ConfigMap"]
        check(all(v not in t for v in secret_values for t in cm_texts), "no secret value appears in any ConfigMap")
        check(not re.search(r"^\s*(token|password|nkey_seed|secrets|tokens|passwords)\s*=", cm["data"]["config.toml"], re.M),
              "config.toml has no inline secret keys")
        for ing in (d for d in docs if d["kind"] == "Ingress"):
            routed = [p["path"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
            native_auth = [a for a in ((cfg.get("sources") or {}).get("native") or {}).get("auth", []) if a.get("scheme") != "none"]
            check(native_auth or not any(p.rstrip("/") in ("", "/v1", "/v1/incidents") for p in routed),
                  f"Ingress routes /v1/incidents only when the native source authenticates ({', '.join(routed)})")
        for kind in ("HorizontalPodAutoscaler",):
            for hpa in (d for d in docs if d["kind"] == kind):
                ref = hpa["spec"]["scaleTargetRef"]
                check(ref["kind"] == "StatefulSet" and ref["name"] == sts["metadata"]["name"], "HPA scales the StatefulSet")
        for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
            check(pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"], "PDB selects the StatefulSet's pods")
        for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
            expressions = sm["spec"]["selector"].get("matchExpressions", [])
            check({"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["headless"]} in expressions,
                  "ServiceMonitor leaves out the headless Service (each pod scraped once)")

    print("- scenario specifics")
    docs = render(helm, chart)
    _, cfg = config_of(docs)
    env, items, _ = secret_wiring(docs)
    check(env.get("INCIDENT_BRIDGE_SCWM__TOKEN_FILE") == f"{SECRETS_DIR}/scwm-token",
          "default: SCWM token as INCIDENT_BRIDGE_SCWM__TOKEN_FILE")
    check(items.get(f"{SECRETS_DIR}/scwm-token") == ("incident-bridge-scwm", "token"),
          "default: token file from Secret incident-bridge-scwm, key token")
    sts = workload(docs)
    check(sts["spec"]["updateStrategy"] == {"type": "RollingUpdate"}, "default: StatefulSet RollingUpdate (old pod deleted before the new one starts)")
    check(sts["spec"]["replicas"] == 1 and sts["spec"]["podManagementPolicy"] == "Parallel", "default: one replica, Parallel pod management")
    check(kinds(docs) == ["ConfigMap", "Pod", "Service", "Service", "ServiceAccount", "StatefulSet"],
          f"default: only the core objects ({', '.join(kinds(docs))})")
    check(not any(d["kind"] in ("Deployment", "PersistentVolumeClaim") for d in docs), "default: no Deployment and no stand-alone PVC")
    templates = claim_templates(docs)
    check(len(templates) == 1 and templates[0]["metadata"]["name"] == "data"
          and templates[0]["spec"]["accessModes"] == ["ReadWriteOnce"]
          and templates[0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
          and "storageClassName" not in templates[0]["spec"],
          "default: the store on a claim template data (ReadWriteOnce, 1Gi, the cluster's default class)")
    check(not any(v["name"] == "data" for v in pod_spec(docs)["volumes"]), "default: no emptyDir store volume")
    check(set(templates[0]["metadata"].get("labels", {})) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"},
          "default: claim template labels are the selector labels only (a claim template can never change)")
    text = notes(helm, chart)
    check("WARNING" in text and "DUPLICATE" not in text and "claim data-ib-incident-bridge-0" in text,
          "default NOTES: the claim named, no emptyDir warning (only the placeholder URL's)")
    check("native commands: NO AUTHENTICATION" in text, "default NOTES: native commands marked NO AUTHENTICATION")
    check("No Ingress" in text and "ib-incident-bridge-headless" in text, "default NOTES: says there is no Ingress and names both Services")
    check("rollout status statefulset/ib-incident-bridge" in text, "default NOTES: rollout status of the StatefulSet")

    # The store on an emptyDir only when asked for, and then a warning.
    docs = render(helm, chart, sets=["store.embedded.persistence.enabled=false"])
    data = [v for v in pod_spec(docs)["volumes"] if v["name"] == "data"]
    check(not claim_templates(docs) and len(data) == 1 and data[0]["emptyDir"] == {"sizeLimit": "1Gi"},
          "persistence off: the store on an emptyDir, no claim template")
    text = notes(helm, chart, sets=["store.embedded.persistence.enabled=false"])
    check("WARNING: store.embedded.persistence.enabled is false" in text and "DUPLICATE" in text,
          "persistence off: NOTES warns that rollouts lose the store and duplicate incidents")
    docs = render(helm, chart, sets=["store.embedded.persistence.existingClaim=bridge-store"])
    data = [v for v in pod_spec(docs)["volumes"] if v["name"] == "data"]
    check(not claim_templates(docs) and len(data) == 1 and data[0]["persistentVolumeClaim"] == {"claimName": "bridge-store"},
          "existingClaim: the store on that claim, no claim template")
    docs = render(helm, chart, sets=["store.embedded.persistence.legacyClaim=true"])
    data = [v for v in pod_spec(docs)["volumes"] if v["name"] == "data"]
    pvc = one(docs, "PersistentVolumeClaim")
    check(not claim_templates(docs) and pvc["metadata"]["name"] == "ib-incident-bridge-data"
          and pvc["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep"
          and data[0]["persistentVolumeClaim"] == {"claimName": "ib-incident-bridge-data"},
          "legacyClaim: the Deployment-era claim <fullname>-data kept in the release (resource-policy keep) and mounted")

    # Whole numbers from a values file (which YAML hands to Helm as floats) stay integers.
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("config:\n  pipeline:\n    workers: 8\n    queue_capacity: 20000\n")
    try:
        _, cfg = config_of(render(helm, chart, [f.name]))
    finally:
        os.unlink(f.name)
    check(type(cfg["pipeline"]["workers"]) is int and cfg["pipeline"]["workers"] == 8, "whole numbers render as TOML integers")

    base = pod_annotations(render(helm, chart)).get("checksum/config")
    again = pod_annotations(render(helm, chart)).get("checksum/config")
    changed = pod_annotations(render(helm, chart, sets=["config.pipeline.workers=8"]))
    check(base is not None and base == again, "checksum/config is stable across renders")
    check(changed.get("checksum/config") != base, "checksum/config changes when the config changes")

    minimal = chart / "ci/minimal-values.yaml"
    d1 = pod_annotations(render(helm, chart, [minimal]))
    d2 = pod_annotations(render(helm, chart, [minimal], ["secrets.scwm.token_file.value=rotated"]))
    check(d1.get("checksum/secret") is not None and d1.get("checksum/secret") != d2.get("checksum/secret"), "checksum/secret changes when an inline secret changes")
    check(d1.get("checksum/config") == d2.get("checksum/config"), "checksum/config does not change with a secret")
    docs = render(helm, chart, [minimal])
    env, items, data = secret_wiring(docs)
    full = "ib-incident-bridge"
    check(items.get(f"{SECRETS_DIR}/scwm-token") == (full, "scwm-token") and data.get((full, "scwm-token")) == "dGVhbTpzZWNyZXQ=",
          "minimal: inline token stored in the chart's Secret and mounted as scwm-token")

    full_values = chart / "ci/full-values.yaml"
    docs = render(helm, chart, [full_values])
    _, cfg = config_of(docs)
    check_integration(cfg, "full", "jetstream-kv")
    check(cfg["sources"]["alertmanager"]["auth"][0]["token_files"] == [f"{SECRETS_DIR}/sources-alertmanager-auth-0-token-0", f"{SECRETS_DIR}/sources-alertmanager-auth-0-token-1"],
          "full: list secrets written into their auth entry as token_files paths, in order")
    env, _, _ = secret_wiring(docs)
    check(not any("SOURCES" in var for var in env), "full: no source secret as an environment variable (a list item cannot be named there)")
    check({"INCIDENT_BRIDGE_SCWM__PASSWORD_FILE", "INCIDENT_BRIDGE_NATS__PASSWORD_FILE", "INCIDENT_BRIDGE_NATS__TLS__KEY_FILE"} <= set(env),
          "full: SCWM password, NATS password and TLS key wired as _FILE variables")
    check("INCIDENT_BRIDGE_SCWM__TOKEN_FILE" not in env, "full: token_file: null drops the default token reference")
    sts = workload(docs)
    spec = pod_spec(docs)
    c = bridge_container(docs)
    check("replicas" not in sts["spec"], "full: HPA owns the replica count")
    check(not claim_templates(docs), "full: no claim template with jetstream-kv")
    for kind in ["HorizontalPodAutoscaler", "Ingress", "NetworkPolicy", "PodDisruptionBudget", "PrometheusRule", "Secret", "ServiceMonitor"]:
        check(kind in kinds(docs), f"full: renders a {kind}")
    check(len([d for d in docs if d["kind"] == "ConfigMap"]) == 3, "full: config, dashboard and alert-rules ConfigMaps")
    # The knobs of values.yaml, each where it belongs.
    check(c["image"] == "ghcr.io/incident-bridge/incident-bridge:0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
          "full: image pinned by digest (repository:tag@sha256:...)")
    check(sts["metadata"].get("annotations") == {"example.com/reviewed-by": "platform"}, "full: statefulSetAnnotations on the StatefulSet")
    check(pod_annotations(docs).get("example.com/owner") == "platform", "full: podAnnotations on the pods")
    check(spec.get("priorityClassName") == "high", "full: priorityClassName")
    check(c.get("envFrom") == [{"configMapRef": {"name": "otel-settings"}}], "full: envFrom on the bridge container")
    check({"name": "RUST_LOG", "value": "info,incident_bridge=debug"} in c["env"], "full: extraEnv on the bridge container")
    check([i["name"] for i in spec.get("initContainers", [])] == ["wait-for-nats"], "full: initContainers")
    check([x["name"] for x in spec["containers"]] == ["incident-bridge", "log-shipper"], "full: extraContainers after the bridge")
    check(any(v["name"] == "extra-ca" for v in spec["volumes"]) and any(m["name"] == "extra-ca" for m in c["volumeMounts"]),
          "full: extraVolumes and extraVolumeMounts")
    check(c["startupProbe"] == {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5, "failureThreshold": 36, "timeoutSeconds": 2},
          "full: startupProbe as the values set it (merged with the default's timeoutSeconds)")
    tsc = spec["topologySpreadConstraints"]
    check(len(tsc) == 1 and tsc[0]["topologyKey"] == "topology.kubernetes.io/zone"
          and tsc[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "ib", "full: topologySpreadConstraints with this release's selector")
    for kind, suffix, ns in [("ServiceMonitor", "", "monitoring"), ("PrometheusRule", "", "monitoring"),
                             ("ConfigMap", "-dashboard", "grafana"), ("ConfigMap", "-alert-rules", "monitoring")]:
        obj = one(docs, kind, suffix)
        check(obj["metadata"]["namespace"] == ns, f"full: {kind} {obj['metadata']['name']} in namespace {ns} (namespaceOverride)")
    check(one(docs, "ServiceMonitor")["spec"]["namespaceSelector"]["matchNames"] == ["bridge"], "full: the ServiceMonitor still scrapes the release's namespace")
    check(one(docs, "StatefulSet")["metadata"]["namespace"] == "bridge", "full: the StatefulSet stays in the release's namespace")
    ing = one(docs, "Ingress")
    check([p["path"] for p in ing["spec"]["rules"][0]["http"]["paths"]] == ["/webhooks", "/v1/incidents"],
          "full: Ingress routes /webhooks and, with exposeNativeCommands and native auth, /v1/incidents")
    np = one(docs, "NetworkPolicy")
    check(np["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}], "full: NetworkPolicy opens only the HTTP port")
    check(any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "incident-bridge-test"
              for p in np["spec"]["ingress"][0]["from"]), "full: NetworkPolicy lets the helm test pod in")
    egress_ports = sorted({p["port"] for r in np["spec"]["egress"] for p in r.get("ports", [])})
    check(egress_ports == [53, 443, 4222, 4318], f"full: egress to DNS, SCWM, NATS and the extra rule ({egress_ports})")
    text = notes(helm, chart, [full_values])
    check("native commands: bearer" in text and "/webhooks/grafana  (grafana): grafana" in text
          and "/webhooks/alertmanager  (alertmanager): bearer" in text and "/webhooks/signed  (alertmanager): standard-webhooks" in text,
          "full NOTES: each endpoint with its authentication schemes")
    check("https://bridge.corp.example/webhooks" in text and "https://bridge.corp.example/v1/incidents" in text,
          "full NOTES: the Ingress hosts and paths")
    check("incidents.commands.* -> native" in text, "full NOTES: the NATS command subjects")
    check("JetStream KV bucket incident-bridge" in text and "WARNING: store" not in text, "full NOTES: the jetstream-kv store, no volume warning")
    check_alert_rules(docs, full_values, "full")

    docs = render(helm, chart, sets=["alertRules.prometheusRule.enabled=true", "alertRules.configMap.enabled=true"])
    check_alert_rules(docs, None, "default")

    docs = render(helm, chart, [chart / "ci/existing-secrets-values.yaml"])
    spec = pod_spec(docs)
    _, cfg = config_of(docs)
    check_integration(cfg, "existing-secrets", "embedded")
    env, items, _ = secret_wiring(docs)
    check(env.get("INCIDENT_BRIDGE_NATS__CREDS_FILE") == f"{SECRETS_DIR}/nats-creds"
          and items.get(f"{SECRETS_DIR}/nats-creds") == ("nats-bridge-creds", "bridge.creds"),
          "existing-secrets: NATS .creds file from its Secret as INCIDENT_BRIDGE_NATS__CREDS_FILE")
    check(not any(d["kind"] == "Secret" for d in docs), "existing-secrets: the chart makes no Secret")
    check(workload(docs)["spec"]["updateStrategy"]["type"] == "RollingUpdate", "existing-secrets: RollingUpdate with the store on a claim")
    templates = claim_templates(docs)
    check(len(templates) == 1 and templates[0]["spec"]["storageClassName"] == "fast-ssd"
          and templates[0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
          and templates[0]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"},
          "existing-secrets: claim template with the storage class, size and annotations")
    data_mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "data")
    check(data_mount["mountPath"] == "/var/lib/incident-bridge/store", "existing-secrets: store volume at the directory of config.store.path")
    check(spec["terminationGracePeriodSeconds"] == 60, "existing-secrets: explicit terminationGracePeriodSeconds kept")
    text = notes(helm, chart, [chart / "ci/existing-secrets-values.yaml"])
    check("native commands: NO AUTHENTICATION" in text and "/webhooks/alertmanager  (alertmanager): bearer" in text,
          "existing-secrets NOTES: webhook schemes, native commands unauthenticated")

    docs = render(helm, chart, [chart / "ci/multi-replica-values.yaml"])
    spec = pod_spec(docs)
    _, cfg = config_of(docs)
    check_integration(cfg, "multi-replica", "jetstream-kv")
    env, _, _ = secret_wiring(docs)
    check("INCIDENT_BRIDGE_NATS__NKEY_SEED_FILE" in env, "multi-replica: NATS nkey seed as INCIDENT_BRIDGE_NATS__NKEY_SEED_FILE")
    check(workload(docs)["spec"]["replicas"] == 3, "multi-replica: 3 replicas")
    check(not any(v["name"] == "data" for v in spec["volumes"]) and not claim_templates(docs), "multi-replica: no store volume with jetstream-kv")
    tsc = spec["topologySpreadConstraints"]
    check(all(t["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "ib" for t in tsc),
          "multi-replica: spread constraints select this release's pods")

    # The Ingress: only /webhooks by default; /v1/incidents once the native source authenticates.
    docs = render(helm, chart, sets=["ingress.enabled=true"])
    check([p["path"] for p in one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"]] == ["/webhooks"],
          "ingress on: routes only /webhooks by default")
    native = ["config.sources.native.kind=native", "config.sources.native.auth[0].scheme=bearer",
              "secrets.sources.native.auth[0].token_files[0].value=t0ken"]
    docs = render(helm, chart, sets=["ingress.enabled=true", "ingress.exposeNativeCommands=true"] + native)
    check([p["path"] for p in one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"]] == ["/webhooks", "/v1/incidents"],
          "ingress with exposeNativeCommands and native auth: routes /v1/incidents too")

    if failures:
        print(f"{len(failures)} chart check(s) failed", file=sys.stderr)
        return 1
    return 0


def check_alert_rules(docs, values_file, who):
    """Every alert has a `for`, the labels and severity the values give, a runbook_url into
    README.md's Runbook section (or the values' base URL), thresholds from the values; the SCWM
    alert counts transient failures only, and an up/absent pair catches a bridge that is gone.
    The PrometheusRule and the ConfigMap carry the same rules."""
    values = yaml.safe_load(Path(values_file).read_text()) if values_file else {}
    ar = values.get("alertRules") or {}
    defaults = yaml.safe_load((Path(__file__).resolve().parent.parent / "charts/incident-bridge/values.yaml").read_text())["alertRules"]
    base = ar.get("runbookBaseUrl", defaults["runbookBaseUrl"])
    extra = ar.get("labels", {})
    severity = {**defaults["severity"], **(ar.get("severity") or {})}
    fors = {**defaults["for"], **(ar.get("for") or {})}
    thresholds = {**defaults["thresholds"], **(ar.get("thresholds") or {})}
    rule = one(docs, "PrometheusRule")
    cm = one(docs, "ConfigMap", "-alert-rules")
    from_cm = yaml.safe_load(cm["data"]["incident-bridge-rules.yaml"])
    check(from_cm["groups"] == rule["spec"]["groups"], f"{who}: the alert-rules ConfigMap and the PrometheusRule carry the same rules")
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    names = [r["alert"] for r in rules]
    check(set(names) == set(defaults["for"]), f"{who}: one rule per alert of alertRules.for ({', '.join(names)})")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for r in rules:
        n = r["alert"]
        check(r.get("for") == fors[n], f"{who}: {n} for {fors[n]}")
        check(r["labels"] == {**extra, "severity": severity[n]}, f"{who}: {n} labels {r['labels']}")
        url = r["annotations"].get("runbook_url", "")
        check(url == f"{base}#runbook-{n.lower()}", f"{who}: {n} runbook_url {url}")
        if base == defaults["runbookBaseUrl"]:
            check(f'<a id="runbook-{n.lower()}"></a>' in readme and f"### {n}\n" in readme,
                  f"{who}: README.md has the runbook entry #runbook-{n.lower()} under ### {n}")
        check(r["annotations"].get("summary") and r["annotations"].get("description"), f"{who}: {n} has a summary and a description")
    by = {r["alert"]: r["expr"] for r in rules}
    scwm = by["IncidentBridgeScwmErrors"]
    check('outcome="failed"' in scwm and "rejected" not in scwm and 'outcome!="ok"' not in scwm,
          f"{who}: IncidentBridgeScwmErrors counts transient failures (outcome=\"failed\") only")
    check(scwm.rstrip().endswith(f"> {thresholds['scwmFailedRatio']}"), f"{who}: SCWM failure ratio threshold {thresholds['scwmFailedRatio']}")
    check(by["IncidentBridgeDeadLetters"].rstrip().endswith(f"> {thresholds['deadLetters']}")
          and 'reason!~"scwm_rejected"' in by["IncidentBridgeDeadLetters"],
          f"{who}: dead-letter threshold {thresholds['deadLetters']}, SCWM's final refusals left out")
    check(by["IncidentBridgeQueueNearlyFull"].rstrip().endswith(f"> {thresholds['queueUsedRatio']}"), f"{who}: queue threshold {thresholds['queueUsedRatio']}")
    check(by["IncidentBridgeOutboxStuck"].rstrip().endswith(f"> {thresholds['outboxOldestAgeSeconds']}"), f"{who}: outbox age threshold {thresholds['outboxOldestAgeSeconds']}")
    check(re.fullmatch(r"up\{.+\} == 0", by["IncidentBridgeDown"]) is not None
          and re.fullmatch(r"absent\(incident_bridge_build_info\{.+\}\)", by["IncidentBridgeAbsent"]) is not None,
          f"{who}: a down rule (up == 0) and an absent rule (absent(incident_bridge_build_info))")
    fullname = values.get("fullnameOverride") or "ib-incident-bridge"
    selector = ar.get("selector") or f'job="{fullname}",namespace="bridge"'
    check(all(selector in e for e in by.values()), f"{who}: every rule selects the release's series ({selector})")


def list_paths(cfg):
    """Every string in a *_files list anywhere in the config, lists of tables included."""
    out = []
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            if k.endswith("_files") and isinstance(v, list):
                out += [p for p in v if isinstance(p, str)]
            else:
                out += list_paths(v)
    elif isinstance(cfg, list):
        for item in cfg:
            out += list_paths(item)
    return out


# Dummy contents of the mounted secret files. One text serves every secret the bridge reads as
# text: it is base64 (as a Standard Webhooks secret must be), has no whitespace (as a bearer
# token must not) and is not empty. NATS credentials are parsed while the config loads, so they
# get a file of the real format, with a well-formed nkey seed.
DUMMY_SECRET = base64.b64encode(b"dummy-secret-value").decode() + "\n"


def crc16_xmodem(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def dummy_nkey_seed():
    """A user nkey seed ("SU..."): the encoding nkeys checks, around 32 fixed bytes."""
    seed_prefix, user_prefix = 18 << 3, 20 << 3
    data = bytes([seed_prefix | (user_prefix >> 5), (user_prefix & 31) << 3]) + bytes(range(32))
    data += crc16_xmodem(data).to_bytes(2, "little")
    return base64.b32encode(data).decode().rstrip("=")


def dummy_creds():
    """A NATS .creds file: a user JWT block and a user nkey seed block."""
    jwt = ".".join(base64.urlsafe_b64encode(part).decode().rstrip("=")
                   for part in (b'{"typ":"JWT","alg":"ed25519-nkey"}', b'{"sub":"dummy"}', b"dummy"))
    return (f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{dummy_nkey_seed()}\n------END USER NKEY SEED------\n")


def dummy_content(var):
    if var.endswith("__CREDS_FILE"):
        return dummy_creds()
    if var.endswith("__NKEY_SEED_FILE"):
        return dummy_nkey_seed() + "\n"
    return DUMMY_SECRET


def check_config(helm, chart, binary, values_files):
    docs = render(helm, chart, values_files)
    cm, _ = config_of(docs)
    env_vars, items, _ = secret_wiring(docs)
    with tempfile.TemporaryDirectory() as tmp:
        # Each mounted secret file becomes a local file with a dummy value: the mount prefix is
        # rewritten to the temporary directory in config.toml and in the *_FILE variables.
        local_dir = os.path.join(tmp, "secrets")

        def local(path):
            return os.path.join(local_dir, os.path.relpath(path, SECRETS_DIR))

        os.makedirs(local_dir)
        kinds_by_path = {path: var for var, path in env_vars.items()}
        for path in items:
            Path(local(path)).write_text(dummy_content(kinds_by_path.get(path, "")))
        text = cm["data"]["config.toml"].replace(SECRETS_DIR + "/", local_dir + "/")
        config = os.path.join(tmp, "config.toml")
        Path(config).write_text(text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_BRIDGE_")}
        env.update({k: local(v) for k, v in env_vars.items()})
        for extra in bridge_container(docs).get("env", []):
            if extra["name"].startswith("INCIDENT_BRIDGE_") and not extra["name"].endswith("_FILE") and "value" in extra:
                env[extra["name"]] = extra["value"]
        listed = list_paths(tomllib.loads(cm["data"]["config.toml"]))
        print(f"  {len(env_vars)} secret file variable(s): {', '.join(sorted(env_vars)) or 'none'}; "
              f"{len(listed)} secret file path(s) in config.toml")
        result = subprocess.run([binary, "check-config", "--config", config], env=env, capture_output=True, text=True)
        sys.stdout.write("  " + (result.stdout + result.stderr).strip().replace(tmp, "<tmp>").replace("\n", "\n  ") + "\n")
        if result.returncode == 0 and "configuration is valid" not in result.stdout:
            print("  check-config exited 0 without saying the configuration is valid")
            return 1
        return result.returncode


def readme_values(readme, out):
    """Merges the values examples of README.md's "Deploy on Kubernetes" section (the blocks that
    start with `image:` or `# Bridge values`) into one values file, so check-config can tell
    whether what the README shows is a configuration the bridge accepts."""
    text = Path(readme).read_text()
    start = text.index("## Deploy on Kubernetes")
    section = text[start:text.index("\n## ", start + 1)]
    merged = {}

    def merge(into, new):
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S)
              if b.startswith(("image:", "# Bridge values"))]
    for n, block in enumerate(blocks, 1):
        merge(merged, yaml.safe_load(block))
        Path(f"{out}.{n}.yaml").write_text(block)
    Path(out).write_text(yaml.safe_dump(merged))
    print(f"  {len(blocks)} values example(s) from {readme}")
    return 0 if blocks else 1


def rule_file(helm, chart, out, values_files):
    docs = render(helm, chart, values_files, ["alertRules.configMap.enabled=true"])
    Path(out).write_text(one(docs, "ConfigMap", "-alert-rules")["data"]["incident-bridge-rules.yaml"] + "\n")
    return 0


def main(argv):
    if len(argv) == 3 and argv[0] == "readme-values":
        return readme_values(argv[1], argv[2])
    if len(argv) >= 4 and argv[0] == "rule-file":
        return rule_file(argv[1], Path(argv[2]), argv[3], argv[4:])
    if len(argv) >= 3 and argv[0] == "unit":
        return unit(argv[1], argv[2])
    if len(argv) >= 4 and argv[0] == "check-config":
        return check_config(argv[1], Path(argv[2]), argv[3], argv[4:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
