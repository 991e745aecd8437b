#!/usr/bin/env python3
"""Pod rehearsal: the chart's pods run as the kubelet would run them, on a machine without a
cluster. Called by scripts/check-chart.sh after the other chart checks; needs root.

  scripts/pod_rehearsal.py BINARY [--helm HELM] [--chart CHART] [--nats-server PATH] [--only NAME]

For the default values, every ci/*-values.yaml it can run, and a rollout scenario of its own
(scripts/fixtures/rollout-values.yaml), it renders the chart (`helm template`), takes the
StatefulSet's pod template and runs its bridge container:

  - in a network namespace of its own (`unshare --net`, loopback up), as a pod has, together
    with an SCWM simulator (`BINARY simulate-scwm`) the rendered config.scwm.url points at, and a
    nats-server when the scenario's config has [nats];
  - on a root filesystem of its own, as the image has it (Dockerfile: the binary at its COPY
    destination, ENTRYPOINT, ENV and USER of the final stage, distroless's PATH), read-only when
    readOnlyRootFilesystem says so, with each volume at its mount path through bind mounts in a
    private mount namespace: projected ConfigMap and Secret items written the way the kubelet
    writes them (..data symlinks, defaultMode, the fsGroup as group), emptyDirs fresh, the
    store's claim a directory that outlives the pod (fsGroup applied as fsGroupChangePolicy
    says); existing Secrets the chart only names get dummy contents;
  - as the security context's user and groups, with no_new_privs;
  - with the container's environment resolved (values, secretKeyRef, fieldRef, $(VAR)
    references) plus the service-link variables of every Service the chart renders, as the
    kubelet injects them when enableServiceLinks is on, and the `kubernetes` Service's;
  - probed as the kubelet probes: the startupProbe at its period until it succeeds within
    failureThreshold tries, then readiness and liveness at theirs, each with its timeoutSeconds;
  - stopped as the kubelet stops it: SIGTERM, then SIGKILL after terminationGracePeriodSeconds.

The rollout scenario sends Alertmanager's webhook JSON again and again, retrying on 5xx and
refused connections as Alertmanager does, while the pod is replaced by one rendered with a
changed config, on the same store directory: SCWM must end with exactly one incident per alert,
and a resolve sent afterwards must close them.

The scenarios run at once, each in a network namespace of its own, all in one private mount
namespace whose files live on a tmpfs. Prints each scenario's steps, then one summary line per
scenario; exits non-zero, with the step that failed and the pod's last log lines, on a failure.
"""

import argparse
import base64
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chart_checks import dummy_content  # noqa: E402  (the same dummy secrets as check-config)

ROOT = Path(__file__).resolve().parent.parent
# The README's install: release incident-bridge, so the Service is incident-bridge and its
# service links are INCIDENT_BRIDGE_..., the bridge's own environment prefix.
RELEASE = NAMESPACE = "incident-bridge"
INNER = "POD_REHEARSAL_NAMESPACED"
FIXTURES = ROOT / "tests/fixtures/alertmanager"
# What gcr.io/distroless/cc-debian12 sets in its image config; the Dockerfile's ENV comes on top.
BASE_IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
}
# The run's start, shared with the scenario processes so that every step line tells the same clock.
STARTED = float(os.environ.get("POD_REHEARSAL_T0") or time.time())


class Failure(Exception):
    pass


def fail(msg):
    raise Failure(msg)


def step(msg):
    print(f"==> [{time.time() - STARTED:5.1f}s] {msg}", flush=True)


def info(msg):
    print(f"    {msg}", flush=True)


def run(*args, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        fail(f"{' '.join(map(str, args))} exited {r.returncode}: {(r.stderr or r.stdout).strip()}")
    return r.stdout


def mount(*args):
    run("mount", *args)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_up():
    """`ip link set lo up`, without needing iproute2: SIOCGIFFLAGS / SIOCSIFFLAGS on lo."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, ifreq))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


# ---------------------------------------------------------------------------------------------
# What the chart renders and what the image holds


def render(helm, chart, values_files=(), sets=()):
    cmd = [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for f in values_files:
        cmd += ["-f", str(f)]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"helm template failed: {r.stderr.strip()}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(found) != 1:
        fail(f"expected one {kind}{' ' + name if name else ''} in the render, found {len(found)}")
    return found[0]


def find(docs, kind, name):
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def image_config(dockerfile):
    """ENTRYPOINT, CMD, ENV, USER and WORKDIR of the Dockerfile's final stage, and where it puts
    the binary, as a container runtime would read them from the built image."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    cfg = {"entrypoint": [], "cmd": [], "env": {}, "user": "0:0", "workdir": "/", "binary": None}
    for ln in lines[last_from + 1:]:
        word, _, rest = ln.partition(" ")
        word = word.upper()
        if word in ("ENTRYPOINT", "CMD"):
            cfg[word.lower()] = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
        elif word == "ENV":
            for pair in shlex.split(rest):
                k, _, v = pair.partition("=")
                cfg["env"][k] = v
        elif word == "USER":
            cfg["user"] = rest.strip()
        elif word == "WORKDIR":
            cfg["workdir"] = rest.strip()
        elif word == "COPY" and "incident-bridge" in rest:
            cfg["binary"] = shlex.split(rest)[-1]
    if not cfg["entrypoint"] or not cfg["binary"]:
        fail(f"{dockerfile}: no ENTRYPOINT or no COPY of the binary in the final stage")
    return cfg


def env_name(name):
    return name.upper().replace("-", "_")


def service_links(services):
    """The variables the kubelet derives from Services when enableServiceLinks is on
    (pkg/kubelet/envvars): <NAME>_SERVICE_HOST, <NAME>_SERVICE_PORT[_<PORT NAME>], <NAME>_PORT
    and <NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]. The kubelet skips headless Services;
    they are given an address here anyway, so the set is a superset of what a cluster injects."""
    env = {}
    for i, (name, ip, ports) in enumerate(services):
        prefix = env_name(name)
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{env_name(p['name'])}"] = str(p["port"])
        for j, p in enumerate(ports):
            proto = p.get("protocol", "TCP")
            url = f"{proto.lower()}://{ip}:{p['port']}"
            if j == 0:
                env[f"{prefix}_PORT"] = url
            pp = f"{prefix}_PORT_{p['port']}_{proto.upper()}"
            env[pp] = url
            env[f"{pp}_PROTO"] = proto.lower()
            env[f"{pp}_PORT"] = str(p["port"])
            env[f"{pp}_ADDR"] = ip
    return env


def chart_services(docs):
    out = []
    for i, svc in enumerate(d for d in docs if d["kind"] == "Service"):
        ip = svc["spec"].get("clusterIP")
        if not ip or ip == "None":
            ip = f"10.96.{17 + i}.{40 + i}"
        out.append((svc["metadata"]["name"], ip, svc["spec"]["ports"]))
    return out


# ---------------------------------------------------------------------------------------------
# Processes beside the pod


class Proc:
    """A process this script started; stopped (SIGTERM, then SIGKILL) when the script ends."""
    started = []

    def __init__(self, name, argv, log, env=None):
        self.name, self.log = name, log
        self.out = open(log, "w")
        self.p = subprocess.Popen([str(a) for a in argv], stdout=self.out, stderr=subprocess.STDOUT,
                                  env=env, stdin=subprocess.DEVNULL)
        Proc.started.append(self)

    def alive(self):
        return self.p.poll() is None

    def stop(self, grace=5):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.out.close()

    def tail(self, n=15):
        try:
            lines = Path(self.log).read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n".join("      | " + ln[:300] for ln in lines)

    @classmethod
    def stop_all(cls):
        for p in reversed(cls.started):
            try:
                p.stop(2)
            except Exception:
                pass


# Straight to the address: a proxy from the environment would be outside this network namespace.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, body=None, headers=None, timeout=5):
    """(status, parsed JSON or text); status 0 when nothing answered."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (OSError, urllib.error.URLError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_for(what, cond, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    fail(f"timed out after {timeout}s waiting for {what}")


class Simulator:
    def __init__(self, binary, work, port, token):
        self.url = f"http://127.0.0.1:{port}"
        argv = [binary, "simulate-scwm", "--listen", f"127.0.0.1:{port}"] + (["--token", token] if token else [])
        self.proc = Proc("scwm-simulator", argv, work / "simulator.log")
        wait_for("the SCWM simulator", lambda: http("GET", self.url + "/_sim/incidents")[0] == 200, 10)

    def incidents(self):
        status, body = http("GET", self.url + "/_sim/incidents")
        if status != 200:
            fail(f"GET /_sim/incidents answered {status}")
        return body

    def requests(self):
        return http("GET", self.url + "/_sim/requests")[1]


class NatsServer:
    def __init__(self, nats_server, work, port):
        store = work / "nats-store"
        store.mkdir()
        self.url = f"nats://127.0.0.1:{port}"
        self.proc = Proc("nats-server", [nats_server, "-a", "127.0.0.1", "-p", port, "-js", "-sd", store], work / "nats.log")

        def up():
            with socket.socket() as s:
                s.settimeout(0.2)
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_for("nats-server", up, 10)


# ---------------------------------------------------------------------------------------------
# The pod


class Pod:
    """One pod of the StatefulSet, materialized the way the kubelet and the runtime would."""

    def __init__(self, docs, ordinal, work, claims, binary, image, tag):
        self.docs, self.binary, self.image = docs, binary, image
        self.sts = one(docs, "StatefulSet")
        self.name = f"{self.sts['metadata']['name']}-{ordinal}"
        self.spec = self.sts["spec"]["template"]["spec"]
        self.container = next(c for c in self.spec["containers"] if c["name"] == "incident-bridge")
        self.dir = work / f"pod-{self.name}-{tag}"
        self.root = self.dir / "root"
        self.claims = claims
        self.grace = self.spec.get("terminationGracePeriodSeconds", 30)
        psc = self.spec.get("securityContext") or {}
        csc = self.container.get("securityContext") or {}
        image_uid, _, image_gid = image["user"].partition(":")
        self.uid = int(csc.get("runAsUser", psc.get("runAsUser", image_uid)))
        self.gid = int(csc.get("runAsGroup", psc.get("runAsGroup", image_gid or 0)))
        self.fs_group = psc.get("fsGroup")
        self.fs_group_policy = psc.get("fsGroupChangePolicy", "Always")
        self.groups = [g for g in [self.fs_group] + list(psc.get("supplementalGroups", [])) if g is not None]
        if self.uid == 0 and (csc.get("runAsNonRoot", psc.get("runAsNonRoot"))):
            fail(f"{self.name}: runAsNonRoot is set but the container would run as uid 0")
        self.read_only_root = bool(csc.get("readOnlyRootFilesystem"))
        self.no_new_privs = csc.get("allowPrivilegeEscalation") is False
        self.host_paths = {}  # mountPath -> directory on this machine
        self.proc = None
        self.deleted_at = None

    # -- volumes --------------------------------------------------------------------------

    def secret_data(self, name, key, path_hint):
        secret = find(self.docs, "Secret", name)
        if secret is not None:
            data = secret.get("data") or {}
            if key not in data:
                fail(f"{self.name}: Secret {name} has no key {key}")
            return base64.b64decode(data[key])
        # A Secret the chart only names (existingSecret): dummy content of the right format,
        # chosen by the *_FILE variable that points at the file, as check-config gets.
        var = next((e["name"] for e in self.container.get("env", []) if e.get("value") == path_hint), "")
        return dummy_content(var).encode()

    def configmap_data(self, name, key):
        cm = find(self.docs, "ConfigMap", name)
        if cm is None or key not in (cm.get("data") or {}):
            fail(f"{self.name}: ConfigMap {name} with key {key} is not in the render")
        return cm["data"][key].encode()

    def write_atomic(self, vol_dir, files):
        """The kubelet's atomic writer: the files in a timestamped directory, `..data` pointing
        at it, and each top-level entry a symlink through `..data`."""
        stamp = vol_dir / "..2026_12_01_00_00_00.000000001"
        for rel, data, mode in files:
            p = stamp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            os.chmod(p, mode)
            os.chown(p, 0, self.fs_group if self.fs_group is not None else 0)
        for d in [stamp] + [p for p in stamp.rglob("*") if p.is_dir()]:
            os.chmod(d, 0o755)
        (vol_dir / "..data").symlink_to(stamp.name)
        for top in sorted({rel.split("/")[0] for rel, _, _ in files}):
            (vol_dir / top).symlink_to(f"..data/{top}")
        if self.fs_group is not None:
            os.chown(vol_dir, 0, self.fs_group)
            os.chmod(vol_dir, 0o2775)

    def items(self, kind, source, default_mode, getter, mount_path):
        """(path, content, mode) of a configMap or secret source: its items, or every key."""
        out = []
        if source.get("items"):
            for it in source["items"]:
                out.append((it["path"], getter(it["key"], f"{mount_path}/{it['path']}"), it.get("mode", default_mode)))
        else:
            obj = find(self.docs, kind, source.get("name"))
            if obj is None:
                fail(f"{self.name}: {kind} {source.get('name')} without items is not in the render, so its keys are unknown")
            for k in sorted(obj.get("data") or {}):
                out.append((k, getter(k, f"{mount_path}/{k}"), default_mode))
        return out

    def materialize(self, vol, mount_path):
        name = vol["name"]
        vdir = self.dir / "volumes" / name
        if "persistentVolumeClaim" in vol:
            return self.claim(vol["persistentVolumeClaim"]["claimName"])
        vdir.mkdir(parents=True)
        if "emptyDir" in vol:
            os.chmod(vdir, 0o777)
            self.apply_fs_group(vdir, always=True)
            return vdir
        files = []
        if "projected" in vol:
            mode = vol["projected"].get("defaultMode", 0o644)
            for src in vol["projected"]["sources"]:
                if "configMap" in src:
                    cm = src["configMap"]

                    def configmap(key, _path, cm=cm):
                        return self.configmap_data(cm["name"], key)
                    files += self.items("ConfigMap", cm, mode, configmap, mount_path)
                elif "secret" in src:
                    sec = src["secret"]

                    def secret(key, path, sec=sec):
                        return self.secret_data(sec["name"], key, path)
                    files += self.items("Secret", sec, mode, secret, mount_path)
                else:
                    fail(f"{self.name}: projected source {list(src)} is not rehearsed")
        elif "configMap" in vol:
            cm = vol["configMap"]

            def configmap(key, _path, cm=cm):
                return self.configmap_data(cm["name"], key)
            files = self.items("ConfigMap", cm, cm.get("defaultMode", 0o644), configmap, mount_path)
        elif "secret" in vol:
            sec = vol["secret"]

            def secret(key, path, sec=sec):
                return self.secret_data(sec["secretName"], key, path)
            files = self.items("Secret", dict(sec, name=sec["secretName"]), sec.get("defaultMode", 0o644), secret, mount_path)
        else:
            fail(f"{self.name}: volume {name} ({[k for k in vol if k != 'name']}) is not rehearsed")
        self.write_atomic(vdir, files)
        return vdir

    def claim(self, claim_name):
        """A PersistentVolume: a directory that outlives the pod, with the fsGroup applied as
        fsGroupChangePolicy says (OnRootMismatch: only when the top directory does not match)."""
        d = self.claims / claim_name
        fresh = not d.exists()
        d.mkdir(parents=True, exist_ok=True)
        if fresh:
            os.chmod(d, 0o755)  # a freshly provisioned volume: root's, not writable by the pod
        self.apply_fs_group(d, always=self.fs_group_policy != "OnRootMismatch")
        return d

    def apply_fs_group(self, d, always):
        if self.fs_group is None:
            return
        st = d.stat()
        if not always and st.st_gid == self.fs_group and st.st_mode & 0o2070 == 0o2070:
            return
        for p in [d] + list(d.rglob("*")):
            os.lchown(p, -1, self.fs_group)
            if p.is_symlink():
                continue
            mode = p.stat().st_mode
            os.chmod(p, (mode | 0o2070) if p.is_dir() else (mode | 0o060))

    def volume_for_mount(self, mount):
        vol = next((v for v in self.spec.get("volumes", []) if v["name"] == mount["name"]), None)
        if vol is not None:
            return self.materialize(vol, mount["mountPath"])
        tpl = next((t for t in self.sts["spec"].get("volumeClaimTemplates", []) if t["metadata"]["name"] == mount["name"]), None)
        if tpl is None:
            fail(f"{self.name}: volumeMount {mount['name']} has no volume and no claim template")
        return self.claim(f"{mount['name']}-{self.name}")

    # -- root filesystem ------------------------------------------------------------------

    def build_root(self):
        r = self.root
        r.mkdir(parents=True)
        mount("-t", "tmpfs", "-o", "mode=0755,size=64m", "tmpfs", r)
        for d in ["etc/ssl/certs", "home/nonroot", "proc", "sys", "dev", "tmp", "usr/local/bin"]:
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "tmp", 0o1777)
        os.chown(r / "home/nonroot", 65532, 65532)
        (r / "etc/passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        (r / "etc/group").write_text("root:x:0:\nnonroot:x:65532:\n")
        for ca in ["/etc/ssl/certs/ca-certificates.crt"]:
            if os.path.exists(ca):
                shutil.copyfile(ca, r / ca.lstrip("/"))
        # The shared libraries the binary links against, where the loader looks for them: what
        # distroless/cc carries (glibc, libgcc), nothing more.
        for ln in run("ldd", self.binary).splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", ln)
            if m:
                dest = r / m.group(1).lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(os.path.realpath(m.group(1)), dest)
                os.chmod(dest, 0o755)
        exe = r / self.image["binary"].lstrip("/")
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.touch()
        mount("--bind", self.binary, exe)
        mount("-o", "remount,bind,ro", exe)
        # What the kubelet writes for every container.
        (r / "etc/hostname").write_text(self.name + "\n")
        (r / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.0.1\t{self.name}.{self.sts['spec']['serviceName']}."
                                     f"{NAMESPACE}.svc.cluster.local\t{self.name}\n")
        (r / "etc/resolv.conf").write_text(f"search {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local\n"
                                           "nameserver 10.96.0.10\noptions ndots:5\n")
        mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", r / "proc")
        try:
            mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", r / "sys")
        except Failure:
            pass  # an empty /sys; the bridge does not need it
        mount("-t", "tmpfs", "-o", "mode=0755,nosuid,size=1m", "tmpfs", r / "dev")
        for dev in ["null", "zero", "full", "random", "urandom", "tty"]:
            (r / "dev" / dev).touch()
            mount("--bind", f"/dev/{dev}", r / "dev" / dev)
        (r / "dev/shm").mkdir()
        mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev,size=16m", "tmpfs", r / "dev/shm")
        # The volumes, parents before children, as bind mounts of directories on this machine.
        for m in sorted(self.container.get("volumeMounts", []), key=lambda m: m["mountPath"]):
            src = self.volume_for_mount(m)
            if m.get("subPath"):
                src = src / m["subPath"]
            target = r / m["mountPath"].lstrip("/")
            if src.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            mount("--bind", src, target)
            if m.get("readOnly"):
                mount("-o", "remount,bind,ro", target)
            self.host_paths[m["mountPath"]] = src
        if self.read_only_root:
            mount("-o", "remount,ro", r)

    def host_path(self, container_path):
        """Where a file the container sees lives on this machine."""
        for mp, src in sorted(self.host_paths.items(), key=lambda kv: -len(kv[0])):
            if container_path == mp or container_path.startswith(mp.rstrip("/") + "/"):
                return src / os.path.relpath(container_path, mp)
        return self.root / container_path.lstrip("/")

    # -- environment ------------------------------------------------------------------------

    def environment(self):
        """What the process sees: the image's ENV, then envFrom, env and the service links the
        kubelet adds for names the pod did not set."""
        pod = {}
        for ef in self.container.get("envFrom", []):
            prefix = ef.get("prefix", "")
            if "configMapRef" in ef:
                cm = find(self.docs, "ConfigMap", ef["configMapRef"]["name"]) or {}
                pod.update({prefix + k: v for k, v in (cm.get("data") or {}).items()})
            elif "secretRef" in ef:
                s = find(self.docs, "Secret", ef["secretRef"]["name"]) or {}
                pod.update({prefix + k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()})
        for e in self.container.get("env", []):
            if "value" in e:
                pod[e["name"]] = self.expand(e["value"], pod)
            elif "valueFrom" in e:
                vf = e["valueFrom"]
                if "secretKeyRef" in vf:
                    pod[e["name"]] = self.secret_data(vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"], "").decode()
                elif "configMapKeyRef" in vf:
                    pod[e["name"]] = self.configmap_data(vf["configMapKeyRef"]["name"], vf["configMapKeyRef"]["key"]).decode()
                elif "fieldRef" in vf:
                    pod[e["name"]] = {"metadata.name": self.name, "metadata.namespace": NAMESPACE,
                                      "status.podIP": "127.0.0.1", "spec.nodeName": "rehearsal-node",
                                      "spec.serviceAccountName": self.spec.get("serviceAccountName", "default")}.get(
                                          vf["fieldRef"]["fieldPath"], "")
                else:
                    fail(f"{self.name}: env {e['name']}: {list(vf)} is not rehearsed")
            else:
                pod[e["name"]] = ""
        # The kubernetes Service of the default namespace is injected into every pod, with
        # enableServiceLinks or without; the chart's Services as if it were on.
        links = service_links([("kubernetes", "10.96.0.1", [{"name": "https", "port": 443, "protocol": "TCP"}])])
        links.update(service_links(chart_services(self.docs)))
        for k, v in links.items():
            pod.setdefault(k, v)
        env = dict(BASE_IMAGE_ENV)
        env.update(self.image["env"])
        env.update({"HOSTNAME": self.name, "HOME": "/home/nonroot" if self.uid == 65532 else "/"})
        env.update(pod)
        self.links = {k for k in links if k.startswith("INCIDENT_BRIDGE_")}
        return env

    @staticmethod
    def expand(text, env):
        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)

    def argv(self, env):
        """ENTRYPOINT and CMD, replaced by the container's command and args as Kubernetes says."""
        command = self.container.get("command") or self.image["entrypoint"]
        args = self.container.get("args") if ("args" in self.container or "command" in self.container) else self.image["cmd"]
        return [self.expand(a, env) for a in list(command) + list(args or [])]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self):
        env = self.environment()
        argv = self.argv(env)
        wrapper = []
        if self.no_new_privs:
            wrapper = ["setpriv", "--no-new-privs"]
        groups = ",".join(str(g) for g in ([self.gid] + self.groups))
        cmd = wrapper + ["chroot", f"--userspec={self.uid}:{self.gid}", f"--groups={groups}", str(self.root)]
        # The runtime looks a bare command name up in the image's PATH.
        exe = argv[0]
        if "/" not in exe:
            found = [f"{d.rstrip('/')}/{exe}" for d in env.get("PATH", "").split(":") if d
                     and (self.root / d.lstrip("/") / exe).exists()]
            if not found:
                fail(f"{self.name}: {exe} is not on the image's PATH ({env.get('PATH')})")
            exe = found[0]
        self.proc = Proc(self.name, cmd + [exe] + argv[1:], self.dir / "log", env=env)
        self.started_at = time.monotonic()
        self.argv_shown = argv
        return env

    def port(self, port):
        if isinstance(port, int):
            return port
        return next(p["containerPort"] for p in self.container["ports"] if p.get("name") == port)

    def probe(self, probe):
        hg = probe["httpGet"]
        status, _ = http("GET", f"http://127.0.0.1:{self.port(hg['port'])}{hg.get('path', '/')}",
                         timeout=probe.get("timeoutSeconds", 1))
        return 200 <= status < 400

    def terminate(self):
        """SIGTERM, then SIGKILL after terminationGracePeriodSeconds; (exit status, seconds,
        whether /readyz answered 503 while the pod still served)."""
        t0 = self.deleted_at = time.monotonic()
        self.proc.p.send_signal(signal.SIGTERM)
        readiness = self.container.get("readinessProbe", {}).get("httpGet", {})
        draining = False
        if readiness:
            url = f"http://127.0.0.1:{self.port(readiness['port'])}{readiness.get('path', '/')}"
            deadline = t0 + 2
            while time.monotonic() < deadline and self.proc.alive():
                if http("GET", url, timeout=1)[0] == 503:
                    draining = True
                    break
                time.sleep(0.05)
        try:
            code = self.proc.p.wait(max(0.0, self.grace - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            self.proc.p.kill()
            self.proc.p.wait()
            fail(f"{self.name} did not exit within terminationGracePeriodSeconds ({self.grace}s): SIGKILLed\n{self.proc.tail()}")
        return code, time.monotonic() - t0, draining


class Kubelet(threading.Thread):
    """The kubelet's probe workers for one container: each probe on its own ticker from the
    container's start (initialDelaySeconds, then every periodSeconds); readiness and liveness
    skip their ticks until the startup probe has succeeded."""

    def __init__(self, pod):
        super().__init__(daemon=True)
        self.pod = pod
        c = pod.container
        self.probes = {k: c.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe") if c.get(k)}
        self.started = "startupProbe" not in self.probes
        self.started_after = 0.0 if self.started else None
        self.ready_after = None
        self.ready = False
        self.tries = {k: 0 for k in self.probes}
        self.consecutive = {k: [0, 0] for k in self.probes}  # successes, failures
        self.failed = None
        self.stop = threading.Event()
        self.terminating = threading.Event()

    def run(self):
        t0 = self.pod.started_at
        due = {k: t0 + p.get("initialDelaySeconds", 0) for k, p in self.probes.items()}
        while not self.stop.is_set() and self.failed is None:
            now = time.monotonic()
            for k, p in self.probes.items():
                if now < due[k]:
                    continue
                due[k] += p.get("periodSeconds", 10)
                if k == "startupProbe" and self.started:
                    continue
                if k != "startupProbe" and not self.started:
                    continue
                if k == "livenessProbe" and self.terminating.is_set():
                    continue
                self.tries[k] += 1
                ok = self.pod.probe(p)
                s = self.consecutive[k]
                s[0], s[1] = (s[0] + 1, 0) if ok else (0, s[1] + 1)
                elapsed = time.monotonic() - t0
                if k == "startupProbe":
                    if s[0] >= p.get("successThreshold", 1):
                        self.started, self.started_after = True, elapsed
                    elif s[1] >= p.get("failureThreshold", 3):
                        self.failed = f"startupProbe failed {s[1]} times (budget {p.get('failureThreshold', 3)} x {p.get('periodSeconds', 10)}s): the kubelet would restart the container"
                elif k == "readinessProbe":
                    if not self.ready and s[0] >= p.get("successThreshold", 1):
                        self.ready = True
                        self.ready_after = self.ready_after or elapsed
                    elif self.ready and s[1] >= p.get("failureThreshold", 3):
                        self.ready = False
                elif k == "livenessProbe" and s[1] >= p.get("failureThreshold", 3):
                    self.failed = f"livenessProbe failed {s[1]} times in a row: the kubelet would restart the container"
            if not self.pod.proc.alive():
                return
            nxt = min(due.values()) - time.monotonic()
            self.stop.wait(max(0.01, min(nxt, 0.2)))

    def wait_ready(self):
        probes = self.probes
        budget = 5.0
        if "startupProbe" in probes:
            sp = probes["startupProbe"]
            budget += sp.get("initialDelaySeconds", 0) + sp.get("failureThreshold", 3) * sp.get("periodSeconds", 10)
        if "readinessProbe" in probes:
            rp = probes["readinessProbe"]
            budget += rp.get("initialDelaySeconds", 0) + rp.get("periodSeconds", 10) * rp.get("successThreshold", 1)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if self.failed:
                fail(f"{self.pod.name}: {self.failed}\n{self.pod.proc.tail()}")
            if not self.pod.proc.alive():
                fail(f"{self.pod.name} exited with status {self.pod.proc.p.returncode} before it was Ready\n{self.pod.proc.tail()}")
            if self.ready:
                return
            time.sleep(0.05)
        fail(f"{self.pod.name} not Ready within {budget:g}s\n{self.pod.proc.tail()}")


class ServiceProxy(threading.Thread):
    """The chart's Service as kube-proxy runs it: a connection goes to a pod that is Ready and
    not being deleted, and is refused while there is none (kube-proxy rejects connections to a
    Service without endpoints). A deleted pod leaves the endpoints `lag` seconds after its
    SIGTERM, as the endpoints controller and kube-proxy take a moment to notice; the bridge's
    shutdown_delay is there to keep serving through that moment."""

    def __init__(self, lag=1.0):
        super().__init__(daemon=True)
        self.lag = lag
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.pods = []  # (pod, kubelet)

    def endpoint(self):
        now = time.monotonic()
        for pod, kubelet in self.pods:
            gone = pod.deleted_at is not None and now >= pod.deleted_at + self.lag
            if kubelet.ready and not gone and pod.proc.alive():
                return pod.port("http")
        return None

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        port = self.endpoint()
        if port is None:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # a reset, as a rejected connection looks to the client
            return
        try:
            backend = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            conn.close()
            return

        def pipe(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        t = threading.Thread(target=pipe, args=(backend, conn), daemon=True)
        t.start()
        pipe(conn, backend)
        t.join(30)
        conn.close()
        backend.close()


# ---------------------------------------------------------------------------------------------
# Senders


def notification(name):
    return (FIXTURES / name).read_bytes()


class AlertmanagerSender(threading.Thread):
    """Alertmanager's webhook notifier, compressed in time: the same notification again and
    again (a firing group repeats it every group_interval), and each one retried with a growing
    delay while the answer is a 5xx or nothing answers; a 4xx is final and ends the rehearsal."""

    def __init__(self, url, token, body, interval=0.15):
        super().__init__(daemon=True)
        self.url, self.body, self.interval = url, body, interval
        self.headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        self.sent = self.retried = 0
        self.outcomes = {}
        self.error = None
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def send_once(self):
        delay = 0.05
        while not self.stop.is_set():
            status, body = http("POST", self.url, self.body, self.headers, timeout=10)
            if 200 <= status < 300:
                with self.lock:
                    self.sent += 1
                    for o in body.get("outcomes", []):
                        self.outcomes[o["outcome"]] = self.outcomes.get(o["outcome"], 0) + 1
                return True
            if 400 <= status < 500:
                self.error = f"the bridge answered {status}: {body}"
                return False
            with self.lock:
                self.retried += 1
            self.stop.wait(delay)
            delay = min(delay * 2, 1.0)
        return False

    def run(self):
        while not self.stop.is_set():
            if not self.send_once() and self.error:
                return
            self.stop.wait(self.interval)

    def snapshot(self):
        with self.lock:
            return self.sent, self.retried, dict(self.outcomes)


def send_until_accepted(url, token, body, timeout=15):
    s = AlertmanagerSender(url, token, body)
    deadline = time.monotonic() + timeout
    t = threading.Thread(target=s.send_once, daemon=True)
    t.start()
    t.join(timeout)
    s.stop.set()
    if s.error:
        fail(s.error)
    if s.sent != 1 or time.monotonic() > deadline:
        fail(f"a notification to {url} was not accepted within {timeout}s")


# ---------------------------------------------------------------------------------------------
# Scenarios


class Rehearsal:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.binary = str(Path(args.binary).resolve())
        self.helm, self.chart = args.helm, Path(args.chart)
        self.image = image_config(ROOT / "Dockerfile")
        self.summary = []

    def scenario_dir(self, name):
        d = self.work / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        d.mkdir()
        return d

    @staticmethod
    def config_of(docs):
        sts = one(docs, "StatefulSet")
        cm_name = next(s["configMap"]["name"] for v in sts["spec"]["template"]["spec"]["volumes"] if "projected" in v
                       for s in v["projected"]["sources"] if "configMap" in s)
        return tomllib.loads(one(docs, "ConfigMap", cm_name)["data"]["config.toml"])

    def plan(self, quiet=False):
        """(name, values files, extra --set, notes) of every scenario that can run here."""
        plans = [("default values", [], [], [])]
        for f in sorted(self.chart.glob("ci/*-values.yaml")):
            cfg = self.config_of(render(self.helm, self.chart, [f]))
            nats = cfg.get("nats") or {}
            tls = nats.get("tls") or {}
            if tls.get("required") or any(k.endswith("_file") for k in tls):
                if not quiet:
                    self.summary.append(f"skip {f.name}: NATS over TLS with client certificates, which a plain local nats-server cannot take")
                    step(f"{f.name}: skipped (NATS over TLS with client certificates)")
                continue
            sets, notes = [], []
            store = cfg.get("store") or {}
            if store.get("backend") == "jetstream-kv" and int(store.get("kv_replicas", 1)) > 1:
                sets.append("config.store.kv_replicas=1")
                notes.append("kv_replicas=1 on the one local nats-server")
            plans.append((f.name, [f], sets, notes))
        return plans

    def start_pod(self, docs, ordinal, scenario_dir, tag):
        pod = Pod(docs, ordinal, scenario_dir, scenario_dir / "claims", self.binary, self.image, tag)
        pod.dir.mkdir()
        pod.build_root()
        return pod

    def run_pod(self, pod, service):
        env = pod.start()
        leaked = sorted(pod.links)
        info(f"{pod.name}: {' '.join(pod.argv_shown)} as {pod.uid}:{pod.gid} (groups {pod.groups}), "
             f"root {'read-only' if pod.read_only_root else 'writable'}, {len(leaked)} INCIDENT_BRIDGE_* service-link variables "
             f"({', '.join(leaked[:3])}, ...)")
        kubelet = Kubelet(pod)
        kubelet.start()
        service.pods.append((pod, kubelet))
        kubelet.wait_ready()
        info(f"{pod.name}: started after {kubelet.started_after:.1f}s ({kubelet.tries.get('startupProbe', 0)} startup probe(s)), "
             f"Ready after {kubelet.ready_after:.1f}s")
        return kubelet, env

    def stop_pod(self, pod, kubelet):
        kubelet.terminating.set()
        code, took, draining = pod.terminate()
        kubelet.stop.set()
        if kubelet.failed:
            fail(f"{pod.name}: {kubelet.failed}\n{pod.proc.tail()}")
        if code != 0:
            fail(f"{pod.name} exited with status {code} after SIGTERM\n{pod.proc.tail()}")
        if not draining:
            fail(f"{pod.name}: /readyz did not answer 503 after SIGTERM, so endpoints would keep routing to a pod that is leaving")
        info(f"{pod.name}: SIGTERM -> /readyz 503 while still serving -> exit 0 after {took:.1f}s (grace {pod.grace}s)")
        return took

    def token_of(self, pod, env, var):
        path = env.get(var)
        if not path:
            return None
        return pod.host_path(path).read_text().rstrip("\n")

    def source_token(self, pod, cfg, kind):
        """The bearer token of the first source of this kind whose auth is bearer, as the
        mounted file holds it."""
        for name, src in (cfg.get("sources") or {}).items():
            auth = (src.get("auth") or [{}])[0]
            if src.get("kind") == kind and auth.get("scheme") == "bearer" and auth.get("token_files"):
                return name, pod.host_path(auth["token_files"][0]).read_text().rstrip("\n")
        return None, None

    def plain(self, name, values, sets, notes):
        step(f"{name}: render, run pod 0 as the kubelet would, probe, exercise, stop")
        d = self.scenario_dir(name)
        sim_port = free_port()
        base = self.config_of(render(self.helm, self.chart, values, sets))
        nats = None
        if base.get("nats"):
            nats = NatsServer(self.args.nats_server, d, free_port())
            sets = sets + [f"config.nats.url={nats.url}"]
        docs = render(self.helm, self.chart, values, sets + [f"config.scwm.url=http://127.0.0.1:{sim_port}/incident"])
        cfg = self.config_of(docs)
        replicas = one(docs, "StatefulSet")["spec"].get("replicas", 1)
        if replicas > 1:
            notes = notes + [f"pod 0 of {replicas} only"]
        pod = self.start_pod(docs, 0, d, "a")
        env = pod.environment()
        sim = Simulator(self.binary, d, sim_port, self.token_of(pod, env, "INCIDENT_BRIDGE_SCWM__TOKEN_FILE"))
        service = ServiceProxy()
        service.start()
        kubelet, env = self.run_pod(pod, service)
        source, token = self.source_token(pod, cfg, "alertmanager")
        if source:
            send_until_accepted(f"http://127.0.0.1:{service.port}/webhooks/{source}", token, notification("firing-single.json"))
            what = f"an Alertmanager notification to /webhooks/{source} through the Service"
        else:
            status, body = http("POST", f"http://127.0.0.1:{service.port}/v1/incidents/add",
                                json.dumps({"title": "pod rehearsal", "severity": "low"}).encode(),
                                {"content-type": "application/json"}, timeout=10)
            if status != 200:
                fail(f"POST /v1/incidents/add answered {status}: {body}")
            what = "a native add through the Service"
        incidents = sim.incidents()
        if len(incidents) != 1:
            fail(f"expected one incident in SCWM after {what}, found {len(incidents)}")
        info(f"{pod.name}: {what} -> incident {incidents[0]['id']} in SCWM")
        took = self.stop_pod(pod, kubelet)
        sim.proc.stop()
        if nats:
            nats.proc.stop()
        line = (f"ok   {name}: Ready in {kubelet.ready_after:.1f}s with {len(pod.links)} INCIDENT_BRIDGE_* service links set; "
                f"{what} -> 1 incident; SIGTERM -> exit 0 in {took:.1f}s of {pod.grace}s"
                + (f" ({'; '.join(notes)})" if notes else "") + (" [with nats-server]" if nats else ""))
        self.summary.append(line)

    def rollout(self):
        name = "rollout"
        values = [ROOT / "scripts/fixtures/rollout-values.yaml"]
        step(f"{name}: alerts firing while an upgrade with a changed config replaces the pod on the same store")
        d = self.scenario_dir(name)
        sim_port = free_port()
        url = [f"config.scwm.url=http://127.0.0.1:{sim_port}/incident"]
        docs1 = render(self.helm, self.chart, values, url)
        docs2 = render(self.helm, self.chart, values, url + ["config.pipeline.workers=8"])
        sts1, sts2 = one(docs1, "StatefulSet"), one(docs2, "StatefulSet")
        sum1 = sts1["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        sum2 = sts2["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        if sum1 == sum2:
            fail("checksum/config did not change with config.pipeline.workers: the upgrade would not roll the pod")
        strategy = sts2["spec"].get("updateStrategy", {}).get("type", "RollingUpdate")
        if strategy != "RollingUpdate":
            fail(f"updateStrategy is {strategy}: the rehearsal replays the StatefulSet's RollingUpdate")
        info(f"checksum/config {sum1[:12]} -> {sum2[:12]}: the upgrade rolls the pod (StatefulSet {strategy}: old pod deleted, then the new one created)")
        cfg = self.config_of(docs1)
        store_path = cfg["store"]["path"]

        pod1 = self.start_pod(docs1, 0, d, "a")
        env = pod1.environment()
        sim = Simulator(self.binary, d, sim_port, self.token_of(pod1, env, "INCIDENT_BRIDGE_SCWM__TOKEN_FILE"))
        service = ServiceProxy()
        service.start()
        kubelet1, env = self.run_pod(pod1, service)
        source, token = self.source_token(pod1, cfg, "alertmanager")
        if not source:
            fail("rollout-values.yaml has no Alertmanager source with bearer auth")
        # Alertmanager reaches the bridge through its Service, which routes to Ready pods only.
        hook = f"http://127.0.0.1:{service.port}/webhooks/{source}"
        firing = notification("firing-two-alerts.json")
        alerts = json.loads(firing)["alerts"]
        keys = {f"{source}:fp:{a['fingerprint']}" for a in alerts}
        sender = AlertmanagerSender(hook, token, firing)
        sender.start()
        wait_for("both alerts' incidents in SCWM", lambda: len(sim.incidents()) >= len(alerts) and sender.snapshot()[0] >= 5, 15)
        store_file = pod1.host_path(store_path)
        if not store_file.exists():
            fail(f"no store file at {store_path} (on the claim) while the first pod runs")
        inode = store_file.stat().st_ino
        before = sender.snapshot()
        info(f"{pod1.name}: {before[0]} notifications accepted, SCWM holds {len(sim.incidents())} incidents; store {store_path} on claim {store_file.parent.name}")

        # The StatefulSet controller's RollingUpdate of ordinal 0: delete, wait until gone, create.
        self.stop_pod(pod1, kubelet1)
        pod2 = self.start_pod(docs2, 0, d, "b")
        if not store_file.exists() or store_file.stat().st_ino != inode:
            fail("the store file did not survive the old pod")
        rendered = tomllib.loads(pod2.host_path("/etc/incident-bridge/config.toml").read_text())
        if rendered.get("pipeline", {}).get("workers") != 8:
            fail("the new pod's config.toml lacks the upgrade's workers = 8")
        kubelet2, _ = self.run_pod(pod2, service)
        after_ready = sender.snapshot()[0]
        wait_for("notifications accepted by the new pod", lambda: sender.snapshot()[0] >= after_ready + 8, 20)
        sender.stop.set()
        sender.join(15)
        if sender.error:
            fail(sender.error)
        sent, retried, outcomes = sender.snapshot()

        incidents = sim.incidents()
        by_key = {}
        for inc in incidents:
            by_key.setdefault(inc["fields"].get("externalRef"), []).append(inc)
        adds = [r for r in sim.requests() if "add-incident" in json.dumps((r.get("body") or {}).get("header", {}))]
        if set(by_key) != keys or any(len(v) != 1 for v in by_key.values()):
            fail(f"SCWM should hold exactly one incident per alert ({sorted(keys)}), holds "
                 f"{ {k: [i['id'] for i in v] for k, v in by_key.items()} }")
        if any(v[0]["status"] != "open" for v in by_key.values()):
            fail(f"an incident is not open while its alert fires: {[(i['id'], i['status']) for i in incidents]}")
        info(f"{sent} notifications accepted ({retried} retried), outcomes {outcomes}; SCWM: {len(incidents)} incidents "
             f"for {len(alerts)} alerts, {len(adds)} add request(s)")

        send_until_accepted(hook, token, notification("resolved-two-alerts.json"))
        incidents = sim.incidents()
        if len(incidents) != len(alerts) or any(i["status"] != "closed" for i in incidents):
            fail(f"the resolve after the rollout should close both incidents: {[(i['id'], i['status']) for i in incidents]}")
        info(f"resolve after the rollout: {', '.join(i['id'] for i in incidents)} closed")
        took = self.stop_pod(pod2, kubelet2)
        sim.proc.stop()
        self.summary.append(
            f"ok   rollout: checksum/config changed; old pod exit 0 in {took:.1f}s of {pod1.grace}s; new pod Ready in "
            f"{kubelet2.ready_after:.1f}s on the same store file; {sent} notifications ({retried} retried): "
            f"{len(incidents)} incidents for {len(alerts)} alerts, {len(adds)} adds, all closed by the resolve")

    def one(self, name):
        """Runs the scenario called name."""
        if name == "rollout":
            return self.rollout()
        for plan in self.plan(quiet=True):
            if plan[0] == name:
                return self.plain(*plan)
        fail(f"no scenario {name!r}")


SCENARIO_ENV = "POD_REHEARSAL_WORK"


def child(args):
    """One scenario, in a network namespace of its own, inside the parent's mount namespace."""
    loopback_up()
    work = Path(os.environ[SCENARIO_ENV])
    r = Rehearsal(args, work)
    try:
        r.one(args.only)
    except Failure as e:
        print(f"FAIL: {args.only}: {e}", flush=True)
        return 1
    finally:
        Proc.stop_all()
    for line in r.summary:
        print(f"SUMMARY {line}", flush=True)
    return 0


def parent(args):
    """Every scenario at once, each in a network namespace of its own (so each pod has port
    8080 to itself, as pods do), their output printed in order once they are done."""
    work = Path(tempfile.mkdtemp(prefix="pod-rehearsal-"))
    # Everything the run writes lives on a tmpfs in this mount namespace: gone with it.
    mount("-t", "tmpfs", "-o", "mode=0755,size=1g", "tmpfs", work)
    os.chmod(work, 0o755)
    r = Rehearsal(args, work)
    failed = False
    try:
        step(f"binary {r.binary} ({run(r.binary, '--version').strip()}); image: ENTRYPOINT {r.image['entrypoint']}, "
             f"USER {r.image['user']}, ENV {r.image['env']}")
        names = [plan[0] for plan in r.plan()] + ["rollout"]
        if args.only:
            names = [n for n in names if n == args.only] or fail(f"no scenario {args.only!r} (there are: {', '.join(names)})")
        step(f"{len(names)} scenario(s) at once, each in a network namespace of its own: {', '.join(names)}")
        children = []
        for name in names:
            out = open(work / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.out", "w+")
            argv = ["unshare", "--net", sys.executable, __file__, args.binary, "--helm", args.helm, "--chart", args.chart,
                    "--nats-server", args.nats_server, "--only", name]
            env = dict(os.environ, **{INNER: "1", SCENARIO_ENV: str(work), "POD_REHEARSAL_T0": str(STARTED)})
            children.append((name, out, subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)))
        summary = list(r.summary)
        deadline = time.monotonic() + 110
        for name, out, proc in children:
            try:
                code = proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
                print(f"FAIL: {name}: still running after the rehearsal's time bound", flush=True)
            out.seek(0)
            for line in out.read().splitlines():
                if line.startswith("SUMMARY "):
                    summary.append(line[len("SUMMARY "):])
                else:
                    print(line, flush=True)
            if code != 0:
                failed = True
                summary.append(f"FAIL {name} (exit {code}; the step that failed is above)")
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    finally:
        Proc.stop_all()
        subprocess.run(["umount", "--recursive", "--lazy", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    step("summary")
    for line in summary:
        print(f"  {line}")
    if failed:
        print("pod rehearsal FAILED", file=sys.stderr)
        return 1
    print(f"  pod rehearsal passed in {time.time() - STARTED:.1f}s")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--helm", default=str(ROOT / ".tools/helm/helm"))
    ap.add_argument("--chart", default=str(ROOT / "charts/incident-bridge"))
    ap.add_argument("--nats-server", default=str(ROOT / ".tools/venv/bin/nats-server"))
    ap.add_argument("--only", help="run one scenario: 'default values', a ci/ file name, or 'rollout'")
    args = ap.parse_args()

    # chroot, mount and ip live in the system administrator's directories, which a minimal PATH
    # (a CI job's, `env PATH=/usr/bin:/bin`) leaves out.
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(path + [d for d in ("/usr/sbin", "/sbin") if d not in path])
    if os.environ.get(INNER) != "1":
        if os.geteuid() != 0:
            print("pod_rehearsal.py needs root: private mount and network namespaces, bind mounts, chroot", file=sys.stderr)
            return 2
        for tool in ("unshare", "mount", "chroot", "setpriv", "ldd"):
            if shutil.which(tool) is None:
                print(f"pod_rehearsal.py needs {tool} (util-linux, coreutils, libc-bin)", file=sys.stderr)
                return 2
        if not os.access(args.binary, os.X_OK):
            print(f"{args.binary} is not an executable", file=sys.stderr)
            return 2
        # A private mount namespace: nothing mounted here is seen outside or outlives the run.
        env = dict(os.environ, **{INNER: "1"})
        return subprocess.run(["unshare", "--mount", "--propagation", "private",
                               sys.executable, __file__] + sys.argv[1:], env=env).returncode
    if os.environ.get(SCENARIO_ENV):
        return child(args)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
