#!/usr/bin/env python3
"""Validates deploy/ (and RUNBOOK.md) offline: `cargo xtask validate-deploy`.

Run with the venv that scripts/bootstrap-deploy.sh creates (.tools/deploy-py),
which holds kubernetes-validate (the Kubernetes OpenAPI schemas, bundled) and
kubectl (for `kubectl kustomize`). promtool comes from Debian's `prometheus`
package, and the Prometheus Operator CRD schemas from the npm package
@kubernetes-models/prometheus-operator (.tools/deploy-node).

Checks, in order:
  dockerfile  multi-stage build, non-root USER in the runtime stage, ports,
              ENTRYPOINT runs `serve` with the config the image carries
  config      eventbus.toml parses and uses only keys the server knows
  kustomize   every file a kustomization lists exists; base and each overlay
              render with `kubectl kustomize`
  schemas     every rendered object (and deploy/k8s/maintenance/*.yaml) is
              valid for Kubernetes 1.27 (oldest with GA gRPC probes) and the
              newest bundled version, strict (unknown fields are errors);
              ServiceMonitor / PrometheusRule against the operator's schemas
  wiring      what schemas cannot see: selectors match pod labels, ports
              exist, probes, grace period vs shutdown-grace, service links off
  alerts      promtool check + unit tests; summary/description/runbook_url on
              every alert, runbook anchors exist; the PrometheusRule equals
              alerts.yaml (`--write` regenerates it)
  dashboard   valid JSON; every panel queries a known eventbus_ metric through
              ${DS_PROMETHEUS}; every query parses as PromQL (promtool)
  runbook     every `eventbus ...` command line uses subcommands and flags the
              CLI has (parsed from server/src/cli), every buf curl / grpcurl
              method exists in proto/

Exit status 0 when everything passes, 1 otherwise (all errors are listed).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import yaml
import jsonschema
import referencing
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yaml"
PROMETHEUS_RULE = K8S / "components" / "monitoring" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "eventbus-dashboard.json"
RUNBOOK = ROOT / "RUNBOOK.md"
RUNBOOK_URL = "https://github.com/eventbus/eventbus/blob/main/RUNBOOK.md"

# Kubernetes versions to validate against: the oldest we support (native gRPC
# probes are GA from 1.27) and the newest schema set kubernetes-validate has.
K8S_MIN = "1.27"

# The server's metrics contract (name -> type). Alerts and dashboard may use
# nothing else; histograms only through _bucket, _sum and _count.
METRICS = {
    "eventbus_published_events_total": "counter",
    "eventbus_published_bytes_total": "counter",
    "eventbus_delivered_total": "counter",
    "eventbus_acked_total": "counter",
    "eventbus_nacked_total": "counter",
    "eventbus_redelivered_total": "counter",
    "eventbus_dead_lettered_total": "counter",
    "eventbus_filtered_total": "counter",
    "eventbus_rpc_requests_total": "counter",
    "eventbus_rpc_errors_total": "counter",
    "eventbus_publish_duration_seconds": "histogram",
    "eventbus_commit_duration_seconds": "histogram",
    "eventbus_commit_batch_events": "histogram",
    "eventbus_delivery_latency_seconds": "histogram",
    "eventbus_subscription_backlog": "gauge",
    "eventbus_subscription_in_flight": "gauge",
    "eventbus_subscription_oldest_unacked_age_seconds": "gauge",
    "eventbus_dlq_size": "gauge",
    "eventbus_dlq_oldest_age_seconds": "gauge",
    "eventbus_subscribe_streams": "gauge",
    "eventbus_storage_size_bytes": "gauge",
    "eventbus_storage_pending_compaction_bytes": "gauge",
    "eventbus_disk_total_bytes": "gauge",
    "eventbus_disk_available_bytes": "gauge",
    "eventbus_ready": "gauge",
    "eventbus_subscription_paused": "gauge",
    "eventbus_storage_state": "gauge",
    "eventbus_disk_reserve_bytes": "gauge",
    "eventbus_data_loss_total": "counter",
}

# Config keys of the operability contract that server/src/config.rs may not
# have yet (accepted, with a warning, until it does).
CONTRACT_CONFIG_KEYS = {"metrics-listen"}

# CLI commands and flags of the operability contract that server/src/cli may
# not have yet: `eventbus status | backup | restore` and `serve --metrics-listen`.
CONTRACT_COMMANDS = {"status": set(), "backup": set(), "restore": set()}
CONTRACT_FLAGS = {"to", "from", "data-dir", "metrics-listen"}

# Core kinds validated with kubernetes-validate; CRD kinds with the operator's
# schemas (scripts/validate-deploy-crds.mjs).
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


class Report:
    def __init__(self):
        self.errors = []
        self.warnings = []

    def error(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    def warn(self, where, msg):
        self.warnings.append(f"{where}: {msg}")


R = Report()


def rel(p):
    return os.path.relpath(p, ROOT)


def tool(name):
    """A binary of the deploy venv, else from PATH."""
    venv_bin = Path(sys.executable).parent / name
    return str(venv_bin) if venv_bin.exists() else name


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)


def kebab(ident):
    return ident.replace("_", "-")


# --------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------
def check_dockerfile():
    where = "deploy/Dockerfile"
    path = DEPLOY / "Dockerfile"
    if not path.is_file():
        R.error(where, "missing")
        return
    # Join continuation lines, drop comments.
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    stages = []  # (from line, [instructions])
    for l in lines:
        word = l.split()[0].upper()
        if word == "FROM":
            stages.append((l, []))
        elif stages:
            stages[-1][1].append(l)
        elif word != "ARG":
            R.error(where, f"instruction before the first FROM: {l}")
    if len(stages) < 2:
        R.error(where, f"expected a multi-stage build (>= 2 FROM), found {len(stages)}")
        return
    builder = stages[0][0].split()
    if len(builder) < 4 or builder[2].upper() != "AS":
        R.error(where, "the build stage must be named (FROM ... AS builder)")
    final_from, final = stages[-1]
    if "bookworm-slim" not in final_from:
        R.error(where, f"runtime stage should be debian:bookworm-slim, is `{final_from}`")
    users = [l.split(None, 1)[1] for l in final if l.split()[0].upper() == "USER"]
    if not users:
        R.error(where, "runtime stage has no USER line (would run as root)")
    else:
        user = users[-1].split(":")[0]
        if user in ("root", "0"):
            R.error(where, f"runtime stage runs as root (USER {users[-1]})")
        elif not user.isdigit():
            R.error(where, f"USER should be numeric (runAsNonRoot cannot verify a name): {users[-1]}")
    if not any(l.upper().startswith("COPY --FROM=") for l in final):
        R.error(where, "runtime stage copies nothing from the build stage")
    exposed = {p.split("/")[0] for l in final if l.split()[0].upper() == "EXPOSE" for p in l.split()[1:]}
    for port in ("50051", "9090"):
        if port not in exposed:
            R.error(where, f"runtime stage does not EXPOSE {port}")
    entry = [l for l in final if l.split()[0].upper() == "ENTRYPOINT"]
    if not entry:
        R.error(where, "runtime stage has no ENTRYPOINT")
    else:
        try:
            argv = json.loads(entry[-1].split(None, 1)[1])
        except json.JSONDecodeError:
            R.error(where, "ENTRYPOINT must use the exec (JSON array) form, so SIGTERM reaches eventbus")
            argv = []
        if argv and ("serve" not in argv or not any(a.startswith("--config") for a in argv)):
            R.error(where, f"ENTRYPOINT should run `eventbus serve --config ...`: {argv}")
    if not any(l.split()[0].upper() == "VOLUME" and "/var/lib/eventbus" in l for l in final):
        R.error(where, "runtime stage does not declare VOLUME /var/lib/eventbus")


# --------------------------------------------------------------------------
# eventbus.toml
# --------------------------------------------------------------------------
def server_config_keys():
    """Field names of `pub struct Config` in server/src/config.rs, kebab-case."""
    src = ROOT / "server" / "src" / "config.rs"
    if not src.is_file():
        return None
    m = re.search(r"pub struct Config \{(.*?)\n\}", src.read_text(), re.S)
    if not m:
        return None
    return {kebab(f) for f in re.findall(r"^\s*pub (\w+):", m.group(1), re.M)}


def check_config(path=K8S / "base" / "eventbus.toml"):
    where = rel(path)
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        R.error(where, f"cannot parse: {e}")
        return None
    known = server_config_keys()
    if known is None:
        R.warn(where, "could not read the Config struct of server/src/config.rs; keys not checked")
        return config
    for key in config:
        if key in known:
            continue
        if key in CONTRACT_CONFIG_KEYS:
            R.warn(where, f"`{key}` is not in server/src/config.rs yet (the server would reject it)")
        else:
            R.error(where, f"unknown config key `{key}`: the server rejects unknown keys at start-up")
    return config


# --------------------------------------------------------------------------
# Kustomize
# --------------------------------------------------------------------------
def kustomization_dirs():
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def check_kustomization_files(d):
    """Every path a kustomization lists must exist (kubectl reports only the first)."""
    where = rel(d / "kustomization.yaml")
    k = yaml.safe_load((d / "kustomization.yaml").read_text()) or {}
    listed = list(k.get("resources", [])) + list(k.get("components", []))
    for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        for f in gen.get("files", []):
            listed.append(f.split("=", 1)[-1])
        for f in gen.get("envs", []):
            listed.append(f)
    for p in k.get("patches", []) + k.get("patchesJson6902", []):
        if "path" in p:
            listed.append(p["path"])
    listed += k.get("patchesStrategicMerge", [])
    for entry in listed:
        if "://" in entry:
            R.error(where, f"remote resource {entry}: the build must work offline")
            continue
        target = (d / entry).resolve()
        if target.is_dir():
            if not any((target / n).is_file() for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
                R.error(where, f"{entry} is a directory without a kustomization.yaml")
        elif not target.is_file():
            R.error(where, f"{entry} does not exist")
    return k.get("kind", "Kustomization")


def render(d):
    res = run([tool("kubectl"), "kustomize", str(d)])
    if res.returncode != 0:
        R.error(rel(d), "kubectl kustomize failed:\n    " + res.stderr.strip().replace("\n", "\n    "))
        return []
    return [doc for doc in yaml.safe_load_all(res.stdout) if doc]


# --------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------
_validators = {}


def core_validator(version, kind, api_version):
    """A cached strict Draft 2020-12 validator (kubernetes-validate's schemas)."""
    key = (version, kind, api_version)
    if key not in _validators:
        schema_dir = f"v{version}-local-strict"
        group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        try:
            schema = kv.schema_contents(f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group}.json", version)
        except FileNotFoundError:
            _validators[key] = None
            return None
        dkey = ("defs", version)
        if dkey not in _validators:
            _validators[dkey] = kv.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)
        registry = referencing.Registry().with_resources(
            [
                ("", referencing.Resource.from_contents(schema, default_specification=referencing.jsonschema.DRAFT202012)),
                ("_definitions.json", referencing.Resource.from_contents(_validators[dkey], default_specification=referencing.jsonschema.DRAFT202012)),
            ]
        )
        _validators[key] = jsonschema.Draft202012Validator(schema, registry=registry)
    return _validators[key]


def k8s_versions():
    versions = kv.all_versions()  # e.g. ["1.25.0", ..., "1.37.0"]
    oldest = [v for v in versions if kv.major_minor(v) == K8S_MIN]
    return sorted(set(oldest + [versions[-1]]), key=lambda v: [int(x) for x in v.split(".")])


def name_of(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def validate_core(docs, origin, versions):
    for doc in docs:
        kind, api = doc.get("kind"), doc.get("apiVersion")
        if (api, kind) in CRD_KINDS:
            continue
        for version in versions:
            validator = core_validator(version, kind or "", api or "")
            if validator is None:
                R.error(origin, f"{name_of(doc)}: no schema for {api} {kind} in Kubernetes {kv.major_minor(version)}")
                break
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
            for e in errors[:10]:
                path = "/".join(str(p) for p in e.absolute_path) or "(root)"
                R.error(origin, f"{name_of(doc)} (k8s {kv.major_minor(version)}): {path}: {e.message[:300]}")
            if errors:
                break


def validate_crds(docs, origin):
    crds = [d for d in docs if (d.get("apiVersion"), d.get("kind")) in CRD_KINDS]
    unknown = [d for d in docs if (d.get("apiVersion"), d.get("kind")) not in CRD_KINDS
               and "." in (d.get("apiVersion") or "").split("/")[0]
               and not (d.get("apiVersion") or "").split("/")[0].endswith("k8s.io")]
    for d in unknown:
        R.error(origin, f"{name_of(d)}: no schema known for {d.get('apiVersion')}")
    if not crds:
        return
    node_modules = ROOT / ".tools" / "deploy-node" / "node_modules"
    res = subprocess.run(
        ["node", str(ROOT / "scripts" / "validate-deploy-crds.mjs"), str(node_modules)],
        input=json.dumps(crds), capture_output=True, text=True, cwd=ROOT,
    )
    for line in res.stdout.splitlines():
        R.error(origin, line)
    if res.returncode != 0 and not res.stdout.strip():
        R.error(origin, "CRD validator failed: " + res.stderr.strip())


# --------------------------------------------------------------------------
# Wiring: what a schema cannot see
# --------------------------------------------------------------------------
def parse_duration(s):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", s or "")
    if not m:
        return None
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_cluster_wiring(docs, origin, config):
    """Cluster mode (deploy/k8s/cluster): gateways as a Deployment with an
    HPA and a PDB over a 3-node NATS StatefulSet; the gateway config points
    at NATS, and both read the credentials from one Secret."""
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    deps = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    gw = deps.get("eventbus-gateway")
    sts = {d["metadata"]["name"]: d for d in by_kind.get("StatefulSet", [])}
    nats = sts.get("nats")
    if gw is None or nats is None:
        R.error(origin, "cluster mode needs Deployment/eventbus-gateway and StatefulSet/nats")
        return
    if (config or {}).get("storage") != "jetstream":
        R.error(origin, "the gateway config must set storage = \"jetstream\"")
    if nats["spec"].get("replicas", 1) < 3 or nats["spec"]["replicas"] % 2 == 0:
        R.error(origin, "StatefulSet/nats: an odd number of at least 3 replicas keeps a quorum through one loss")
    conf = next((cm.get("data", {}).get("nats.conf", "") for cm in by_kind.get("ConfigMap", [])
                 if "nats.conf" in cm.get("data", {})), "")
    if not re.search(r"sync_interval:\s*always", conf):
        R.error(origin, "nats.conf must set jetstream { sync_interval: always }: the gateway refuses to start otherwise")
    for name, workload in (("eventbus-gateway", gw), ("nats", nats)):
        spec = workload["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        if not matches(spec.get("selector", {}).get("matchLabels"), labels):
            R.error(origin, f"{name}: selector does not match the pod template labels")
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", [])
                if matches(p.get("spec", {}).get("selector", {}).get("matchLabels"), labels)]
        if len(pdbs) != 1:
            R.error(origin, f"{name}: want exactly one PodDisruptionBudget selecting it, found {len(pdbs)}")
        pod = spec["template"]["spec"]
        secrets = set()
        for c in pod.get("containers", []):
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secrets.add(ref["name"])
        if "nats-credentials" not in secrets:
            R.error(origin, f"{name}: must read the NATS credentials from Secret nats-credentials")
    pod = gw["spec"]["template"]["spec"]
    if pod.get("enableServiceLinks") is not False:
        R.error(origin, "eventbus-gateway: enableServiceLinks must be false (EVENTBUS_* variables are config keys)")
    c = next((c for c in pod.get("containers", []) if c.get("name") == "eventbus"), {})
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = (c.get(probe) or {}).get("httpGet", {})
        if get.get("port") not in ("metrics", 9090) or get.get("path") != "/readyz":
            R.error(origin, f"eventbus-gateway: {probe} must be an httpGet of /readyz on the metrics port")
    hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", [])
            if h["spec"]["scaleTargetRef"].get("name") == "eventbus-gateway"]
    if len(hpas) != 1:
        R.error(origin, "eventbus-gateway: want exactly one HorizontalPodAutoscaler")
    elif hpas[0]["spec"].get("minReplicas", 1) < 2:
        R.error(origin, "eventbus-gateway: the HPA's minReplicas must be at least 2 (one gateway is a single point of failure)")
    gw_labels = gw["spec"]["template"]["metadata"].get("labels", {})
    for svc in by_kind.get("Service", []):
        sel = svc.get("spec", {}).get("selector", {})
        target = gw_labels if sel.get("app.kubernetes.io/name") == "eventbus" else \
            nats["spec"]["template"]["metadata"].get("labels", {})
        if not matches(sel, target):
            R.error(origin, f"{name_of(svc)}: selector {sel} matches no pod of the build")


def check_wiring(docs, origin, config):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    sts_list = by_kind.get("StatefulSet", [])
    if len(sts_list) != 1:
        R.error(origin, f"expected exactly one StatefulSet, found {len(sts_list)}")
        return
    sts = sts_list[0]
    spec = sts.get("spec", {})
    where = f"{origin}: {name_of(sts)}"
    pod = spec.get("template", {}).get("spec", {})
    pod_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})

    if spec.get("replicas") != 1:
        R.error(where, "replicas must be 1: the storage is a single embedded RocksDB")
    if not matches(spec.get("selector", {}).get("matchLabels"), pod_labels):
        R.error(where, "selector does not match the pod template labels")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    headless = services.get(spec.get("serviceName"))
    if not headless or headless.get("spec", {}).get("clusterIP") != "None":
        R.error(where, f"serviceName {spec.get('serviceName')!r} is not a headless Service in the build")
    if pod.get("enableServiceLinks") is not False:
        R.error(where, "enableServiceLinks must be false: the Service `eventbus` would inject "
                       "EVENTBUS_SERVICE_HOST etc., which the server rejects as unknown config keys")
    psc = pod.get("securityContext", {})
    if not psc.get("runAsNonRoot") or not psc.get("fsGroup"):
        R.error(where, "pod securityContext needs runAsNonRoot and fsGroup")
    containers = pod.get("containers", [])
    c = next((c for c in containers if c.get("name") == "eventbus"), None)
    if c is None:
        R.error(where, "no container named eventbus")
        return
    csc = c.get("securityContext", {})
    if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation") is not False:
        R.error(where, "container needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    if ports.get("grpc") != 50051 or ports.get("metrics") != 9090:
        R.error(where, f"container ports must be grpc:50051 and metrics:9090, are {ports}")
    # Probes go to the metrics port: the kubelet's gRPC probe speaks no TLS
    # and carries no credentials. With TLS on, the metrics port speaks HTTPS.
    env = {e.get("name"): e.get("value") for e in c.get("env", [])}
    tls_on = bool(env.get("EVENTBUS_TLS__CERT_FILE")) or bool((config or {}).get("tls", {}).get("cert-file"))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = (c.get(probe) or {}).get("httpGet", {})
        if get.get("port") not in ("metrics", 9090) or get.get("path") != "/readyz":
            R.error(where, f"{probe} must be an httpGet of /readyz on the metrics port (gRPC probes "
                           "speak no TLS and carry no credentials)")
        if get.get("scheme", "HTTP") != ("HTTPS" if tls_on else "HTTP"):
            R.error(where, f"{probe} scheme must be {'HTTPS' if tls_on else 'HTTP'}: the metrics port "
                           f"speaks {'TLS' if tls_on else 'plaintext'}")
    if tls_on:
        tls_dir = os.path.dirname(env.get("EVENTBUS_TLS__CERT_FILE") or config["tls"]["cert-file"])
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        secret_mounts = [m for m in c.get("volumeMounts", [])
                         if volumes.get(m["name"], {}).get("secret")]
        if not any(m["mountPath"].rstrip("/") == tls_dir for m in secret_mounts):
            R.error(where, f"TLS files are read from {tls_dir}, but no Secret volume is mounted there")
        if any("subPath" in m for m in secret_mounts):
            R.error(where, "a Secret mounted with subPath never sees updates: certificates would not rotate")
    if "resources" not in c or "memory" not in c["resources"].get("limits", {}):
        R.error(where, "container needs resource requests and a memory limit")

    # Config: the mounted ConfigMap exists, holds the file --config names, and
    # the data dir is on the data volume.
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    args = c.get("args", []) + c.get("command", [])
    config_arg = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
    if not config_arg:
        R.error(where, "container args must pass --config=<file>")
    configmaps = {cm["metadata"]["name"]: cm for cm in by_kind.get("ConfigMap", [])}
    for name, vol in volumes.items():
        cm = vol.get("configMap", {}).get("name")
        if cm and cm not in configmaps:
            R.error(where, f"volume {name} references ConfigMap {cm}, which the build does not contain")
        if cm and cm in configmaps and config_arg and name in mounts:
            fname = os.path.relpath(config_arg, mounts[name])
            if not fname.startswith("..") and fname not in configmaps[cm].get("data", {}):
                R.error(where, f"--config={config_arg}, but ConfigMap {cm} has no key {fname}")
    data_mount = mounts.get("data")
    if "data" not in claims or not data_mount:
        R.error(where, "volumeClaimTemplate `data` must be mounted")
    elif config and not str(config.get("data-dir", "")).startswith(data_mount.rstrip("/") + "/") \
            and config.get("data-dir") != data_mount:
        R.error(where, f"data-dir {config.get('data-dir')} is not on the data volume ({data_mount})")
    if config:
        grace = parse_duration(config.get("shutdown-grace", "10s")) or 10
        delay = parse_duration(config.get("shutdown-delay", "0s")) or 0
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps < delay + grace + 10:
            R.error(where, f"terminationGracePeriodSeconds {tgps} leaves under 10s after shutdown-delay + "
                           f"shutdown-grace ({delay + grace}s) to flush ack state and close RocksDB")
        for key, port in (("listen", 50051), ("metrics-listen", 9090)):
            value = str(config.get(key, ""))
            if not value.endswith(f":{port}") or value.startswith("127."):
                R.error("deploy/k8s/base/eventbus.toml", f"{key} = {value!r}: must listen on 0.0.0.0:{port} in a pod")

    # Services select the pod and target ports it has.
    for s in services.values():
        ssel = s.get("spec", {}).get("selector", {})
        if not matches(ssel, pod_labels):
            R.error(origin, f"{name_of(s)}: selector {ssel} does not match the eventbus pod")
        for p in s.get("spec", {}).get("ports", []):
            tp = p.get("targetPort")
            if isinstance(tp, str) and tp not in ports:
                R.error(origin, f"{name_of(s)}: targetPort {tp} is not a container port name")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not matches(pdb.get("spec", {}).get("selector", {}).get("matchLabels"), pod_labels):
            R.error(origin, f"{name_of(pdb)}: selector does not match the eventbus pod")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm.get("spec", {}).get("selector", {}).get("matchLabels", {})
        selected = [s for s in services.values() if matches(sel, s["metadata"].get("labels", {}))]
        if len(selected) != 1:
            R.error(origin, f"{name_of(sm)}: selects {len(selected)} Services, want exactly 1 "
                            "(two would scrape the pod twice)")
        for ep in sm.get("spec", {}).get("endpoints", []):
            for s in selected:
                if ep.get("port") not in {p.get("name") for p in s["spec"].get("ports", [])}:
                    R.error(origin, f"{name_of(sm)}: Service {s['metadata']['name']} has no port named {ep.get('port')}")
            if ep.get("path", "/metrics") != "/metrics":
                R.error(origin, f"{name_of(sm)}: path must be /metrics")
    for rule in by_kind.get("PrometheusRule", []):
        if rule.get("spec", {}).get("groups") != load_alert_groups():
            R.error(origin, f"{name_of(rule)}: groups differ from deploy/prometheus/alerts.yaml")


# --------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------
class BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as `|` blocks, as in alerts.yaml."""


BlockDumper.add_representer(
    str,
    lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def load_alert_groups():
    return (yaml.safe_load(ALERTS.read_text()) or {}).get("groups", [])


def github_anchors(markdown):
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n, base = 1, slug
            while slug in anchors:
                slug, n = f"{base}-{n}", n + 1
            anchors.add(slug)
        anchors.update(re.findall(r'<a (?:name|id)="([^"]+)"', line))
    return anchors


def metric_names(expr):
    return set(re.findall(r"\b(eventbus_[a-z0-9_]+)", expr))


def check_server_metrics():
    """The contract against the names the server defines (string literals
    "eventbus_..." in server/): catches a rename on either side."""
    defined = set()
    for p in (ROOT / "server").rglob("*.rs"):
        defined |= set(re.findall(r'"(eventbus_[a-z0-9_]+)"', p.read_text()))
    if not defined:
        R.warn("server/", "defines no eventbus_ metric names yet; metrics contract not cross-checked")
        return
    for name in sorted(set(METRICS) - defined):
        R.error("server/", f"the server does not define metric {name} (renamed? update METRICS, alerts, dashboard)")
    for name in sorted(defined - set(METRICS)):
        R.warn("server/", f"metric {name} is not in the METRICS contract of scripts/validate-deploy.py")


def check_metric_names(where, expr):
    found = set()
    for name in metric_names(expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in METRICS and METRICS[name] != "histogram":
            found.add(name)
        elif base in METRICS and METRICS[base] == "histogram" and base != name:
            found.add(base)
        elif name in METRICS:
            R.error(where, f"histogram {name} used without _bucket/_sum/_count")
        else:
            R.error(where, f"unknown metric {name} (not in the server's metrics contract)")
    return found


def promtool(*args):
    try:
        return run(["promtool", *args])
    except FileNotFoundError:
        R.error("promtool", "not installed (apt-get install prometheus; scripts/bootstrap-deploy.sh does it)")
        return None


def check_alerts(write):
    where = rel(ALERTS)
    res = promtool("check", "rules", str(ALERTS))
    if res and res.returncode != 0:
        R.error(where, "promtool check rules failed:\n    " + (res.stdout + res.stderr).strip().replace("\n", "\n    "))
        return
    res = promtool("test", "rules", str(ALERT_TESTS))
    if res and res.returncode != 0:
        R.error(rel(ALERT_TESTS), "promtool test rules failed:\n    " + (res.stdout + res.stderr).strip().replace("\n", "\n    "))

    anchors = github_anchors(RUNBOOK.read_text()) if RUNBOOK.is_file() else set()
    if not anchors:
        R.error("RUNBOOK.md", "missing or has no headings")
    names = set()
    used = set()
    for group in load_alert_groups():
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue
            name = rule["alert"]
            if name in names:
                R.error(where, f"duplicate alert {name}")
            names.add(name)
            ann = rule.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not str(ann.get(key, "")).strip():
                    R.error(where, f"{name}: no {key} annotation")
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                R.error(where, f"{name}: severity label must be critical, warning or info")
            url = ann.get("runbook_url", "")
            if url:
                base, _, anchor = url.partition("#")
                if base != RUNBOOK_URL or not anchor:
                    R.error(where, f"{name}: runbook_url must be {RUNBOOK_URL}#<section>, is {url}")
                elif anchor not in anchors:
                    R.error(where, f"{name}: RUNBOOK.md has no section #{anchor}")
            used |= check_metric_names(f"{where}: {name}", rule.get("expr", ""))

    expected = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "eventbus", "labels": {"app.kubernetes.io/name": "eventbus"}},
        "spec": {"groups": load_alert_groups()},
    }
    header = (
        "# GENERATED from deploy/prometheus/alerts.yaml by `cargo xtask validate-deploy --write`.\n"
        "# Do not edit: edit alerts.yaml and regenerate (validate-deploy fails on drift).\n"
    )
    current = yaml.safe_load(PROMETHEUS_RULE.read_text()) if PROMETHEUS_RULE.is_file() else None
    if current != expected:
        if write:
            PROMETHEUS_RULE.write_text(header + yaml.dump(expected, Dumper=BlockDumper, sort_keys=False,
                                                          width=1000, allow_unicode=True))
            print(f"validate-deploy: wrote {rel(PROMETHEUS_RULE)}")
        else:
            R.error(rel(PROMETHEUS_RULE), "out of date with deploy/prometheus/alerts.yaml; "
                                          "run `cargo xtask validate-deploy --write`")
    return used


# --------------------------------------------------------------------------
# Grafana dashboard
# --------------------------------------------------------------------------
def dashboard_panels(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows hold their panels


def substitute_grafana_vars(expr):
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    expr = re.sub(r"\[\$\{?\w+\}?\]", "[5m]", expr)
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", "x", expr)


def check_dashboard():
    where = rel(DASHBOARD)
    try:
        dash = json.loads(DASHBOARD.read_text())
    except (OSError, json.JSONDecodeError) as e:
        R.error(where, f"not valid JSON: {e}")
        return set()
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        R.error(where, f"schemaVersion {dash.get('schemaVersion')} is too old (want >= 36)")
    if not dash.get("uid") or not dash.get("title"):
        R.error(where, "needs a uid and a title")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("DS_PROMETHEUS", {}).get("type") != "datasource":
        R.error(where, "needs a datasource variable DS_PROMETHEUS (type datasource, query prometheus)")
    for var in ("topic", "subscription"):
        v = variables.get(var)
        if not v or v.get("type") != "query":
            R.error(where, f"needs a query variable `{var}`")
        elif not metric_names(json.dumps(v.get("query", ""))):
            R.error(where, f"variable `{var}` does not query an eventbus_ metric")
    used = set()
    ids = set()
    exprs = []
    for p in dashboard_panels(dash):
        title = p.get("title", "?")
        pw = f"{where}: panel {p.get('id')} {title!r}"
        if p.get("id") in ids:
            R.error(pw, "duplicate panel id")
        ids.add(p.get("id"))
        if "gridPos" not in p:
            R.error(pw, "no gridPos")
        if p.get("type") == "row":
            continue
        targets = [t for t in p.get("targets", []) if t.get("expr")]
        if not targets:
            R.error(pw, "has no query target with an expr")
            continue
        if (p.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
            R.error(pw, "datasource must be {type: prometheus, uid: ${DS_PROMETHEUS}}")
        if not any(metric_names(t["expr"]) for t in targets):
            R.error(pw, "no target queries an eventbus_ metric")
        for t in targets:
            used |= check_metric_names(pw, t["expr"])
            exprs.append((pw, t["expr"]))
    # PromQL syntax: every query (with Grafana variables substituted) as a
    # recording rule, checked by promtool.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": substitute_grafana_vars(e)} for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(rules, f)
    try:
        res = promtool("check", "rules", f.name)
        if res and res.returncode != 0:
            out = res.stdout + res.stderr
            for m in re.finditer(r"dashboard:query(\d+)", out):
                R.error(exprs[int(m.group(1))][0], f"query does not parse: {exprs[int(m.group(1))][1]}")
            R.error(where, "promtool rejected a query:\n    " + out.strip().replace("\n", "\n    "))
    finally:
        os.unlink(f.name)
    return used


# --------------------------------------------------------------------------
# RUNBOOK.md against the CLI and the protos
# --------------------------------------------------------------------------
def cli_model():
    """(commands, flags): {"topic": {"create", ...}, "status": set(), ...} and
    every long flag any command has, parsed from the clap derive sources."""
    cli = ROOT / "server" / "src" / "cli"
    sources = {p: p.read_text() for p in cli.rglob("*.rs")}
    enums = {}
    for text in sources.values():
        for m in re.finditer(r"#\[derive\([^)]*Subcommand[^)]*\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub )?enum (\w+) \{(.*?)\n\}", text, re.S):
            variants = {}
            for v in re.finditer(r"^    (?:#\[command\(([^)]*)\)\]\s*)?([A-Z]\w*)(?:\s*\((?:\w+::)*(\w+)\))?", m.group(2), re.M):
                variants[v.group(2)] = (v.group(3), v.group(1) or "")
            enums[m.group(1)] = variants

    def snake(name):
        return re.sub(r"(?<!^)([A-Z])", r"-\1", name).lower()

    commands = {}

    def add(enum_name):
        for variant, (inner, attrs) in enums.get(enum_name, {}).items():
            if "flatten" in attrs and inner in enums:
                add(inner)
            elif inner in enums:
                commands[snake(variant)] = {snake(v) for v in enums[inner]}
            else:
                commands[snake(variant)] = set()

    add("Command")
    flags = {"help", "version"}
    for text in sources.values():
        for m in re.finditer(r"#\[arg\((.*?)\)\]\s*((?:///.*\n\s*|#\[.*\]\s*)*)(?:pub )?(\w+):", text, re.S):
            args = m.group(1)
            explicit = re.search(r'\blong\s*=\s*"([^"]+)"', args)
            if explicit:
                flags.add(explicit.group(1))
            elif re.search(r"\blong\b", args):
                flags.add(kebab(m.group(3)))
    return commands, flags


def proto_methods():
    methods = {"grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch"}
    for p in (ROOT / "proto").rglob("*.proto"):
        text = p.read_text()
        pkg = re.search(r"^package ([\w.]+);", text, re.M)
        for s in re.finditer(r"^service (\w+) \{(.*?)^\}", text, re.M | re.S):
            for rpc in re.findall(r"rpc (\w+)\(", s.group(2)):
                methods.add(f"{pkg.group(1)}.{s.group(1)}/{rpc}")
    return methods


def shell_lines(markdown):
    """Command lines of the ```sh blocks, with continuation lines joined."""
    lines, block, buf = [], False, ""
    for line in markdown.splitlines():
        if line.startswith("```"):
            block = not block and line.strip() in ("```sh", "```bash", "```shell")
            continue
        if not block:
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    return lines


def check_runbook():
    where = "RUNBOOK.md"
    if not RUNBOOK.is_file():
        R.error(where, "missing")
        return
    text = RUNBOOK.read_text()
    commands, flags = cli_model()
    if not commands:
        R.error(where, "could not parse the CLI from server/src/cli (update cli_model() in scripts/validate-deploy.py)")
        return
    for name, subs in CONTRACT_COMMANDS.items():
        if name not in commands:
            commands[name] = subs
    flags |= CONTRACT_FLAGS
    methods = proto_methods()
    checked = 0
    for line in shell_lines(text):
        code = line.split(" #")[0]
        # Each `eventbus ...` invocation: a command (after a pipe, `;`, `&&`
        # or `$(`) that starts with eventbus, or `kubectl exec ... -- eventbus`.
        for segment in re.split(r"\|\||&&|\||;|\$\(|`", code):
            words = segment.split()
            while words and (re.fullmatch(r"[A-Z_]+=\S*", words[0]) or words[0] in ("timeout", "watch")):
                words = words[2:] if words[0] in ("timeout",) else words[1:]
            if "--" in words and "eventbus" in words[words.index("--") + 1:words.index("--") + 2]:
                words = words[words.index("--") + 1:]
            if not words or words[0] != "eventbus":
                continue
            words = words[1:]
            positional = [w for w in words if not w.startswith("-")]
            cmd = positional[0] if positional else None
            if cmd not in commands:
                R.error(where, f"`eventbus {cmd}`: no such command (line: {line.strip()})")
                continue
            if commands[cmd] and (len(positional) < 2 or positional[1] not in commands[cmd]):
                R.error(where, f"`eventbus {cmd} {positional[1] if len(positional) > 1 else ''}`: "
                               f"expected one of {sorted(commands[cmd])} (line: {line.strip()})")
            for w in words:
                if w.startswith("--"):
                    flag = w[2:].split("=")[0]
                    if flag not in flags:
                        R.error(where, f"`--{flag}`: no such flag in the eventbus CLI (line: {line.strip()})")
            checked += 1
        for m in re.finditer(r"/((?:[a-z]\w*\.)+[A-Z]\w*/\w+)", code):
            if m.group(1) not in methods:
                R.error(where, f"no such gRPC method {m.group(1)} in proto/ (line: {line.strip()})")
    # grpcurl lines in prose or code: `... eventbus.v1.AdminService/GetTopic`
    for m in re.finditer(r"grpcurl[^\n`]*?\s((?:[a-z]\w*\.)+[A-Z]\w*/\w+)", text):
        if m.group(1) not in methods:
            R.error(where, f"grpcurl: no such gRPC method {m.group(1)}")
    if checked < 10:
        R.error(where, f"found only {checked} eventbus command lines in ```sh blocks")


# --------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="regenerate the PrometheusRule from alerts.yaml")
    args = ap.parse_args()
    start = time.monotonic()

    check_dockerfile()
    config = check_config()
    used = check_alerts(args.write) or set()
    versions = k8s_versions()
    builds = 0
    for d in kustomization_dirs():
        kind = check_kustomization_files(d)
        if kind == "Component":
            continue  # built as part of the overlays that include it
        docs = render(d)
        if not docs:
            continue
        builds += 1
        validate_core(docs, rel(d), versions)
        validate_crds(docs, rel(d))
        if (d / "gateway.toml").is_file():
            check_cluster_wiring(docs, rel(d), check_config(d / "gateway.toml"))
        else:
            check_wiring(docs, rel(d), config)
    for f in sorted((K8S / "maintenance").glob("*.yaml")):
        docs = [doc for doc in yaml.safe_load_all(f.read_text()) if doc]
        validate_core(docs, rel(f), versions)
    used |= check_dashboard()
    check_server_metrics()
    check_runbook()

    for w in R.warnings:
        print(f"validate-deploy: warning: {w}")
    unused = sorted(set(METRICS) - used)
    if unused:
        print(f"validate-deploy: note: metrics in neither alerts nor dashboard: {', '.join(unused)}")
    elapsed = time.monotonic() - start
    if R.errors:
        for e in R.errors:
            print(f"validate-deploy: error: {e}", file=sys.stderr)
        print(f"validate-deploy: {len(R.errors)} error(s) ({elapsed:.1f}s)", file=sys.stderr)
        return 1
    print(f"validate-deploy: ok: Dockerfile, config, {builds} kustomize builds validated against "
          f"Kubernetes {', '.join(kv.major_minor(v) for v in versions)} (strict) and the Prometheus "
          f"Operator schemas, alerts (promtool check + unit tests), dashboard, runbook ({elapsed:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
