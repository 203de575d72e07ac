// Peer for scripts/bench: Node's sqs-consumer (pinned in package.json) draining a pre-filled
// LocalStack queue with batchSize 10 and a no-op or N ms handler (handleMessage: the messages of a
// receive run concurrently, each deleted when its handler returns it). Prints one JSON line shaped
// like sqskit-bench's `Measured`: processed, secs, cpu_secs (this process's user+system time),
// peak_rss_mb, p50_ms / p99_ms (SentTimestamp -> handler start).
//
//   node consumer.js --queue-url URL --messages N [--delay-ms 0] [--max-secs 60]
// Endpoint, region and credentials come from the environment (AWS_ENDPOINT_URL, ...).
"use strict";
const { Consumer } = require("sqs-consumer");
const { SQSClient } = require("@aws-sdk/client-sqs");

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const target = Number(args.messages);
const delayMs = Number(args["delay-ms"] || 0);
const maxSecs = Number(args["max-secs"] || 60);

const sqs = new SQSClient({
  region: process.env.AWS_REGION || "us-east-1",
  ...(process.env.AWS_ENDPOINT_URL ? { endpoint: process.env.AWS_ENDPOINT_URL } : {}),
});
const latencies = [];
let processed = 0;
let finished = false;
const started = process.hrtime.bigint();

function finish() {
  if (finished) return;
  finished = true;
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(); // microseconds, whole process
  const ru = process.resourceUsage(); // maxRSS in KiB
  latencies.sort((a, b) => a - b);
  const pct = (p) => (latencies.length ? latencies[Math.round((latencies.length - 1) * p)] : 0);
  const out = {
    processed,
    secs,
    cpu_secs: (cpu.user + cpu.system) / 1e6,
    peak_rss_mb: ru.maxRSS / 1024,
    p50_ms: pct(0.5),
    p99_ms: pct(0.99),
  };
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
}

const consumer = Consumer.create({
  queueUrl: args["queue-url"],
  sqs,
  batchSize: 10,
  waitTimeSeconds: 20,
  messageSystemAttributeNames: ["SentTimestamp"],
  handleMessage: async (message) => {
    const sent = Number((message.Attributes || {}).SentTimestamp || 0);
    latencies.push(Math.max(0, Date.now() - sent));
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    return message; // acknowledge: sqs-consumer deletes it
  },
});
consumer.on("message_processed", () => {
  processed += 1;
  if (processed >= target) finish();
});
consumer.on("error", (err) => process.stderr.write(`sqs-consumer error: ${err.message}\n`));
consumer.on("processing_error", (err) => process.stderr.write(`sqs-consumer processing_error: ${err.message}\n`));
setTimeout(finish, maxSecs * 1000);
consumer.start();
