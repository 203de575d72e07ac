#!/usr/bin/env python3
"""Check properties of template.yaml that cfn-lint does not check.

Usage: scripts/check_template.py [TEMPLATE] [--root DIR]

Prints one PASS/FAIL line per check and a closing line `N passed, M failed`;
exits 1 when any check fails. Needs PyYAML and Python >= 3.11 (tomllib);
`scripts/tools check-template` runs it with the project's tools venv.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parent.parent

# Environment variables that a Lambda or container may set without the Rust code
# naming them (read by libraries or the runtime, not by our code).
ENV_EXEMPT = {"RUST_LOG"}

# Allow statements may use Resource "*" only when every action in them has no
# resource-level permissions in IAM (so "*" is the only valid resource).
RESOURCE_STAR_EXEMPT_ACTIONS = {
    "ecr:GetAuthorizationToken",  # account-wide registry token
    "xray:PutTraceSegments",  # X-Ray has no resource types
    "xray:PutTelemetryRecords",
    "cloudwatch:PutMetricData",  # metrics have no ARNs (scope with cloudwatch:namespace)
    "sqs:ListQueues",  # listing has no queue resource
    "sns:ListTopics",
}

# AWS managed policies that roles in this template may attach.
ALLOWED_MANAGED_POLICIES = {
    # ECS task execution role: image pull + awslogs, the documented policy for it
    "service-role/AmazonECSTaskExecutionRolePolicy",
}

# What a Lambda SQS event source mapping needs from the function's role on the source queue.
SQS_EVENT_SOURCE_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")

SQS_RETENTION_MAX = 1209600  # 14 days

# The optional customer managed key (empty = the services' default encryption) and an ARN of the
# form it takes, to evaluate the template's conditions with the key set.
KMS_PARAM = "KmsKeyArn"
SAMPLE_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


# ---------------------------------------------------------------- YAML with CloudFormation tags


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags into their long forms."""


def _cfn_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


# ---------------------------------------------------------------- helpers


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"PASS  {what}")
        else:
            self.failed += 1
            print(f"FAIL  {what}" + (f": {detail}" if detail else ""))
        return ok


def as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def leaves(v: Any) -> Iterator[Any]:
    """Values of v through lists and both branches of Fn::If; AWS::NoValue dropped."""
    if isinstance(v, list):
        for x in v:
            yield from leaves(x)
    elif isinstance(v, dict) and set(v) == {"Fn::If"} and isinstance(v["Fn::If"], list) and len(v["Fn::If"]) == 3:
        yield from leaves(v["Fn::If"][1])
        yield from leaves(v["Fn::If"][2])
    elif v is None or v == {"Ref": "AWS::NoValue"}:
        return
    else:
        yield v


def ref_target(v: Any) -> str | None:
    """Logical id named by {Ref: X} or {Fn::GetAtt: [X, ...]}."""
    if isinstance(v, dict):
        if "Ref" in v and isinstance(v["Ref"], str):
            return v["Ref"]
        if "Fn::GetAtt" in v:
            ga = v["Fn::GetAtt"]
            if isinstance(ga, list) and ga:
                return ga[0]
            if isinstance(ga, str):
                return ga.split(".", 1)[0]
    return None


def to_int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


NO_VALUE = object()  # what {Ref: AWS::NoValue} resolves to


def resolve(v: Any, conds: dict[str, bool]) -> Any:
    """v with each Fn::If replaced by the branch its condition selects (conds: name -> value);
    AWS::NoValue drops the key or list item it stands for."""
    if isinstance(v, dict):
        if set(v) == {"Fn::If"} and isinstance(v["Fn::If"], list) and len(v["Fn::If"]) == 3:
            cond, yes, no = v["Fn::If"]
            return resolve(yes if conds[cond] else no, conds)
        if v == {"Ref": "AWS::NoValue"}:
            return NO_VALUE
        out = {k: resolve(x, conds) for k, x in v.items()}
        return {k: x for k, x in out.items() if x is not NO_VALUE}
    if isinstance(v, list):
        return [x for x in (resolve(y, conds) for y in v) if x is not NO_VALUE]
    return v


class Template:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.resources: dict[str, dict[str, Any]] = doc.get("Resources") or {}
        self.globals_fn: dict[str, Any] = (doc.get("Globals") or {}).get("Function") or {}

    def of_type(self, *types: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, res in self.resources.items():
            if isinstance(res, dict) and res.get("Type") in types:
                yield name, res

    def props(self, name: str) -> dict[str, Any]:
        res = self.resources.get(name) or {}
        p = dict(res.get("Properties") or {})
        if res.get("Type") == "AWS::Serverless::Function":
            merged = dict(self.globals_fn)
            merged.update(p)
            # Globals Environment.Variables merge with the function's own
            genv = ((self.globals_fn.get("Environment") or {}).get("Variables")) or {}
            fenv = ((p.get("Environment") or {}).get("Variables")) or {}
            if genv or fenv:
                merged["Environment"] = {"Variables": {**genv, **fenv}}
            p = merged
        return p

    def type_of(self, name: str | None) -> str | None:
        if name is None:
            return None
        res = self.resources.get(name)
        return res.get("Type") if isinstance(res, dict) else None

    def conditions(self, **overrides: str) -> dict[str, bool]:
        """Every condition's value for the parameters' defaults with overrides (name=value)."""
        params = {n: str(p.get("Default", "")) for n, p in (self.doc.get("Parameters") or {}).items()
                  if isinstance(p, dict)}
        params.update(overrides)
        defs = self.doc.get("Conditions") or {}
        memo: dict[str, bool] = {}

        def value(x: Any) -> Any:
            if isinstance(x, dict) and set(x) == {"Ref"}:
                if x["Ref"] not in params:
                    raise ValueError(f"condition refers to {x['Ref']!r}, not a parameter")
                return params[x["Ref"]]
            return str(x) if isinstance(x, (int, float, bool)) else x

        def ev(x: Any) -> bool:
            if isinstance(x, dict) and len(x) == 1:
                (fn, args), = x.items()
                if fn == "Condition":
                    return cond(args)
                if fn == "Fn::Equals":
                    return value(args[0]) == value(args[1])
                if fn == "Fn::Not":
                    return not ev(args[0])
                if fn == "Fn::And":
                    return all(ev(a) for a in args)
                if fn == "Fn::Or":
                    return any(ev(a) for a in args)
            raise ValueError(f"cannot evaluate condition {x!r}")

        def cond(name: str) -> bool:
            if name not in memo:
                memo[name] = ev(defs[name])
            return memo[name]

        return {name: cond(name) for name in defs}

    def exists(self, name: str, conds: dict[str, bool]) -> bool:
        """The resource is created under these condition values."""
        c = (self.resources.get(name) or {}).get("Condition")
        return c is None or conds.get(c, False)


def param(t: Template, name: str) -> dict[str, Any]:
    return (t.doc.get("Parameters") or {}).get(name) or {}


# ---------------------------------------------------------------- checks


def read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def workspace_members(root: Path) -> dict[Path, dict[str, Any]]:
    """Member directory (resolved) -> its parsed Cargo.toml, for the workspace at root."""
    manifest = root / "Cargo.toml"
    if not manifest.is_file():
        return {}
    data = read_toml(manifest)
    out: dict[Path, dict[str, Any]] = {}
    for pattern in ((data.get("workspace") or {}).get("members") or []):
        for d in sorted(root.glob(pattern)) if any(c in pattern for c in "*?[") else [root / pattern]:
            if (d / "Cargo.toml").is_file():
                out[d.resolve()] = read_toml(d / "Cargo.toml")
    if "package" in data:
        out.setdefault(root.resolve(), data)
    return out


def crate_bins(crate_dir: Path, data: dict[str, Any]) -> set[str]:
    """The binary targets cargo sees in a package: [[bin]] names plus auto-discovered ones."""
    explicit = [b for b in (data.get("bin") or []) if isinstance(b, dict) and "name" in b]
    names = {b["name"] for b in explicit}
    # a file an explicit [[bin]] already uses is not discovered a second time
    paths = {(crate_dir / b["path"]).resolve() for b in explicit if "path" in b}
    pkg = data.get("package") or {}
    if pkg.get("autobins", True):
        main = crate_dir / "src" / "main.rs"
        if main.is_file() and main.resolve() not in paths and "name" in pkg:
            names.add(pkg["name"])
        names.update(f.stem for f in (crate_dir / "src" / "bin").glob("*.rs") if f.resolve() not in paths)
    return names


def crate_by_package(members: dict[Path, dict[str, Any]], package: str) -> Path | None:
    for d, data in members.items():
        if (data.get("package") or {}).get("name") == package:
            return d
    return None


def check_functions(t: Template, r: Report, root: Path, template_dir: Path) -> dict[str, Path]:
    """Each function's CodeUri + BuildProperties.Binary resolves to a [[bin]] of the workspace
    crate in that folder (what `sam build` hands to `cargo lambda build --bin`).
    Returns function logical id -> crate directory."""
    members = workspace_members(root)
    crates: dict[str, Path] = {}
    fns = list(t.of_type("AWS::Serverless::Function"))
    r.check(bool(fns), "template defines AWS::Serverless::Function resources")
    for name, res in fns:
        p = t.props(name)
        r.check(p.get("Runtime") == "provided.al2023", f"{name}: Runtime provided.al2023", f"got {p.get('Runtime')!r}")
        r.check(p.get("Architectures") == ["arm64"], f"{name}: Architectures [arm64]", f"got {p.get('Architectures')!r}")
        r.check(p.get("Handler") == "bootstrap", f"{name}: Handler bootstrap", f"got {p.get('Handler')!r}")
        md = res.get("Metadata") or {}
        r.check(md.get("BuildMethod") == "rust-cargolambda", f"{name}: Metadata.BuildMethod rust-cargolambda",
                f"got {md.get('BuildMethod')!r}")
        binary = (md.get("BuildProperties") or {}).get("Binary")
        code_uri = p.get("CodeUri")
        if not r.check(isinstance(code_uri, str) and bool(code_uri), f"{name}: CodeUri is a local folder",
                       f"got {code_uri!r}"):
            continue
        crate_dir = (template_dir / code_uri).resolve()
        manifest = crate_dir / "Cargo.toml"
        if not r.check(manifest.is_file(), f"{name}: CodeUri {code_uri!r} has a Cargo.toml", f"no {manifest}"):
            continue
        data = read_toml(manifest)
        if not r.check("package" in data, f"{name}: CodeUri {code_uri!r} is a package (not only a workspace)"):
            continue
        bins = crate_bins(crate_dir, data)
        pkg = data["package"].get("name")
        r.check(isinstance(binary, str) and binary in bins,
                f"{name}: BuildProperties.Binary {binary!r} is a bin target of {pkg} ({code_uri})",
                f"its bin targets: {sorted(bins)}")
        # a member of the root workspace shares its Cargo.lock and [profile.release]
        r.check(crate_dir in members, f"{name}: {code_uri} is a member of the workspace at {root.name or root}",
                f"members: {sorted(str(m.relative_to(root.resolve())) for m in members)}")
        crates[name] = crate_dir
    return crates


# ---------------------------------------------------------------- Dockerfile (the poller image)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        parts = buf.split(None, 1)
        out.append((parts[0].upper(), parts[1] if len(parts) > 1 else ""))
        buf = ""
    return out


def check_dockerfile(r: Report, root: Path) -> Path | None:
    """The image the ECS task runs: multi-stage, builds one workspace package's binary with the
    committed lock file, runs it as a non-root user as the entrypoint, and its build context (the
    repository root minus .dockerignore) still holds every workspace member. Returns the crate."""
    path = root / "Dockerfile"
    if not r.check(path.is_file(), "Dockerfile (poller image) exists at the repository root"):
        return None
    ins = dockerfile_instructions(path)
    froms = [a for i, a in ins if i == "FROM"]
    r.check(len(froms) >= 2, "Dockerfile is multi-stage (builder + runtime)", f"{len(froms)} FROM")
    members = workspace_members(root)
    runs = " ".join(a for i, a in ins if i == "RUN")
    m = re.search(r"cargo build\b([^&;|]*)", runs)
    args = m.group(1).split() if m else []
    pkg = args[args.index("-p") + 1] if "-p" in args[:-1] else None
    bin_ = args[args.index("--bin") + 1] if "--bin" in args[:-1] else None
    r.check("--release" in args and "--locked" in args, "Dockerfile: cargo build --release --locked",
            f"got {' '.join(args)!r}")
    crate = crate_by_package(members, pkg) if pkg else None
    if not r.check(crate is not None, f"Dockerfile: cargo build -p {pkg} names a workspace package"):
        return None
    bins = crate_bins(crate, members[crate])
    r.check(bin_ in bins, f"Dockerfile: --bin {bin_} is a bin target of {pkg}", f"its bin targets: {sorted(bins)}")
    entry = [a for i, a in ins if i == "ENTRYPOINT"]
    try:
        entry_argv = json.loads(entry[-1]) if entry else []
    except json.JSONDecodeError:
        entry_argv = []
    r.check(bool(entry_argv) and Path(entry_argv[0]).name == bin_,
            f"Dockerfile: exec-form ENTRYPOINT runs the {bin_} binary", f"got {entry[-1] if entry else None!r}")
    users = [a for i, a in ins if i == "USER"]
    last_from = max(n for n, (i, _) in enumerate(ins) if i == "FROM")
    runtime_users = [a for n, (i, a) in enumerate(ins) if i == "USER" and n > last_from]
    nonroot_base = ":nonroot" in froms[-1] if froms else False
    r.check((runtime_users and runtime_users[-1].split(":")[0] not in ("root", "0")) or (nonroot_base and not users),
            "Dockerfile: the runtime stage runs as a non-root user", f"USER {runtime_users}")
    # the build context: nothing the workspace build needs may be excluded by .dockerignore
    ignore = root / ".dockerignore"
    patterns = [ln.strip().rstrip("/") for ln in ignore.read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.strip().startswith("#")] if ignore.is_file() else []
    needed = ["Cargo.toml", "Cargo.lock"]
    for d in members:
        rel = d.relative_to(root.resolve())
        needed += [str(rel / "Cargo.toml"), str(rel / "src")]
    excluded = [n for n in needed for pat in patterns
                if fnmatch.fnmatch(n, pat) or any(fnmatch.fnmatch(str(Path(*Path(n).parts[:k])), pat)
                                                  for k in range(1, len(Path(n).parts)))]
    r.check(not excluded, "Dockerfile build context: .dockerignore keeps every workspace manifest, source dir and Cargo.lock",
            f"excluded: {sorted(set(excluded))}")
    return crate


def sqs_mappings(t: Template) -> Iterator[tuple[str, str | None, str | None, dict[str, Any]]]:
    """(label, function logical id, queue logical id, properties) for every SQS event source."""
    for name, _ in t.of_type("AWS::Serverless::Function"):
        for ev_name, ev in (t.props(name).get("Events") or {}).items():
            if isinstance(ev, dict) and ev.get("Type") == "SQS":
                p = ev.get("Properties") or {}
                yield f"{name}.Events.{ev_name}", name, ref_target(p.get("Queue")), p
    for name, res in t.of_type("AWS::Lambda::EventSourceMapping"):
        p = res.get("Properties") or {}
        queue = ref_target(p.get("EventSourceArn"))
        if t.type_of(queue) == "AWS::SQS::Queue" or "sqs" in str(p.get("EventSourceArn", "")):
            yield name, ref_target(p.get("FunctionName")), queue, p


def check_event_sources(t: Template, r: Report) -> None:
    maps = list(sqs_mappings(t))
    r.check(bool(maps), "template has SQS event sources")
    for label, fn, queue, p in maps:
        frt = as_list(p.get("FunctionResponseTypes"))
        r.check("ReportBatchItemFailures" in frt, f"{label}: FunctionResponseTypes has ReportBatchItemFailures",
                f"got {frt!r}")
        # AWS: source queue visibility timeout >= 6 x function timeout
        vt = to_int(t.props(queue).get("VisibilityTimeout")) if queue else None
        ft = to_int(t.props(fn).get("Timeout")) if fn else None
        if vt is not None and ft is not None:
            r.check(vt >= 6 * ft, f"{label}: {queue} VisibilityTimeout {vt} >= 6 x {fn} Timeout {ft}")


WORKER = "WorkerFunction"
POLLER_MODE = "WorkerPollerMode"
# WorkerPollerMode value -> (the property its mappings set, its value); the other is absent
POLLER_MODES = {
    "maximum-concurrency": ("ScalingConfig", {"MaximumConcurrency": {"Ref": "WorkerMaxConcurrency"}}),
    "provisioned": ("ProvisionedPollerConfig", {"MinimumPollers": {"Ref": "WorkerMinPollers"},
                                                "MaximumPollers": {"Ref": "WorkerMaxPollers"}}),
}


def check_worker_poller_mode(t: Template, r: Report) -> None:
    """Every SQS mapping of the worker sets ScalingConfig (MaximumConcurrency) or
    ProvisionedPollerConfig as WorkerPollerMode says, exactly one of them for each allowed value
    (the conditions evaluated, with and without the FIFO pair); none is a SAM event (SAM's SQS
    event has no ProvisionedPollerConfig)."""
    mode = param(t, POLLER_MODE)
    r.check(sorted(as_list(mode.get("AllowedValues"))) == sorted(POLLER_MODES) and mode.get("Default") in POLLER_MODES,
            f"parameter {POLLER_MODE}: AllowedValues {sorted(POLLER_MODES)}", f"got {mode}")
    sam_sqs = [ev for ev, e in (t.props(WORKER).get("Events") or {}).items() if isinstance(e, dict) and e.get("Type") == "SQS"]
    r.check(not sam_sqs, f"{WORKER}: no SAM SQS events (its mappings are AWS::Lambda::EventSourceMapping)", f"got {sam_sqs}")
    mappings = [n for n, _ in t.of_type("AWS::Lambda::EventSourceMapping")
                if ref_target(t.props(n).get("FunctionName")) == WORKER]
    work_queue = [n for n in mappings if ref_target(t.props(n).get("EventSourceArn")) == "WorkQueue"]
    # the logical id SAM gave the mapping of the former `WorkQueueEvent`: updated in place
    r.check(work_queue == [f"{WORKER}WorkQueueEvent"],
            f"WorkQueue's worker mapping keeps SAM's logical id {WORKER}WorkQueueEvent", f"got {work_queue}")
    for value in sorted(POLLER_MODES):
        prop, want = POLLER_MODES[value]
        other = next(p for p, _ in POLLER_MODES.values() if p != prop)
        for fifo in ("false", "true"):
            try:
                conds = t.conditions(**{POLLER_MODE: value, "UseFifo": fifo})
            except (KeyError, ValueError) as e:
                r.check(False, f"conditions evaluate for {POLLER_MODE}={value}", str(e))
                continue
            live = [n for n in mappings if t.exists(n, conds)]
            r.check(bool(live), f"{POLLER_MODE}={value} UseFifo={fifo}: the worker has SQS mappings", f"got {live}")
            for n in live:
                p = resolve(t.props(n), conds)
                r.check(p.get(prop) == want and other not in p,
                        f"{POLLER_MODE}={value} UseFifo={fifo}: {n} sets {prop} from the parameters, no {other}",
                        f"want {want}; got {prop}={p.get(prop)!r} {other}={p.get(other)!r}")
    for name, lo, hi in (("WorkerMaxConcurrency", 2, 1000), ("WorkerMinPollers", 2, 200), ("WorkerMaxPollers", 2, 2000)):
        p = param(t, name)
        r.check(p.get("Type") == "Number" and to_int(p.get("MinValue")) == lo and to_int(p.get("MaxValue")) == hi,
                f"parameter {name} is a Number in Lambda's range {lo}..{hi}", f"got {p}")


FILTER_PARAM = "WorkerFilterPattern"
SAMPLE_FILTER = '{"body": {"event_type": ["order.created"]}}'
ESM_METRICS = {"Metrics": ["EventCount"]}


def check_worker_metrics_and_filter(t: Template, r: Report) -> None:
    """Every SQS mapping of the worker turns on its EventCount metrics and carries the optional
    FilterCriteria exactly when WorkerFilterPattern is set (one filter, that pattern); the
    parameter only takes a pattern on `body` (all an SQS mapping filters on) or nothing; no other
    mapping filters (Lambda deletes what a filter drops: a filter on the DLQ monitor would lose
    dead letters)."""
    p = param(t, FILTER_PARAM)
    pattern = str(p.get("AllowedPattern", ""))

    def allowed(v: str) -> bool:
        return bool(re.fullmatch(pattern, v)) and len(v) <= (to_int(p.get("MaxLength")) or 0)

    r.check(p.get("Type") == "String" and p.get("Default") == "" and to_int(p.get("MaxLength")) == 4096,
            f"parameter {FILTER_PARAM}: String, default empty (no filter), MaxLength 4096 (Lambda's pattern limit)",
            f"got {p}")
    accepted = ["", SAMPLE_FILTER, '{"body":{"n":[{"numeric":[">",5]}]}}']
    refused = ['{"attributes": {"x": ["y"]}}', "order.created", '{"body": 1', "x" * 5000]
    r.check(bool(pattern) and all(allowed(v) for v in accepted) and not any(allowed(v) for v in refused),
            f"parameter {FILTER_PARAM}: AllowedPattern takes empty or a pattern on body only",
            f"AllowedPattern {pattern!r}: refuses {[v for v in accepted if not allowed(v)]}, "
            f"accepts {[v[:40] for v in refused if allowed(v)]}")
    maps = [(label, fn, p) for label, fn, _, p in sqs_mappings(t)]
    worker = [label for label, fn, _ in maps if fn == WORKER]
    r.check(len(worker) >= 2, f"{WORKER} has its SQS mappings (standard and FIFO)", f"got {worker}")
    for fifo in ("false", "true"):
        for value in ("", SAMPLE_FILTER):
            try:
                conds = t.conditions(**{FILTER_PARAM: value, "UseFifo": fifo})
            except (KeyError, ValueError) as e:
                r.check(False, f"conditions evaluate for {FILTER_PARAM}={value!r}", str(e))
                continue
            want = {"Filters": [{"Pattern": {"Ref": FILTER_PARAM}}]} if value else None
            for label, fn, props in maps:
                if not t.exists(label, conds):
                    continue
                got = resolve(props, conds)
                case = f"UseFifo={fifo} {FILTER_PARAM}={'set' if value else 'empty'}: {label}"
                if fn == WORKER:
                    r.check(got.get("MetricsConfig") == ESM_METRICS, f"{case} has MetricsConfig {ESM_METRICS}",
                            f"got {got.get('MetricsConfig')!r}")
                    r.check(got.get("FilterCriteria") == want,
                            f"{case} has " + ("FilterCriteria with the pattern" if value else "no FilterCriteria"),
                            f"got {got.get('FilterCriteria')!r}")
                else:
                    r.check("FilterCriteria" not in got, f"{case} ({fn}) filters nothing",
                            f"got {got.get('FilterCriteria')!r}")


def check_work_queue_visibility(t: Template, r: Report) -> None:
    vt = to_int(t.props("WorkQueue").get("VisibilityTimeout"))
    ft = to_int(t.props("WorkerFunction").get("Timeout"))
    r.check(vt is not None and ft is not None and vt >= 6 * ft,
            f"WorkQueue VisibilityTimeout ({vt}) >= 6 x WorkerFunction Timeout ({ft})")


def check_queues(t: Template, r: Report) -> None:
    queues = dict(t.of_type("AWS::SQS::Queue"))
    dlqs: set[str] = set()
    for name in queues:
        rp = t.props(name).get("RedrivePolicy")
        if isinstance(rp, dict):
            target = ref_target(rp.get("deadLetterTargetArn"))
            if target:
                dlqs.add(target)
    r.check("WorkDeadLetterQueue" in dlqs, "WorkQueue redrives to WorkDeadLetterQueue", f"DLQs: {sorted(dlqs)}")
    for dlq in sorted(dlqs):
        ret = to_int(t.props(dlq).get("MessageRetentionPeriod"))
        r.check(ret == SQS_RETENTION_MAX, f"{dlq}: MessageRetentionPeriod {SQS_RETENTION_MAX}", f"got {ret}")
    # encrypted at rest whatever KMS_PARAM is: SSE-SQS without a key, the key with one, never both
    for key in ("", SAMPLE_KEY_ARN):
        conds = t.conditions(**{KMS_PARAM: key})
        for name in sorted(queues):
            p = resolve(t.props(name), conds)
            sse, kms = p.get("SqsManagedSseEnabled"), p.get("KmsMasterKeyId")
            ok = (sse is True and kms is None) if not key else (kms == {"Ref": KMS_PARAM} and sse in (None, False))
            r.check(ok, f"{name} ({KMS_PARAM}={'set' if key else 'empty'}): encrypted at rest with "
                        + (f"{KMS_PARAM} (KmsMasterKeyId)" if key else "SSE-SQS (SqsManagedSseEnabled)"),
                    f"got SqsManagedSseEnabled={sse!r} KmsMasterKeyId={kms!r}")


def env_var_names(t: Template) -> dict[str, list[tuple[str, str]]]:
    """env var name -> [(label, logical id)] of the resources that set it."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name, _ in t.of_type("AWS::Serverless::Function", "AWS::Lambda::Function"):
        for var in ((t.props(name).get("Environment") or {}).get("Variables") or {}):
            out.setdefault(var, []).append((name, name))
    for name, _ in t.of_type("AWS::ECS::TaskDefinition"):
        for cd in as_list(t.props(name).get("ContainerDefinitions")):
            for env in as_list((cd or {}).get("Environment")):
                if isinstance(env, dict) and isinstance(env.get("Name"), str):
                    out.setdefault(env["Name"], []).append((f"{name}/{cd.get('Name')}", name))
    return out


def rust_sources(*dirs: Path) -> str:
    chunks = []
    for d in dirs:
        for f in sorted(d.rglob("*.rs")):
            if "target" in f.relative_to(d).parts:
                continue
            chunks.append(f.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(chunks)


def check_env_vars(t: Template, r: Report, root: Path, fn_crates: dict[str, Path], image_crate: Path | None) -> None:
    """Every variable a resource sets is named in the code that resource runs: the library (src/)
    plus the function's own crate (CodeUri), or the crate the Dockerfile builds for ECS tasks."""
    names = env_var_names(t)
    r.check(bool(names), "template sets environment variables")
    # sqskit's own settings are SQSKIT_* (old names such as ARCHIVE_BUCKET are still read for one
    # release, with a warning: the template must not rely on them)
    foreign = sorted(v for v in names if v not in ENV_EXEMPT and not v.startswith("SQSKIT_"))
    r.check(not foreign, "every variable the template sets is an SQSKIT_* setting (or exempt)",
            f"not SQSKIT_*: {', '.join(foreign)}")
    lib = root / "src"
    code_of: dict[str, str] = {}
    for var in sorted(names):
        if var in ENV_EXEMPT:
            continue
        for label, res in names[var]:
            rtype = t.type_of(res)
            crate = image_crate if rtype == "AWS::ECS::TaskDefinition" else fn_crates.get(res)
            if crate is None:
                r.check(False, f"env {var} (set on {label}): the code it runs is known",
                        "no CodeUri crate / Dockerfile package resolved for it")
                continue
            key = str(crate)
            if key not in code_of:
                code_of[key] = rust_sources(lib, crate) if crate != root.resolve() else rust_sources(lib)
            rel = crate.relative_to(root.resolve())
            r.check(f'"{var}"' in code_of[key], f'env {var} (set on {label}) is read by src/ or {rel}/ as "{var}"',
                    f"no *.rs file under src/ or {rel}/ names it")


def iter_statements(doc: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, dict):
        return
    for st in leaves(doc.get("Statement")):
        if isinstance(st, dict):
            yield st


def policy_docs(t: Template) -> Iterator[tuple[str, Any]]:
    """(label, policy document) for identity policies and resource policies (KMS key policies excluded)."""
    for name, _ in t.of_type("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"):
        for pol in leaves(t.props(name).get("Policies")):
            if isinstance(pol, dict):
                yield f"{name}/{pol.get('PolicyName')}", pol.get("PolicyDocument")
    for name, _ in t.of_type("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::SQS::QueuePolicy",
                             "AWS::SNS::TopicPolicy", "AWS::S3::BucketPolicy"):
        yield name, t.props(name).get("PolicyDocument")
    for name, _ in t.of_type("AWS::Serverless::Function"):
        for i, pol in enumerate(leaves(t.props(name).get("Policies"))):
            if isinstance(pol, dict) and "Statement" in pol:
                yield f"{name}/Policies[{i}]", pol


def check_iam(t: Template, r: Report) -> None:
    docs = list(policy_docs(t))
    r.check(bool(docs), "template has IAM policy statements to check")
    for label, doc in docs:
        problems = []
        for st in iter_statements(doc):
            if st.get("Effect") != "Allow":
                continue  # Deny statements (e.g. TLS-only bucket policy) grant nothing
            sid = st.get("Sid", "?")
            if "NotAction" in st or "NotResource" in st:
                problems.append(f"{sid}: Allow with NotAction/NotResource")
            actions = [a for a in leaves(st.get("Action")) if isinstance(a, str)]
            for a in actions:
                if a == "*" or a.endswith(":*"):
                    problems.append(f"{sid}: wildcard action {a!r}")
            resources = list(leaves(st.get("Resource")))
            if "*" in resources and not (actions and all(a in RESOURCE_STAR_EXEMPT_ACTIONS for a in actions)):
                problems.append(f"{sid}: Resource '*' for {actions}")
        r.check(not problems, f"IAM least privilege: {label}", "; ".join(problems))

    # Functions use explicit roles: with `Policies` (or no Role) SAM generates the role and
    # attaches AWSLambdaBasicExecutionRole / AWSLambdaSQSQueueExecutionRole (Resource "*").
    for name, _ in t.of_type("AWS::Serverless::Function"):
        p = t.props(name)
        r.check("Policies" not in p, f"{name}: no SAM Policies (explicit Role instead)")
        role = ref_target(p.get("Role"))
        ok = t.type_of(role) == "AWS::IAM::Role"
        r.check(ok, f"{name}: Role is an AWS::IAM::Role of this template", f"got {p.get('Role')!r}")
        if ok:
            trust = t.props(role).get("AssumeRolePolicyDocument")
            principals = [((st.get("Principal") or {}).get("Service")) for st in iter_statements(trust)]
            r.check("lambda.amazonaws.com" in principals, f"{name}: {role} trusts lambda.amazonaws.com",
                    f"got {principals!r}")

    for name, _ in t.of_type("AWS::IAM::Role"):
        for arn in leaves(t.props(name).get("ManagedPolicyArns")):
            text = arn.get("Fn::Sub") if isinstance(arn, dict) else arn
            ok = isinstance(text, str) and any(text.endswith(":policy/" + m) for m in ALLOWED_MANAGED_POLICIES)
            r.check(ok, f"{name}: managed policy {text!r} is allow-listed")


def role_grants(t: Template, role: str) -> list[tuple[set[str], set[str | None]]]:
    """(actions, resource logical ids) of each Allow statement in the role's inline policies."""
    out = []
    for pol in leaves(t.props(role).get("Policies")):
        doc = pol.get("PolicyDocument") if isinstance(pol, dict) else None
        for st in iter_statements(doc):
            if st.get("Effect") == "Allow":
                actions = {a for a in leaves(st.get("Action")) if isinstance(a, str)}
                out.append((actions, {ref_target(x) for x in leaves(st.get("Resource"))}))
    return out


def check_event_source_permissions(t: Template, r: Report) -> None:
    for label, fn, queue, _ in sqs_mappings(t):
        role = ref_target(t.props(fn).get("Role")) if fn else None
        if t.type_of(role) != "AWS::IAM::Role" or queue is None:
            continue  # reported by check_iam (function without an explicit role)
        grants = role_grants(t, role)
        missing = [a for a in SQS_EVENT_SOURCE_ACTIONS if not any(a in acts and queue in res for acts, res in grants)]
        r.check(not missing, f"{label}: {role} grants the event source actions on {queue}", f"missing {missing}")


# What the idempotency store does with its table: claim (conditional put), record the result
# (update), release on failure (delete), read. Nothing else: no Query/Scan, no table admin.
IDEMPOTENCY_TABLE = "IdempotencyTable"
IDEMPOTENCY_ACTIONS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}


def role_statements(t: Template, role: str) -> list[dict[str, Any]]:
    """Allow statements of the role's inline policies (both branches of Fn::If)."""
    out = []
    for pol in leaves(t.props(role).get("Policies")):
        doc = pol.get("PolicyDocument") if isinstance(pol, dict) else None
        out.extend(st for st in iter_statements(doc) if st.get("Effect") == "Allow")
    return out


def container_env(t: Template, task_def: str) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for cd in as_list(t.props(task_def).get("ContainerDefinitions")):
        for e in as_list((cd or {}).get("Environment")):
            if isinstance(e, dict) and isinstance(e.get("Name"), str):
                env[e["Name"]] = e.get("Value")
    return env


def check_idempotency(t: Template, r: Report) -> None:
    """The idempotency table (key `id`, TTL on `expiration`, encrypted, PITR, on-demand, retained),
    the least-privilege grants on it for the worker and the poller task, and their env vars."""
    res = t.resources.get(IDEMPOTENCY_TABLE) or {}
    if not r.check(res.get("Type") == "AWS::DynamoDB::Table", f"{IDEMPOTENCY_TABLE} is an AWS::DynamoDB::Table",
                   f"got {res.get('Type')!r}"):
        return
    p = t.props(IDEMPOTENCY_TABLE)
    r.check(p.get("BillingMode") == "PAY_PER_REQUEST", f"{IDEMPOTENCY_TABLE}: BillingMode PAY_PER_REQUEST",
            f"got {p.get('BillingMode')!r}")
    keys = [(k.get("AttributeName"), k.get("KeyType")) for k in as_list(p.get("KeySchema")) if isinstance(k, dict)]
    r.check(keys == [("id", "HASH")], f"{IDEMPOTENCY_TABLE}: key schema is `id` HASH only", f"got {keys}")
    attrs = {a.get("AttributeName"): a.get("AttributeType") for a in as_list(p.get("AttributeDefinitions"))
             if isinstance(a, dict)}
    r.check(attrs.get("id") == "S", f"{IDEMPOTENCY_TABLE}: attribute `id` is a string (S)", f"got {attrs}")
    ttl = p.get("TimeToLiveSpecification") or {}
    r.check(ttl.get("AttributeName") == "expiration" and ttl.get("Enabled") is True,
            f"{IDEMPOTENCY_TABLE}: TTL enabled on `expiration`", f"got {ttl}")
    pitr = p.get("PointInTimeRecoverySpecification") or {}
    r.check(pitr.get("PointInTimeRecoveryEnabled") is True, f"{IDEMPOTENCY_TABLE}: point-in-time recovery on",
            f"got {pitr}")
    sse = p.get("SSESpecification") or {}
    r.check(sse.get("SSEEnabled") is True, f"{IDEMPOTENCY_TABLE}: SSESpecification.SSEEnabled true", f"got {sse}")
    r.check(res.get("DeletionPolicy") == "Retain" and res.get("UpdateReplacePolicy") == "Retain",
            f"{IDEMPOTENCY_TABLE}: DeletionPolicy and UpdateReplacePolicy Retain")

    table_arn = {"Fn::GetAtt": [IDEMPOTENCY_TABLE, "Arn"]}
    users = {
        "WorkerFunction": ref_target(t.props("WorkerFunction").get("Role")),
        "PollerTaskDefinition": ref_target(t.props("PollerTaskDefinition").get("TaskRoleArn")),
    }
    for user, role in users.items():
        if not r.check(t.type_of(role) == "AWS::IAM::Role", f"{user}: its role is an AWS::IAM::Role of this template",
                       f"got {role!r}"):
            continue
        granted: set[str] = set()
        problems = []
        for st in role_statements(t, role):
            actions = [a for a in leaves(st.get("Action")) if isinstance(a, str)]
            ddb = [a for a in actions if a.lower().startswith("dynamodb:") or a == "*"]
            if not ddb:
                continue
            granted.update(ddb)
            resources = list(leaves(st.get("Resource")))
            if resources != [table_arn]:
                problems.append(f"{st.get('Sid', '?')}: Resource {resources} (want only {IDEMPOTENCY_TABLE}.Arn)")
            if set(ddb) != set(actions):
                problems.append(f"{st.get('Sid', '?')}: mixes dynamodb and other actions {actions}")
        r.check(granted == IDEMPOTENCY_ACTIONS, f"{role} ({user}): dynamodb actions are exactly {sorted(IDEMPOTENCY_ACTIONS)}",
                f"got {sorted(granted)}")
        r.check(not problems, f"{role} ({user}): dynamodb actions only on {IDEMPOTENCY_TABLE}.Arn", "; ".join(problems))
    for role, _ in t.of_type("AWS::IAM::Role"):
        if role in users.values():
            continue
        ddb = sorted({a for st in role_statements(t, role) for a in leaves(st.get("Action"))
                      if isinstance(a, str) and (a.lower().startswith("dynamodb:") or a == "*")})
        r.check(not ddb, f"{role}: no dynamodb actions (only the worker and the poller task use the table)", f"got {ddb}")

    want = {"SQSKIT_IDEMPOTENCY_TABLE": {"Ref": IDEMPOTENCY_TABLE}, "SQSKIT_IDEMPOTENCY_TTL": {"Ref": "IdempotencyTtlSeconds"}}
    envs = {
        "WorkerFunction": (t.props("WorkerFunction").get("Environment") or {}).get("Variables") or {},
        "PollerTaskDefinition": container_env(t, "PollerTaskDefinition"),
    }
    for user, env in envs.items():
        for var, value in want.items():
            r.check(env.get(var) == value, f"{user}: env {var} is {value}", f"got {env.get(var)!r}")
    ttl_param = (t.doc.get("Parameters") or {}).get("IdempotencyTtlSeconds") or {}
    r.check(ttl_param.get("Type") == "Number" and (to_int(ttl_param.get("MinValue")) or 0) >= 60,
            "parameter IdempotencyTtlSeconds is a Number with MinValue >= 60", f"got {ttl_param}")


PAYLOAD_BUCKET = "PayloadBucket"
# who reads large bodies (claim check) and may delete them (only with PayloadCleanup=true)
PAYLOAD_READERS = {"WorkerRole", "DlqMonitorRole", "PollerTaskRole"}
PAYLOAD_CLEANERS = {"PollerTaskRole"}


def s3_grants(t: Template, role: str) -> list[tuple[str, Any, dict[str, Any]]]:
    """(action, resource, statement) for every s3 action the role allows (both Fn::If branches)."""
    out = []
    for st in role_statements(t, role):
        for a in leaves(st.get("Action")):
            if isinstance(a, str) and (a.lower().startswith("s3:") or a == "*"):
                out.extend((a, res, st) for res in as_list(st.get("Resource")))
    return out


def names_payload_objects(res: Any) -> bool:
    sub = res.get("Fn::Sub") if isinstance(res, dict) else None
    return isinstance(sub, str) and sub == "${" + PAYLOAD_BUCKET + ".Arn}/*"


def check_payload_bucket(t: Template, r: Report) -> None:
    """The claim-check bucket: encrypted, private, TLS-only, expiring; the roles that resolve
    get s3:GetObject on its objects only; s3:DeleteObject only for the poller and only under
    the PayloadCleanup condition; nobody gets s3:PutObject (DLQ forwarding keeps pointers);
    SQSKIT_PAYLOAD_BUCKET on the worker, the DLQ monitor and the poller container."""
    res = t.resources.get(PAYLOAD_BUCKET) or {}
    if not r.check(res.get("Type") == "AWS::S3::Bucket", f"{PAYLOAD_BUCKET} is an AWS::S3::Bucket", f"got {res.get('Type')!r}"):
        return
    p = res.get("Properties") or {}
    sse = [rule.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
           for rule in as_list((p.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration"))]
    r.check(bool(sse) and all(a in ("AES256", "aws:kms", "aws:kms:dsse") for a in sse),
            f"{PAYLOAD_BUCKET}: server-side encryption", f"got {sse}")
    pab = p.get("PublicAccessBlockConfiguration") or {}
    flags = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    r.check(all(pab.get(f) is True for f in flags), f"{PAYLOAD_BUCKET}: public access blocked", f"got {pab}")
    rules = as_list((p.get("LifecycleConfiguration") or {}).get("Rules"))
    expiring = [x for x in rules if isinstance(x, dict) and x.get("Status") == "Enabled"
                and (x.get("ExpirationInDays") is not None)]
    r.check(bool(expiring), f"{PAYLOAD_BUCKET}: a lifecycle rule expires objects", f"got {rules}")
    days = (t.doc.get("Parameters") or {}).get("PayloadExpirationDays") or {}
    r.check(any(ref_target(x.get("ExpirationInDays")) == "PayloadExpirationDays" for x in expiring)
            and to_int(days.get("Default")) is not None and 1 <= (to_int(days.get("Default")) or 0) <= 30,
            "PayloadBucket expires after PayloadExpirationDays (default 1..30)", f"got {days}")
    tls = False
    for name, pol in t.of_type("AWS::S3::BucketPolicy"):
        pp = t.props(name)
        if ref_target(pp.get("Bucket")) != PAYLOAD_BUCKET:
            continue
        for st in iter_statements(pp.get("PolicyDocument")):
            cond = ((st.get("Condition") or {}).get("Bool") or {}).get("aws:SecureTransport")
            tls = tls or (st.get("Effect") == "Deny" and st.get("Action") == "s3:*" and str(cond).lower() == "false")
    r.check(tls, f"{PAYLOAD_BUCKET}: bucket policy denies requests without TLS")

    for role, _ in t.of_type("AWS::IAM::Role"):
        grants = [(a, res, st) for a, res, st in s3_grants(t, role)
                  if names_payload_objects(res) or ref_target(res) == PAYLOAD_BUCKET]
        actions = {a for a, _, _ in grants}
        want = {"s3:GetObject"} if role in PAYLOAD_READERS else set()
        if role in PAYLOAD_CLEANERS:
            want = want | {"s3:DeleteObject"}
        r.check(actions == want, f"{role}: s3 actions on {PAYLOAD_BUCKET} are exactly {sorted(want)}", f"got {sorted(actions)}")
        r.check(all(names_payload_objects(res) for _, res, _ in grants),
                f"{role}: {PAYLOAD_BUCKET} grants name its objects (ARN/*) only")
    # s3:DeleteObject only under the PayloadCleanup condition
    for role in PAYLOAD_CLEANERS:
        conditional = False
        for pol in leaves(t.props(role).get("Policies")):
            doc = (pol or {}).get("PolicyDocument") if isinstance(pol, dict) else None
            for st in as_list((doc or {}).get("Statement")):
                branch = st.get("Fn::If") if isinstance(st, dict) else None
                if isinstance(branch, list) and branch and branch[0] == "CleansUpPayloads":
                    conditional = conditional or "s3:DeleteObject" in leaves((branch[1] or {}).get("Action"))
        r.check(conditional, f"{role}: s3:DeleteObject on {PAYLOAD_BUCKET} only if CleansUpPayloads")

    envs = {
        "WorkerFunction": (t.props("WorkerFunction").get("Environment") or {}).get("Variables") or {},
        "DlqMonitorFunction": (t.props("DlqMonitorFunction").get("Environment") or {}).get("Variables") or {},
        "PollerTaskDefinition": container_env(t, "PollerTaskDefinition"),
    }
    for user, env in envs.items():
        r.check(ref_target(env.get("SQSKIT_PAYLOAD_BUCKET")) == PAYLOAD_BUCKET,
                f"{user}: env SQSKIT_PAYLOAD_BUCKET is Ref {PAYLOAD_BUCKET}", f"got {env.get('SQSKIT_PAYLOAD_BUCKET')!r}")
    r.check(ref_target(envs["PollerTaskDefinition"].get("SQSKIT_PAYLOAD_CLEANUP")) == "PayloadCleanup",
            "PollerTaskDefinition: env SQSKIT_PAYLOAD_CLEANUP is Ref PayloadCleanup")


POLLER_TASK = "PollerTaskDefinition"
POLLER_CONTAINER = "poller"
# ECS container health check limits (seconds / count)
HEALTH_LIMITS = {"Interval": (5, 300), "Timeout": (2, 120), "Retries": (1, 10), "StartPeriod": (0, 300)}


def poller_container(t: Template) -> dict[str, Any]:
    for cd in as_list(t.props(POLLER_TASK).get("ContainerDefinitions")):
        if isinstance(cd, dict) and cd.get("Name") == POLLER_CONTAINER:
            return cd
    return {}


def addr_port(addr: Any) -> int | None:
    m = re.fullmatch(r"[^:]+:(\d+)", addr) if isinstance(addr, str) else None
    return int(m.group(1)) if m else None


def check_health_check(t: Template, r: Report, root: Path, image_crate: Path | None) -> None:
    """The poller container's health check: exec form `sqskit health --addr 127.0.0.1:PORT`, the
    binary the image's ENTRYPOINT names, whose code (src/ or its crate) has the `health`
    subcommand and /healthz; PORT the metrics server's (SQSKIT_METRICS_ADDR) and a mapped
    container port; timings within ECS's limits, timeout shorter than the interval."""
    cd = poller_container(t)
    if not r.check(bool(cd), f"{POLLER_TASK} has a container named {POLLER_CONTAINER!r}"):
        return
    hc = cd.get("HealthCheck") or {}
    cmd = hc.get("Command")
    if not r.check(isinstance(cmd, list) and len(cmd) == 5 and cmd[0] == "CMD",
                   f"{POLLER_CONTAINER}: HealthCheck.Command is exec form [CMD, <sqskit>, health, --addr, HOST:PORT]",
                   f"got {cmd!r}"):
        return
    entry = [a for i, a in dockerfile_instructions(root / "Dockerfile") if i == "ENTRYPOINT"] \
        if (root / "Dockerfile").is_file() else []
    try:
        binary = json.loads(entry[-1])[0] if entry else None
    except (json.JSONDecodeError, IndexError):
        binary = None
    r.check(cmd[1] == binary, f"{POLLER_CONTAINER}: the health check runs the image's ENTRYPOINT binary {binary!r}",
            f"got {cmd[1]!r}")
    r.check(cmd[2:4] == ["health", "--addr"], f"{POLLER_CONTAINER}: the health check is `sqskit health --addr`",
            f"got {cmd[2:4]!r}")
    code = rust_sources(root / "src", image_crate) if image_crate else ""
    r.check(re.search(r"\bHealth\s*\(", code) is not None and '"/healthz"' in code,
            f"{POLLER_CONTAINER}: the image's code has a `health` subcommand and serves /healthz",
            "no Health(...) subcommand or \"/healthz\" in src/ or the image's crate")
    host = cmd[4].rsplit(":", 1)[0] if isinstance(cmd[4], str) else None
    r.check(host in ("127.0.0.1", "localhost"), f"{POLLER_CONTAINER}: the health check asks the task itself (loopback)",
            f"got {cmd[4]!r}")
    env = container_env(t, POLLER_TASK)
    metrics_port = addr_port(env.get("SQSKIT_METRICS_ADDR"))
    r.check(metrics_port is not None and addr_port(cmd[4]) == metrics_port,
            f"{POLLER_CONTAINER}: the health check port is SQSKIT_METRICS_ADDR's ({metrics_port})", f"got {cmd[4]!r}")
    ports = [to_int(pm.get("ContainerPort")) for pm in as_list(cd.get("PortMappings")) if isinstance(pm, dict)]
    r.check(metrics_port in ports, f"{POLLER_CONTAINER}: the metrics/health port {metrics_port} is a mapped container port",
            f"got {ports}")
    for key, (lo, hi) in HEALTH_LIMITS.items():
        v = to_int(hc.get(key))
        r.check(v is not None and lo <= v <= hi, f"{POLLER_CONTAINER}: HealthCheck.{key} set, within {lo}..{hi}",
                f"got {hc.get(key)!r}")
    interval, timeout = to_int(hc.get("Interval")), to_int(hc.get("Timeout"))
    r.check(interval is not None and timeout is not None and timeout < interval,
            f"{POLLER_CONTAINER}: HealthCheck.Timeout < Interval", f"got {timeout} / {interval}")
    r.check((to_int(hc.get("StartPeriod")) or 0) > 0, f"{POLLER_CONTAINER}: HealthCheck.StartPeriod covers start-up (> 0)")


POLLER_SERVICE = "PollerService"


def if_branches(v: Any) -> dict[Any, str | None]:
    """{(condition, True|False): logical id} for an Fn::If of two Ref/GetAtt, {None: id} otherwise."""
    if isinstance(v, dict) and set(v) == {"Fn::If"} and isinstance(v["Fn::If"], list) and len(v["Fn::If"]) == 3:
        cond, yes, no = v["Fn::If"]
        return {(cond, True): ref_target(yes), (cond, False): ref_target(no)}
    return {None: ref_target(v)}


def check_autoscaling(t: Template, r: Report) -> None:
    """Backlog-per-task autoscaling of the poller service: Container Insights on its cluster, a
    scalable target on its desired count between PollerMinTasks and PollerMaxTasks (service-linked
    role, no DesiredCount on the service to fight it), and one target tracking policy whose metric
    math is visible messages of the consumed queue / running tasks (guarded against 0 tasks) /
    MessagesPerSecondPerTask, returned by the last expression only, at AcceptableLatencySeconds."""
    svc_res = t.resources.get(POLLER_SERVICE) or {}
    svc = t.props(POLLER_SERVICE)
    cluster = ref_target(svc.get("Cluster"))
    settings = {s.get("Name"): s.get("Value") for s in as_list(t.props(cluster).get("ClusterSettings")) if isinstance(s, dict)}
    r.check(settings.get("containerInsights") in ("enabled", "enhanced"),
            f"{cluster}: Container Insights on (RunningTaskCount for the scaling metric)", f"got {settings}")
    r.check("DesiredCount" not in svc, f"{POLLER_SERVICE}: no DesiredCount (autoscaling owns the task count)",
            f"got {svc.get('DesiredCount')!r}")

    def names_service(res_id: Any) -> bool:
        sub = res_id.get("Fn::Sub") if isinstance(res_id, dict) else None
        return isinstance(sub, str) and sub == f"service/${{{cluster}}}/${{{POLLER_SERVICE}.Name}}"

    targets = [n for n, _ in t.of_type("AWS::ApplicationAutoScaling::ScalableTarget") if names_service(t.props(n).get("ResourceId"))]
    if not r.check(len(targets) == 1, f"one ScalableTarget for service/{cluster}/{POLLER_SERVICE}", f"got {targets}"):
        return
    target = targets[0]
    tp = t.props(target)
    r.check((t.resources[target].get("Condition")) == svc_res.get("Condition"),
            f"{target}: same Condition as {POLLER_SERVICE} ({svc_res.get('Condition')})")
    r.check(tp.get("ServiceNamespace") == "ecs" and tp.get("ScalableDimension") == "ecs:service:DesiredCount",
            f"{target}: ecs / ecs:service:DesiredCount", f"got {tp.get('ServiceNamespace')!r} {tp.get('ScalableDimension')!r}")
    r.check(tp.get("MinCapacity") == {"Ref": "PollerMinTasks"} and tp.get("MaxCapacity") == {"Ref": "PollerMaxTasks"},
            f"{target}: MinCapacity/MaxCapacity are Ref PollerMinTasks/PollerMaxTasks",
            f"got {tp.get('MinCapacity')!r} / {tp.get('MaxCapacity')!r}")
    r.check("RoleARN" not in tp, f"{target}: no RoleARN (the service-linked role, no IAM role of ours)")
    for name in ("PollerMinTasks", "PollerMaxTasks"):
        p = param(t, name)
        r.check(p.get("Type") == "Number" and (to_int(p.get("MinValue")) or 0) >= 1, f"parameter {name} is a Number >= 1",
                f"got {p}")

    policies = [n for n, _ in t.of_type("AWS::ApplicationAutoScaling::ScalingPolicy")
                if ref_target(t.props(n).get("ScalingTargetId")) == target]
    if not r.check(len(policies) == 1, f"one ScalingPolicy on {target}", f"got {policies}"):
        return
    pol = policies[0]
    pp = t.props(pol)
    r.check(pp.get("PolicyType") == "TargetTrackingScaling", f"{pol}: PolicyType TargetTrackingScaling")
    cfg = pp.get("TargetTrackingScalingPolicyConfiguration") or {}
    r.check(cfg.get("TargetValue") == {"Ref": "AcceptableLatencySeconds"}, f"{pol}: TargetValue is Ref AcceptableLatencySeconds",
            f"got {cfg.get('TargetValue')!r}")
    r.check(all(to_int(cfg.get(k)) is not None and to_int(cfg.get(k)) > 0 for k in ("ScaleOutCooldown", "ScaleInCooldown")),
            f"{pol}: ScaleOutCooldown and ScaleInCooldown set")
    r.check(cfg.get("DisableScaleIn") is not True, f"{pol}: scales in (tasks drain on SIGTERM)")
    metrics = as_list((cfg.get("CustomizedMetricSpecification") or {}).get("Metrics"))
    by_id = {m.get("Id"): m for m in metrics if isinstance(m, dict)}
    r.check(len(by_id) == len(metrics) and all(isinstance(i, str) and re.fullmatch(r"[a-z][A-Za-z0-9_]*", i) for i in by_id),
            f"{pol}: metric ids are unique and valid", f"got {list(by_id)}")
    returned = [i for i, m in by_id.items() if m.get("ReturnData") is True]
    r.check(len(returned) == 1 and "Expression" in by_id[returned[0]],
            f"{pol}: exactly one query has ReturnData true, and it is an expression", f"got {returned}")
    r.check(all(m.get("ReturnData") is False for i, m in by_id.items() if i not in returned),
            f"{pol}: every other query has ReturnData false (the API's default is true)")

    def stat_of(m: dict[str, Any]) -> tuple[str | None, str | None, dict[str, Any]]:
        ms = m.get("MetricStat") or {}
        met = ms.get("Metric") or {}
        dims = {d.get("Name"): d.get("Value") for d in as_list(met.get("Dimensions")) if isinstance(d, dict)}
        return met.get("Namespace"), met.get("MetricName"), dims

    backlog = [i for i, m in by_id.items() if stat_of(m)[:2] == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")]
    tasks = [i for i, m in by_id.items() if stat_of(m)[:2] == ("ECS/ContainerInsights", "RunningTaskCount")]
    if not r.check(len(backlog) == 1 and len(tasks) == 1,
                   f"{pol}: one AWS/SQS ApproximateNumberOfMessagesVisible and one ECS/ContainerInsights RunningTaskCount",
                   f"got {backlog} / {tasks}"):
        return
    m1, m2 = backlog[0], tasks[0]
    r.check(((by_id[m1].get("MetricStat") or {}).get("Stat")) in ("Average", "Sum", "Maximum"),
            f"{pol}: {m1} statistic is Average, Sum or Maximum")
    queue_dim = stat_of(by_id[m1])[2].get("QueueName")
    consumed = container_env(t, POLLER_TASK).get("SQSKIT_QUEUE_URL")
    queue_names = all(isinstance(v, dict) and (v.get("Fn::GetAtt") or [None, None])[1:] == ["QueueName"]
                      for v in leaves(queue_dim))
    r.check(set(stat_of(by_id[m1])[2]) == {"QueueName"} and queue_names
            and if_branches(queue_dim) == if_branches(consumed),
            f"{pol}: {m1} QueueName is the QueueName of the queue the poller consumes (SQSKIT_QUEUE_URL)",
            f"got {queue_dim!r}, consumed {consumed!r}")
    dims = stat_of(by_id[m2])[2]
    r.check(dims == {"ClusterName": {"Ref": cluster}, "ServiceName": {"Fn::GetAtt": [POLLER_SERVICE, "Name"]}},
            f"{pol}: {m2} dimensions are ClusterName=Ref {cluster}, ServiceName={POLLER_SERVICE}.Name", f"got {dims}")
    final = by_id[returned[0]].get("Expression")
    sub = final.get("Fn::Sub") if isinstance(final, dict) else None
    m = re.fullmatch(r"\s*([a-z]\w*)\s*/\s*\$\{MessagesPerSecondPerTask\}\s*", sub) if isinstance(sub, str) else None
    per_task = by_id.get(m.group(1)) if m else None
    r.check(per_task is not None and "Expression" in per_task,
            f"{pol}: the returned expression is <backlog per task> / ${{MessagesPerSecondPerTask}}", f"got {final!r}")
    guarded = rf"IF\(\s*{m2}\s*>\s*0\s*,\s*{m1}\s*/\s*{m2}\s*,\s*{m1}\s*\)"
    r.check(per_task is not None and re.fullmatch(guarded, str(per_task.get("Expression", "")).strip()) is not None,
            f"{pol}: backlog per task is IF({m2} > 0, {m1} / {m2}, {m1}) (no division by zero)",
            f"got {per_task.get('Expression') if per_task else None!r}")
    for name, minimum in (("AcceptableLatencySeconds", 1), ("MessagesPerSecondPerTask", 0)):
        p = param(t, name)
        lo = p.get("MinValue")
        r.check(p.get("Type") == "Number" and isinstance(lo, (int, float)) and lo >= minimum and lo > 0,
                f"parameter {name} is a Number with a positive MinValue", f"got {p}")


def kms_actions_on(t: Template, role: str, conds: dict[str, bool], key: Any) -> set[str]:
    """kms actions the role allows on `key` (a Ref/GetAtt) under these conditions."""
    out: set[str] = set()
    for pol in as_list(resolve(t.props(role).get("Policies"), conds)):
        doc = pol.get("PolicyDocument") if isinstance(pol, dict) else None
        for st in as_list((doc or {}).get("Statement")):
            if isinstance(st, dict) and st.get("Effect") == "Allow" and key in as_list(st.get("Resource")):
                out.update(a for a in as_list(st.get("Action")) if isinstance(a, str) and a.lower().startswith("kms:"))
    return out


def check_kms(t: Template, r: Report) -> None:
    """KmsKeyArn (empty = the services' own encryption): when set, it encrypts the log groups and
    the functions' environment variables (the queues: check_queues), and each role gets exactly
    the kms actions its work needs on that key and nothing else: kms:Decrypt to receive from a
    queue or to read a function's environment, kms:GenerateDataKey to send to one. When empty, no
    role names it."""
    p = param(t, KMS_PARAM)
    pattern = p.get("AllowedPattern")
    ok = p.get("Type") == "String" and p.get("Default") == "" and isinstance(pattern, str)
    r.check(ok and re.fullmatch(pattern, "") is not None and re.fullmatch(pattern, SAMPLE_KEY_ARN) is not None
            and re.fullmatch(pattern, "alias/sqskit") is None,
            f"parameter {KMS_PARAM}: String, default empty, AllowedPattern takes '' or a key ARN (not an alias)", f"got {p}")
    function_roles = {ref_target(t.props(f).get("Role")) for f, _ in t.of_type("AWS::Serverless::Function", "AWS::Lambda::Function")}
    key_ref = {"Ref": KMS_PARAM}
    for key in ("", SAMPLE_KEY_ARN):
        conds = t.conditions(**{KMS_PARAM: key, "UseFifo": "true", "PollerImageUri": "image"})
        state = "set" if key else "empty"
        want_key = key_ref if key else None
        uses = f"Ref {KMS_PARAM}" if key else "none (the service's default encryption)"
        for name, _ in t.of_type("AWS::Logs::LogGroup"):
            got = resolve(t.props(name), conds).get("KmsKeyId")
            r.check(got == want_key, f"{name} ({KMS_PARAM}={state}): KmsKeyId {uses}", f"got {got!r}")
        for name, _ in t.of_type("AWS::Serverless::Function", "AWS::Lambda::Function"):
            got = resolve(t.props(name), conds).get("KmsKeyArn")
            r.check(got == want_key, f"{name} ({KMS_PARAM}={state}): KmsKeyArn (environment) {uses}", f"got {got!r}")
        for role, _ in t.of_type("AWS::IAM::Role"):
            if not t.exists(role, conds):
                continue
            need: set[str] = set()
            if key:
                grants = [(set(as_list(st.get("Action"))), st) for pol in as_list(resolve(t.props(role).get("Policies"), conds))
                          for st in as_list(((pol or {}).get("PolicyDocument") or {}).get("Statement"))
                          if isinstance(st, dict) and st.get("Effect") == "Allow"]
                actions = set().union(*(a for a, _ in grants)) if grants else set()
                if "sqs:ReceiveMessage" in actions or "sqs:SendMessage" in actions or role in function_roles:
                    need.add("kms:Decrypt")
                if "sqs:SendMessage" in actions:
                    need.add("kms:GenerateDataKey")
            got = kms_actions_on(t, role, conds, key_ref)
            r.check(got == need, f"{role} ({KMS_PARAM}={state}): kms actions on {KMS_PARAM} are exactly {sorted(need)}",
                    f"got {sorted(got)}")


def check_reserved_concurrency(t: Template, r: Report) -> None:
    """Each function's ReservedConcurrentExecutions comes from its own parameter, -1 (the default)
    meaning none: reserving takes from the account's pool, which a new account may not have."""
    for name, _ in t.of_type("AWS::Serverless::Function", "AWS::Lambda::Function"):
        rce = t.props(name).get("ReservedConcurrentExecutions")
        branch = rce.get("Fn::If") if isinstance(rce, dict) else None
        pname = ref_target(branch[1]) if isinstance(branch, list) and len(branch) == 3 else None
        if not r.check(pname is not None and branch[2] == {"Ref": "AWS::NoValue"},
                       f"{name}: ReservedConcurrentExecutions is Fn::If [cond, Ref <parameter>, AWS::NoValue]",
                       f"got {rce!r}"):
            continue
        p = param(t, pname)
        r.check(p.get("Type") == "Number" and str(p.get("Default")) == "-1" and str(p.get("MinValue")) == "-1",
                f"{name}: parameter {pname} is a Number, default and minimum -1 (none)", f"got {p}")
        off = resolve(t.props(name), t.conditions()).get("ReservedConcurrentExecutions")
        on = resolve(t.props(name), t.conditions(**{pname: "50"})).get("ReservedConcurrentExecutions")
        r.check(off is None and on == {"Ref": pname}, f"{name}: no reserved concurrency at -1, {pname} otherwise",
                f"got {off!r} / {on!r}")


CHECKOV_ID = re.compile(r"CKV2?_AWS_\d+")


def check_checkov_skips(t: Template, r: Report) -> None:
    """Every checkov skip in the template (resource Metadata.checkov.skip) names a check id and
    says why it does not apply, once per check and resource."""
    total = 0
    for name, res in t.resources.items():
        skips = ((res.get("Metadata") or {}).get("checkov") or {}).get("skip") if isinstance(res, dict) else None
        if skips is None:
            continue
        ids = [s.get("id") if isinstance(s, dict) else None for s in as_list(skips)]
        r.check(len(ids) == len(set(ids)), f"{name}: each checkov check skipped once", f"got {ids}")
        for s in as_list(skips):
            sid = s.get("id") if isinstance(s, dict) else None
            comment = s.get("comment") if isinstance(s, dict) else None
            total += 1
            r.check(isinstance(sid, str) and CHECKOV_ID.fullmatch(sid) is not None
                    and isinstance(comment, str) and len(comment.strip()) >= 20,
                    f"{name}: checkov skip {sid} has a reason", f"got {s!r}")
    r.check(total > 0, "template has checkov skips to check")


ACCESS_LOG_BUCKET = "AccessLogBucket"


def check_access_logs(t: Template, r: Report) -> None:
    """The archive and payload buckets log access to AccessLogBucket (private, encrypted with
    SSE-S3, expiring, TLS-only), whose policy lets only S3 log delivery for those two buckets of
    this account write; the archive is versioned and its old versions expire."""
    sources = ("ArchiveBucket", PAYLOAD_BUCKET)
    for b in sources:
        lc = t.props(b).get("LoggingConfiguration") or {}
        r.check(ref_target(lc.get("DestinationBucketName")) == ACCESS_LOG_BUCKET and bool(lc.get("LogFilePrefix")),
                f"{b}: server access logs to {ACCESS_LOG_BUCKET} under a prefix", f"got {lc}")
    p = t.props(ACCESS_LOG_BUCKET)
    sse = [rule.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
           for rule in as_list((p.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration"))]
    r.check(sse == ["AES256"], f"{ACCESS_LOG_BUCKET}: SSE-S3 (log delivery does not write to SSE-KMS buckets)", f"got {sse}")
    pab = p.get("PublicAccessBlockConfiguration") or {}
    r.check(all(pab.get(f) is True for f in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")),
            f"{ACCESS_LOG_BUCKET}: public access blocked")
    rules = as_list((p.get("LifecycleConfiguration") or {}).get("Rules"))
    r.check(any(ref_target(x.get("ExpirationInDays")) == "AccessLogExpirationDays" for x in rules if isinstance(x, dict)),
            f"{ACCESS_LOG_BUCKET}: expires after AccessLogExpirationDays")
    grants, tls = [], False
    for name, _ in t.of_type("AWS::S3::BucketPolicy"):
        pp = t.props(name)
        if ref_target(pp.get("Bucket")) != ACCESS_LOG_BUCKET:
            continue
        for st in iter_statements(pp.get("PolicyDocument")):
            if st.get("Effect") == "Allow":
                grants.append(st)
            cond = ((st.get("Condition") or {}).get("Bool") or {}).get("aws:SecureTransport")
            tls = tls or (st.get("Effect") == "Deny" and st.get("Action") == "s3:*" and str(cond).lower() == "false")
    r.check(tls, f"{ACCESS_LOG_BUCKET}: bucket policy denies requests without TLS")
    ok = len(grants) == 1
    if ok:
        st = grants[0]
        cond = st.get("Condition") or {}
        src = {ref_target(a) for a in as_list((cond.get("ArnLike") or {}).get("aws:SourceArn"))}
        ok = (st.get("Principal") == {"Service": "logging.s3.amazonaws.com"} and st.get("Action") == "s3:PutObject"
              and src == set(sources)
              and (cond.get("StringEquals") or {}).get("aws:SourceAccount") == {"Ref": "AWS::AccountId"})
    r.check(ok, f"{ACCESS_LOG_BUCKET}: the only Allow is s3:PutObject for logging.s3.amazonaws.com from {list(sources)} "
                "of this account", f"got {grants}")
    ap = t.props("ArchiveBucket")
    r.check((ap.get("VersioningConfiguration") or {}).get("Status") == "Enabled", "ArchiveBucket: versioning enabled")
    r.check(any(isinstance(x, dict) and x.get("Status") == "Enabled" and x.get("NoncurrentVersionExpiration")
                for x in as_list((ap.get("LifecycleConfiguration") or {}).get("Rules"))),
            "ArchiveBucket: noncurrent versions expire (the archive's expiry still frees the space)")


def check_alarms(t: Template, r: Report) -> None:
    alarms = dict(t.of_type("AWS::CloudWatch::Alarm"))
    for required in ("DeadLetterQueueNotEmptyAlarm", "WorkQueueOldestMessageAlarm"):
        r.check(required in alarms, f"alarm {required} exists")
    for name in sorted(alarms):
        targets = [ref_target(a) for a in leaves(t.props(name).get("AlarmActions"))]
        r.check("AlertTopic" in targets, f"{name}: AlarmActions notify AlertTopic", f"got {targets}")


# ---------------------------------------------------------------- recurring jobs
SCHEDULER_ROLE = "SchedulerRole"
SCHEDULE_DLQ = "ScheduleDeadLetterQueue"
SCHEDULE_TZ = "ScheduleTimezone"
# EventBridge Scheduler's limits (RetryPolicy) and the context attributes it fills in
SCHEDULER_MAX_RETRIES = 185
SCHEDULER_EVENT_AGE = (60, 86400)
SCHEDULE_CONTEXT = ("<aws.scheduler.schedule-arn>", "<aws.scheduler.scheduled-time>",
                    "<aws.scheduler.execution-id>", "<aws.scheduler.attempt-number>")


def check_schedules(t: Template, r: Report) -> None:
    """The optional recurring jobs: each AWS::Scheduler::Schedule exists only when its expression
    parameter is set (whose AllowedPattern takes rate/cron expressions and nothing else), runs in
    ScheduleTimezone with no flexible window, sends to WorkQueue a body that names the job and
    carries Scheduler's context attributes and the job's input, retries within Scheduler's limits
    and dead-letters into a standard queue that keeps 14 days and alarms; SchedulerRole is assumed
    by scheduler.amazonaws.com of this account only and may do nothing but sqs:SendMessage on the
    work queue and that DLQ (plus kms:Decrypt/GenerateDataKey on KmsKeyArn when set)."""
    schedules = dict(t.of_type("AWS::Scheduler::Schedule"))
    r.check(len(schedules) >= 1, "template has optional recurring jobs (AWS::Scheduler::Schedule)")
    tz = param(t, SCHEDULE_TZ)
    pat = tz.get("AllowedPattern") or ""
    r.check(tz.get("Default") == "UTC" and all(re.fullmatch(pat, z) for z in ("UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires"))
            and not any(re.fullmatch(pat, z) for z in ("", "UTC; rm", "+02:00")),
            f"parameter {SCHEDULE_TZ}: default UTC, IANA names only", f"got {tz}")
    every = {}
    for name in sorted(schedules):
        cond = (schedules[name] or {}).get("Condition")
        expr = None
        cdef = (t.doc.get("Conditions") or {}).get(cond) if cond else None
        if isinstance(cdef, dict):
            inner = (cdef.get("Fn::Not") or [None])[0]
            eq = inner.get("Fn::Equals") if isinstance(inner, dict) else None
            if isinstance(eq, list) and len(eq) == 2 and eq[1] == "":
                expr = ref_target(eq[0])
        p = t.props(name)
        ok = expr is not None and ref_target(p.get("ScheduleExpression")) == expr
        r.check(ok, f"{name}: created only when its ScheduleExpression parameter is set", f"condition {cond!r}")
        if expr:
            every[expr] = True
            ep = param(t, expr)
            pat = ep.get("AllowedPattern") or ""
            good = ["", "rate(1 minute)", "rate(15 minutes)", "rate(2 hours)", "cron(0 7 ? * MON-FRI *)", "cron(*/5 * * * ? *)"]
            bad = ["every 5 minutes", "rate(0 minutes)", "rate(5 weeks)", "at(2026-01-01T00:00:00)", "cron(0 7 * * *) x"]
            r.check(ep.get("Default") == "" and all(re.fullmatch(pat, g) for g in good) and not any(re.fullmatch(pat, b) for b in bad),
                    f"parameter {expr}: default empty (no job), AllowedPattern takes rate(...) and cron(...) only", f"got {ep}")
        r.check(ref_target(p.get("ScheduleExpressionTimezone")) == SCHEDULE_TZ, f"{name}: ScheduleExpressionTimezone is {SCHEDULE_TZ}")
        r.check((p.get("FlexibleTimeWindow") or {}).get("Mode") == "OFF", f"{name}: FlexibleTimeWindow OFF (runs on time)")
        r.check(p.get("KmsKeyArn") == {"Fn::If": ["HasKmsKey", {"Ref": KMS_PARAM}, {"Ref": "AWS::NoValue"}]},
                f"{name}: its input is encrypted with {KMS_PARAM} when set")
        tg = p.get("Target") or {}
        r.check(ref_target(tg.get("Arn")) == "WorkQueue" and ref_target(tg.get("RoleArn")) == SCHEDULER_ROLE,
                f"{name}: target WorkQueue, as {SCHEDULER_ROLE}", f"got {tg.get('Arn')} {tg.get('RoleArn')}")
        sub = (tg.get("Input") or {}).get("Fn::Sub")
        body_ok = isinstance(sub, str)
        if body_ok:
            sample = re.sub(r"\$\{(\w+)\}", lambda m: '{"k":1}' if m.group(1).endswith("Input") else m.group(1), sub)
            try:
                body = json.loads(sample)
                sched = body.get("schedule") or {}
                body_ok = (re.fullmatch(r"Schedule\d+Name", str(sched.get("name"))) is not None and body.get("input") == {"k": 1}
                           and set(SCHEDULE_CONTEXT) <= set(sched.values()))
            except json.JSONDecodeError:
                body_ok = False
        r.check(body_ok, f"{name}: the message is JSON naming the job (/schedule/name) with Scheduler's context and the job's input",
                f"got {sub!r}")
        rp = tg.get("RetryPolicy") or {}
        tries, age = to_int(rp.get("MaximumRetryAttempts")), to_int(rp.get("MaximumEventAgeInSeconds"))
        r.check(tries is not None and 0 <= tries <= SCHEDULER_MAX_RETRIES and age is not None
                and SCHEDULER_EVENT_AGE[0] <= age <= SCHEDULER_EVENT_AGE[1],
                f"{name}: RetryPolicy within Scheduler's limits", f"got {rp}")
        r.check(ref_target((tg.get("DeadLetterConfig") or {}).get("Arn")) == SCHEDULE_DLQ, f"{name}: dead-letters into {SCHEDULE_DLQ}")
    dq = t.props(SCHEDULE_DLQ)
    r.check(t.type_of(SCHEDULE_DLQ) == "AWS::SQS::Queue" and not dq.get("FifoQueue")
            and to_int(dq.get("MessageRetentionPeriod")) == SQS_RETENTION_MAX,
            f"{SCHEDULE_DLQ}: a standard queue (Scheduler takes no FIFO DLQ) keeping 14 days", f"got {dq}")
    alarmed = any(ref_target(d.get("Value")) == SCHEDULE_DLQ for a, _ in t.of_type("AWS::CloudWatch::Alarm")
                  for d in as_list(t.props(a).get("Dimensions")) if isinstance(d, dict))
    r.check(alarmed, f"{SCHEDULE_DLQ}: an alarm watches it")
    trust = list(iter_statements(t.props(SCHEDULER_ROLE).get("AssumeRolePolicyDocument")))
    r.check(len(trust) == 1 and (trust[0].get("Principal") or {}).get("Service") == "scheduler.amazonaws.com"
            and ((trust[0].get("Condition") or {}).get("StringEquals") or {}).get("aws:SourceAccount") == {"Ref": "AWS::AccountId"},
            f"{SCHEDULER_ROLE}: trusted by scheduler.amazonaws.com of this account only", f"got {trust}")
    r.check(not t.props(SCHEDULER_ROLE).get("ManagedPolicyArns"), f"{SCHEDULER_ROLE}: no managed policies")
    for key in ("", SAMPLE_KEY_ARN):
        overrides = {f"Schedule{i}Expression": "rate(1 hour)" for i in range(1, 4)}
        conds = t.conditions(**{KMS_PARAM: key, **overrides})
        grants = [(set(as_list(st.get("Action"))), {ref_target(x) if ref_target(x) else json.dumps(x) for x in as_list(st.get("Resource"))})
                  for pol in as_list(resolve(t.props(SCHEDULER_ROLE).get("Policies"), conds))
                  for st in as_list(((pol or {}).get("PolicyDocument") or {}).get("Statement"))
                  if isinstance(st, dict) and st.get("Effect") == "Allow"]
        want = [({"sqs:SendMessage"}, {"WorkQueue", SCHEDULE_DLQ})]
        if key:
            want.append(({"kms:Decrypt", "kms:GenerateDataKey"}, {KMS_PARAM}))
        norm = lambda gs: sorted((sorted(a), sorted(str(x) for x in res)) for a, res in gs)  # noqa: E731
        r.check(norm(grants) == norm(want),
                f"{SCHEDULER_ROLE} ({KMS_PARAM}={'set' if key else 'empty'}): only {want}", f"got {grants}")
        missing = [n for n in schedules if not t.exists(n, conds)]
        r.check(not missing and t.exists(SCHEDULER_ROLE, conds) and t.exists(SCHEDULE_DLQ, conds),
                f"every schedule, {SCHEDULER_ROLE} and {SCHEDULE_DLQ} exist when the expressions are set", f"missing {missing}")
    none = t.conditions()
    r.check(not any(t.exists(n, none) for n in [*schedules, SCHEDULER_ROLE, SCHEDULE_DLQ]),
            "with the defaults no schedule, role or schedule DLQ is created")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("template", nargs="?", default=str(ROOT / "template.yaml"))
    ap.add_argument("--root", default=str(ROOT),
                    help="workspace root with Cargo.toml, src/ and Dockerfile (default: this repo)")
    args = ap.parse_args()
    root = Path(args.root)
    template = Path(args.template)

    t = Template(load_template(template))
    r = Report()
    fn_crates = check_functions(t, r, root, template.resolve().parent)
    image_crate = check_dockerfile(r, root) if any(True for _ in t.of_type("AWS::ECS::TaskDefinition")) else None
    check_event_sources(t, r)
    check_worker_poller_mode(t, r)
    check_worker_metrics_and_filter(t, r)
    check_work_queue_visibility(t, r)
    check_queues(t, r)
    check_env_vars(t, r, root, fn_crates, image_crate)
    check_iam(t, r)
    check_event_source_permissions(t, r)
    check_idempotency(t, r)
    check_payload_bucket(t, r)
    check_access_logs(t, r)
    check_kms(t, r)
    check_reserved_concurrency(t, r)
    check_checkov_skips(t, r)
    if POLLER_TASK in t.resources:
        check_health_check(t, r, root, image_crate)
    if POLLER_SERVICE in t.resources:
        check_autoscaling(t, r)
    check_alarms(t, r)
    check_schedules(t, r)
    print(f"{r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
