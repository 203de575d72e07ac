"""Fixtures of the console's browser tests: LocalStack clients, real `sqskit poll` pollers, real
`sqskit console` processes, and Debian's chromium driven by Playwright.

Started once per suite (session fixtures): two long-running pollers with --metrics-addr, the main
console (--show-bodies, --poller for both, --archive-bucket), a --read-only console and a console
on 0.0.0.0 with a token. Each test makes its own uniquely named queues under the suite's prefix.
Run through scripts/test-console (it installs chromium and Playwright, and builds the binaries).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[3]
SQSKIT = os.environ.get("SQSKIT_BIN", str(ROOT / "target/debug/sqskit"))
DLQ_MONITOR = os.environ.get("SQSKIT_DLQ_MONITOR_BIN", str(ROOT / "target/debug/dlq-monitor"))
HANDLER = str(ROOT / "scripts/demo-handler")
CHROMIUM = os.environ.get("SQSKIT_CHROMIUM", "/usr/bin/chromium")
# the flags the machine's probe used: without the background-networking ones Chromium keeps
# trying to reach Google's hosts, which this closed network refuses
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
TOKEN = "console-test-token-" + uuid.uuid4().hex[:12]
SCREENSHOTS = ROOT / "target/console-screenshots"
WAIT = 60  # seconds a condition may take to hold (LocalStack on a busy 2-core machine)
expect.set_options(timeout=WAIT * 1000)


def wait_for(what: str, cond, timeout: float = WAIT, every: float = 0.25):
    """Poll `cond` until it returns a truthy value; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Aws:
    sqs: object
    s3: object
    prefix: str

    def create(self, name: str, dlq: bool = True, max_receive_count: int = 3, tags: dict | None = None,
               **attrs) -> tuple[str, str | None]:
        """A queue (and its DLQ) named `<prefix><name>`; returns (url, dlq_url)."""
        full = self.prefix + name
        dlq_url = None
        attributes = {k: str(v) for k, v in attrs.items()}
        if dlq:
            dlq_url = self.sqs.create_queue(QueueName=full + "-dlq")["QueueUrl"]
            arn = self.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": max_receive_count})
        url = self.sqs.create_queue(QueueName=full, Attributes=attributes, tags=tags or {})["QueueUrl"]
        return url, dlq_url

    def depth(self, url: str) -> dict[str, int]:
        a = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return {
            "visible": int(a["ApproximateNumberOfMessages"]),
            "in_flight": int(a["ApproximateNumberOfMessagesNotVisible"]),
            "delayed": int(a["ApproximateNumberOfMessagesDelayed"]),
        }

    def send(self, url: str, bodies, **kw) -> list[str]:
        ids = []
        bodies = list(bodies)
        for i in range(0, len(bodies), 10):
            entries = [{"Id": str(j), "MessageBody": b, **kw} for j, b in enumerate(bodies[i:i + 10])]
            out = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
            assert not out.get("Failed"), out
            ids += [s["MessageId"] for s in sorted(out["Successful"], key=lambda s: int(s["Id"]))]
        return ids

    def drain(self, url: str, expect: int | None = None) -> list[dict]:
        """Receive and delete every message (all attributes); waits for `expect` of them."""
        got: dict[str, dict] = {}
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            out = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           MessageAttributeNames=["All"], AttributeNames=["All"])
            msgs = out.get("Messages", [])
            for m in msgs:
                got[m["MessageId"]] = m
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            if not msgs and (expect is None or len(got) >= expect):
                break
        return list(got.values())


@pytest.fixture(scope="session")
def aws() -> Aws:
    kw = dict(endpoint_url=ENDPOINT, region_name=os.environ.get("AWS_REGION", "us-east-1"))
    sqs = boto3.client("sqs", **kw)
    s3 = boto3.client("s3", config=boto3.session.Config(s3={"addressing_style": "path"}), **kw)
    prefix = f"con{int(time.time()) % 100000}{uuid.uuid4().hex[:4]}-"
    return Aws(sqs=sqs, s3=s3, prefix=prefix)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    url: str = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass
class Procs:
    dir: Path
    all: list[Proc] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict | None = None) -> Proc:
        log = self.dir / f"{name}.log"
        fh = open(log, "wb")
        p = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, "RUST_LOG": "info", **(env or {})})
        proc = Proc(name, p, log)
        self.all.append(proc)
        return proc

    def console(self, name: str, *args: str) -> Proc:
        proc = self.start(name, [SQSKIT, "console", "--addr", "127.0.0.1:0", *args])
        line = wait_for(f"{name} to listen", lambda: proc.popen.poll() is None and re.search(
            r"sqskit console on (http://\S+)/", proc.output()) or (proc.popen.poll() is not None and "exited"))
        assert line != "exited", f"{name} exited:\n{proc.output()}"
        proc.url = line.group(1)
        return proc


@pytest.fixture(scope="session")
def procs():
    d = Path(tempfile.mkdtemp(prefix="sqskit-console-tests-"))
    p = Procs(d)
    yield p
    for proc in reversed(p.all):
        proc.stop()
    panics = [proc.name for proc in p.all if "panicked" in proc.output()]
    assert not panics, f"panic in the output of {panics}; logs in {d}"


@dataclass
class Poller:
    proc: Proc
    metrics: str
    queue: str


def run_poller_until_empty(queue_url: str):
    """A real `sqskit poll` run that stops once the queue is empty (poison → DLQ, permanent)."""
    out = subprocess.run([SQSKIT, "poll", "--queue-url", queue_url, "--exec", HANDLER, "--until-empty",
                          "--wait-time", "1", "--backoff-base", "1", "--backoff-max", "1", "--progress-interval", "0"],
                         capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "panicked" not in out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def pollers(aws, procs):
    """Two long-running pollers: one on <prefix>orders (with a DLQ), one on <prefix>payments;
    each is fed a known batch: orders 6 good + 3 poison, payments 4 good."""
    started = []
    for name, good, poison in [("orders", 6, 3), ("payments", 4, 0)]:
        url, _ = aws.create(name)
        port = free_port()
        proc = procs.start(f"poller-{name}", [SQSKIT, "poll", "--queue-url", url, "--exec", HANDLER,
                                              "--metrics-addr", f"127.0.0.1:{port}", "--wait-time", "1",
                                              "--progress-interval", "0"])
        bodies = [json.dumps({"order_id": i, "kind": "ok"}) for i in range(good)]
        bodies += [json.dumps({"order_id": 100 + i, "kind": "poison"}) for i in range(poison)]
        aws.send(url, bodies)
        started.append(Poller(proc, f"http://127.0.0.1:{port}", aws.prefix + name))
    return started


@pytest.fixture(scope="session")
def bucket(aws) -> str:
    name = (aws.prefix + "archive").lower()
    aws.s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def console(aws, procs, pollers, bucket) -> Proc:
    args = ["--queue-prefix", aws.prefix, "--show-bodies", "--archive-bucket", bucket, "--sample-every", "2"]
    for p in pollers:
        args += ["--poller", p.metrics]
    return procs.console("console", *args)


@pytest.fixture(scope="session")
def readonly_console(aws, procs) -> Proc:
    return procs.console("console-readonly", "--queue-prefix", aws.prefix, "--read-only")


@pytest.fixture(scope="session")
def token_console(aws, procs) -> Proc:
    port = free_port()
    proc = procs.start("console-token", [SQSKIT, "console", "--addr", f"0.0.0.0:{port}", "--queue-prefix", aws.prefix,
                                         "--token", TOKEN])
    wait_for("the token console to listen", lambda: "sqskit console on" in proc.output() or proc.popen.poll() is not None)
    assert proc.popen.poll() is None, proc.output()
    proc.url = f"http://127.0.0.1:{port}"
    return proc


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh page; fails the test when the browser reports a JavaScript error or a console
    error (a CSP violation is one) on any page it opened."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: m.type == "error" and not _expected_http_error(m.text) and errors.append(
        f"console {m.type}: {m.text}"))
    pg.set_default_timeout(WAIT * 1000)
    yield pg
    context.close()
    assert not errors, "the browser reported errors:\n" + "\n".join(errors)


def _expected_http_error(text: str) -> bool:
    # Chromium logs "Failed to load resource: ... 4xx" for pages a test opens on purpose with an
    # error status (a refused purge, a 401 login); those are answers, not script errors
    return text.startswith("Failed to load resource: the server responded with a status of 4")


def screenshot(pg, name: str):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SCREENSHOTS / name), full_page=True)
    if os.environ.get("SQSKIT_UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs/img").mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ROOT / "docs/img" / name), full_page=True)
