"""Peer for scripts/bench: a boto3 sequential loop (receive 10 with long polling, handle one by
one, delete_message_batch) draining a pre-filled LocalStack queue. Prints one JSON line shaped
like sqskit-bench's `Measured`: processed, secs, cpu_secs (this process's user+system time),
peak_rss_mb, p50_ms / p99_ms (SentTimestamp -> handler start).

    python boto3_loop.py --queue-url URL --messages N [--delay-ms 0] [--max-secs 60]

Endpoint, region and credentials come from the environment (AWS_ENDPOINT_URL, ...); run with the
project's .venv-moto (boto3 pinned by scripts/constraints/moto.txt).
"""

import argparse
import json
import os
import resource
import time

import boto3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--queue-url", required=True)
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--max-secs", type=float, default=60)
    a = p.parse_args()
    sqs = boto3.client("sqs", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    delay = a.delay_ms / 1000
    latencies = []
    done = 0
    started = time.monotonic()
    deadline = started + a.max_secs
    while done < a.messages and time.monotonic() < deadline:
        wait = max(0, min(20, int(deadline - time.monotonic())))
        r = sqs.receive_message(
            QueueUrl=a.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["SentTimestamp"],
        )
        batch = r.get("Messages", [])
        if not batch:
            continue
        for m in batch:  # handle one by one
            latencies.append(max(0, int(time.time() * 1000) - int(m.get("Attributes", {}).get("SentTimestamp", 0))))
            if delay:
                time.sleep(delay)
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        d = sqs.delete_message_batch(QueueUrl=a.queue_url, Entries=entries)
        done += len(d.get("Successful", []))
    secs = time.monotonic() - started
    ru = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()

    def pct(q: float) -> float:
        return float(latencies[round((len(latencies) - 1) * q)]) if latencies else 0.0

    print(
        json.dumps(
            {
                "processed": done,
                "secs": secs,
                "cpu_secs": ru.ru_utime + ru.ru_stime,
                "peak_rss_mb": ru.ru_maxrss / 1024,
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
