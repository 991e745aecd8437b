#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets into fuzz/corpus/<target>/ from the signature
fixtures in tests/fixtures/signatures/, in the format fuzz/fuzz_targets/common/mod.rs reads:
`@option: value` lines, `Header: value` lines, a blank line, the body. Seeds are valid and
invalid requests alike, so fuzzing starts from messages that reach every check.

Usage: scripts/fuzz_seeds.py  (from anywhere; paths are relative to the repository)
"""
import base64
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
fixtures = root / "tests" / "fixtures" / "signatures"
corpus = root / "fuzz" / "corpus"


def message(options, headers, body):
    lines = [f"@{k}: {v}" for k, v in options.items() if v is not None]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\n".join(lines) + "\n\n").encode() + body.encode()


def write(target, name, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def vectors(file):
    return json.loads((fixtures / file).read_text())["vectors"]


def now(v):
    return v.get("verify_at_unix")


count = 0
for v in vectors("standard-webhooks.json"):
    write("verify_standard_webhooks", v["name"],
          message({"secret": v["secret"], "now": now(v)}, v["headers"], v["payload"]))
    count += 1

for v in vectors("github.json"):
    write("verify_github", v["name"], message({"secret": v["secret"]}, v["headers"], v["payload"]))
    # The same requests through the generic scheme set up as GitHub's.
    opts = {"secret": v["secret"], "header": "X-Hub-Signature-256", "prefix": "sha256="}
    write("verify_hmac", "github-" + v["name"], message(opts, v["headers"], v["payload"]))
    count += 2

for v in vectors("stripe.json"):
    tol = v.get("tolerance_seconds")
    opts = {"secret": v["secret"], "now": now(v), "tolerance": f"{tol}s" if tol else None}
    write("verify_stripe", v["name"], message(opts, v["headers"], v["payload"]))
    count += 1

for v in vectors("grafana.json"):
    ts_header = "X-Grafana-Alerting-Timestamp"
    timed = ts_header in v["headers"]
    opts = {"secret": v["secret"], "now": now(v), "timestamp_header": ts_header if timed else None}
    write("verify_grafana", v["name"], message(opts, v["headers"], v["payload"]))
    # And through the generic scheme set up as Grafana's.
    opts = {"secret": v["secret"], "now": now(v), "header": "X-Grafana-Alerting-Signature",
            "timestamp_header": ts_header if timed else None, "separator": ":" if timed else None}
    write("verify_hmac", "grafana-" + v["name"], message(opts, v["headers"], v["payload"]))
    count += 2

basic = base64.b64encode(b"alertmanager:fuzz-password").decode()
for name, opts, value in [
    ("bearer-ok", {}, "Bearer fuzz-token"),
    ("bearer-wrong", {}, "Bearer other-token"),
    ("basic-ok", {"scheme": "basic"}, f"Basic {basic}"),
    ("basic-bad-base64", {"scheme": "basic"}, "Basic !!!"),
]:
    write("verify_authorization", name, message(opts, {"Authorization": value}, "{}"))
    count += 1

payloads = json.loads((fixtures / "payloads.json").read_text())
natives = ['{"title":"Disk full","severity":"high"}', '{"id":"IT-000001","partnerId":"DBA"}', "[[[[]]]]", '"x"']
for i, body in enumerate([p["payload"] for p in payloads] + natives):
    write("json_depth", f"{i}", bytes([3]) + body.encode())
    write("truncate", f"{i}", (40).to_bytes(2, "little") + body.encode())
    write("native_decode", f"{i}", body.encode())
    count += 3

alert_fixtures = root / "tests" / "fixtures"
for f in sorted((alert_fixtures / "alertmanager").glob("*.json")):
    if f.name == "INDEX.json":
        continue
    body = f.read_bytes()
    write("alertmanager_decode", f.stem, body)
    event = {"specversion": "1.0", "id": f.stem, "source": "/alertmanager", "type": "io.prometheus.alert",
             "datacontenttype": "application/json", "data": json.loads(body)}
    write("cloudevents_decode", "structured-" + f.stem,
          message({}, {"Content-Type": "application/cloudevents+json"}, json.dumps(event)))
    write("cloudevents_decode", "binary-" + f.stem,
          message({}, {"ce-specversion": "1.0", "ce-id": f.stem, "ce-source": "%2Falertmanager",
                       "ce-type": "io.prometheus.alert", "Content-Type": "application/json"}, body.decode()))
    count += 3
for f in sorted((alert_fixtures / "grafana").glob("*.json")):
    write("grafana_decode", f.stem, f.read_bytes())
    count += 1

print(f"wrote {count} seeds under {corpus.relative_to(root)}")
