"""A Lambda Runtime API on 127.0.0.1 that runs a real Lambda binary (the dlq-monitor) for one or
more invocations, as tests/support/lambda_rt.rs does for the Rust tests: GET .../invocation/next
hands out the event, POST .../{id}/response or .../{id}/error takes the answer."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LambdaRuntime:
    def __init__(self, binary: str, env: dict[str, str], log_path: str):
        self.events: queue.Queue = queue.Queue()
        self.answers: dict[str, queue.Queue] = {}
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_error(404)
                    return
                req_id, event = runtime.events.get()
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", req_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60_000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                 "arn:aws:lambda:us-east-1:000000000000:function:dlq-monitor")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0") or 0)
                data = self.rfile.read(length) if length else b""
                parts = self.path.strip("/").split("/")
                # 2018-06-01/runtime/invocation/{id}/response|error, or .../init/error
                kind = parts[-1]
                req_id = parts[-2] if len(parts) >= 2 else ""
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if req_id in runtime.answers:
                    runtime.answers[req_id].put((kind, json.loads(data or b"null")))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        host, port = self.server.server_address
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [binary],
            env={**os.environ, "AWS_LAMBDA_RUNTIME_API": f"{host}:{port}", "AWS_LAMBDA_FUNCTION_NAME": "dlq-monitor",
                 "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                 "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/dlq-monitor", "AWS_LAMBDA_LOG_STREAM_NAME": "test",
                 **env},
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def invoke(self, event: dict, timeout: float = 60) -> tuple[str, object]:
        req_id = uuid.uuid4().hex
        self.answers[req_id] = queue.Queue()
        self.events.put((req_id, event))
        return self.answers[req_id].get(timeout=timeout)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.server.shutdown()
        self.log.close()


def sqs_record(m: dict, arn: str) -> dict:
    """The Lambda SQS event record of a message received with boto3 (all attributes)."""
    attrs = {}
    for name, v in m.get("MessageAttributes", {}).items():
        a = {"dataType": v["DataType"], "stringListValues": [], "binaryListValues": []}
        if "StringValue" in v:
            a["stringValue"] = v["StringValue"]
        attrs[name] = a
    return {
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": attrs, "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1",
    }
