//! Issue 21: input is never silently dropped or reshaped, every number is range-checked, and a
//! handler that cannot start is refused before any receive — through the real `sqskit` binary
//! against LocalStack.
use sqskit_test_support as support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sqskit::payload::{Pointer, SIZE_ATTRIBUTE};
use sqskit::{AttributeValue, OutgoingMessage};
use support::proc::{spawn, sqskit, tail, temp_dir, wait_until};
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(120);

/// `sqskit ARGS` with `env`, given `limit` to exit: (exit code, stdout, stderr), the output read
/// to its end; a process still running then is killed and reported as code -1 (so a table of
/// cases reports every case).
fn run_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (i32, String, String) {
    let mut cmd = sqskit(None);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn sqskit");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.expect("wait for sqskit");
            (out.status.code().unwrap_or(-2), text(&out.stdout), text(&out.stderr))
        }
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            let out = rx.recv().expect("killed").expect("wait for sqskit");
            let err = format!("still running after {limit:?}; stderr tail:\n{}", tail(&text(&out.stderr), 5));
            (-1, text(&out.stdout), err)
        }
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    run_env(args, &[], Duration::from_secs(30))
}

fn script(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// One command line: (arguments, environment, the flag its error must name).
type Case<'a> = (Vec<String>, Vec<(&'a str, String)>, &'a str);

/// Check every case; report all that went wrong at once (how each one behaves is the point).
fn check_usage_errors(cases: &[Case]) {
    let mut wrong = Vec::new();
    for (args, env, flag) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, out, err) = run_env(&args, &env, Duration::from_secs(60));
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().to_string();
        if code != 2 || !err.contains(flag) || err.contains("panicked") {
            wrong.push(format!("{args:?} {env:?}: exit {code}, wanted 2 naming {flag}: {first} {}", out.trim()));
        }
    }
    assert!(wrong.is_empty(), "{} case(s) not refused as usage errors:\n{}", wrong.len(), wrong.join("\n"));
}

/// `sqskit poll --exec HANDLER --until-empty` on `q`, run to its (successful) end.
fn poll_until_empty(q: &sqskit::Queue, handler: &Path) -> support::proc::Running {
    let mut p = spawn({
        let mut c = sqskit(None);
        c.args(["poll", "--queue-url", q.url(), "--progress-interval", "0", "--wait-time", "1", "--until-empty"]);
        c.args(["--exec", handler.to_str().unwrap()]);
        c
    });
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    p
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn numbers_out_of_range_are_usage_errors_naming_the_flag() {
    let q = queue("in-numbers").await;
    let url = q.url().to_string();
    let max = u64::MAX.to_string();
    let poll = |extra: &[&str]| {
        let mut a = strings(&["poll", "--queue-url", &url, "--exec", "true", "--progress-interval", "0"]);
        a.extend(strings(extra));
        a
    };
    let send = |extra: &[&str]| {
        let mut a = strings(&["send", "--queue-url", &url, "--body", "x"]);
        a.extend(strings(extra));
        a
    };
    let two_years = time::OffsetDateTime::now_utc() + time::Duration::days(730);
    let two_years = two_years.format(&time::format_description::well_known::Rfc3339).unwrap();
    // a name that is never created: the flag is refused before any call
    let never = unique("in-never-created");
    let none = Vec::new;
    let cases: Vec<Case> = vec![
        (send(&["--delay", "18446744073709551615s"]), none(), "--delay"),
        (send(&["--delay", "30000000000y"]), none(), "--delay"),
        (send(&["--delay", "400d"]), none(), "--delay"),
        (send(&["--deliver-at", &two_years]), none(), "--deliver-at"),
        (send(&["--deliver-at", "2026-12-24T18:00:00"]), none(), "--deliver-at"),
        (poll(&["--rate", "1e-20"]), none(), "--rate"),
        (poll(&["--rate", "NaN"]), none(), "--rate"),
        (poll(&["--rate-per-queue", "1e-20"]), none(), "--rate-per-queue"),
        (poll(&["--prefetch", &max]), none(), "--prefetch"),
        (poll(&[]), vec![("SQSKIT_PREFETCH", max.clone())], "--prefetch"),
        (poll(&["--liveness-margin", &max, "--metrics-addr", "127.0.0.1:0"]), none(), "--liveness-margin"),
        (poll(&["--idempotency-ttl", &max]), none(), "--idempotency-ttl"),
        (poll(&["--idempotency-key", "/a~2b"]), none(), "--idempotency-key"),
        (poll(&["--concurrency", "0"]), none(), "--concurrency"),
        (poll(&["--concurrency", "automatic"]), none(), "--concurrency"),
        (
            poll(&["--concurrency", "auto", "--min-concurrency", "8", "--max-concurrency", "4"]),
            none(),
            "--min-concurrency",
        ),
        (poll(&["--min-concurrency", "0"]), none(), "--min-concurrency"),
        (poll(&["--max-concurrency", &max]), none(), "--max-concurrency"),
        (poll(&["--breaker", "maybe"]), none(), "--breaker"),
        (poll(&[]), vec![("SQSKIT_BREAKER", "maybe".to_string())], "--breaker"),
        (poll(&["--breaker-window", "1"]), none(), "--breaker-window"),
        (poll(&[]), vec![("SQSKIT_BREAKER_WINDOW", "twenty".to_string())], "--breaker-window"),
        (poll(&["--breaker-failure-rate", "101"]), none(), "--breaker-failure-rate"),
        (poll(&["--breaker-failure-rate", "0"]), none(), "--breaker-failure-rate"),
        (poll(&["--breaker-probe-interval", "0"]), none(), "--breaker-probe-interval"),
        (poll(&["--breaker-probe-interval", "10", "--breaker-probe-max", "5"]), none(), "--breaker-probe-max"),
        (poll(&["--breaker-close-after", "0"]), none(), "--breaker-close-after"),
        (poll(&["--breaker-max-outage", "0"]), none(), "--breaker-max-outage"),
        (poll(&["--breaker-max-outage", &max]), none(), "--breaker-max-outage"),
        (poll(&["--probe-url", "http://127.0.0.1:9/health"]), none(), "--probe-url"),
        (poll(&["--pause-check", &max]), none(), "--pause-check"),
        (poll(&["--concurrency", &max]), none(), "--concurrency"),
        (poll(&["--visibility-timeout", "43201"]), none(), "--visibility-timeout"),
        (poll(&["--max-visibility-extension", &max]), none(), "--max-visibility-extension"),
        (poll(&["--shutdown-timeout", &max]), none(), "--shutdown-timeout"),
        (poll(&["--handler-timeout", &max]), none(), "--handler-timeout"),
        (poll(&["--handler-timeout", "0"]), none(), "--handler-timeout"),
        (poll(&["--wait-time", "21"]), none(), "--wait-time"),
        (poll(&["--backoff-base", &max]), none(), "--backoff-base"),
        (poll(&["--backoff-max", &max]), none(), "--backoff-max"),
        (poll(&["--progress-interval", &max]), none(), "--progress-interval"),
        (poll(&["--tenant-metrics", &max, "--metrics-addr", "127.0.0.1:0"]), none(), "--tenant-metrics"),
        (
            strings(&["poll", "--queue-url", &url, "--http", "http://127.0.0.1:9/", "--http-timeout", &max]),
            none(),
            "--http-timeout",
        ),
        (strings(&["health", "--addr", "127.0.0.1:9", "--timeout", &max]), none(), "--timeout"),
        (strings(&["stats", "--queue-url", &url, "--watch", "0"]), none(), "--watch"),
        (strings(&["stats", "--queue-url", &url, "--poller", "localhost"]), none(), "--poller"),
        (strings(&["pause", "--queue-url", &url, "--reason", "deploy #42"]), none(), "--reason"),
        (strings(&["pause", "--queue-url", &url, "--reason", &"x".repeat(257)]), none(), "--reason"),
        (strings(&["peek", "--queue-url", &url, "-n", "0"]), none(), "--count"),
        (strings(&["redrive", "--dlq-url", &url, "--rate", "1e-20"]), none(), "--rate"),
        (strings(&["create-queue", &never, "--max-receive-count", "0"]), none(), "--max-receive-count"),
        (strings(&["create-queue", &never, "--visibility-timeout", "43201"]), none(), "--visibility-timeout"),
    ];
    check_usage_errors(&cases);
    assert_eq!(depth(&q).await, (0, 0, 0), "nothing was sent, nothing received");
}

#[tokio::test]
async fn deliver_at_takes_any_rfc3339_offset_and_refuses_a_time_without_one() {
    let q = queue("in-deliver-at").await;
    // an hour from now, written in +05:00: the due time is that instant, whatever the zone
    let due = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::hours(1);
    let local = due.to_offset(time::macros::offset!(+5));
    let text = local.format(&time::format_description::well_known::Rfc3339).unwrap();
    assert!(text.ends_with("+05:00"), "{text}");
    let (code, _, err) =
        run(&["send", "--queue-url", q.url(), "--body", "later", "--deliver-at", &text, "--delay-hop", "1"]);
    assert_eq!(code, 0, "an RFC 3339 time with an offset is accepted: {err}");
    let got = peek_all(&q, Duration::from_secs(5), Duration::from_secs(60)).await;
    assert_eq!(got.len(), 1, "the first hop arrived");
    let want = (due.unix_timestamp() * 1000).to_string();
    assert_eq!(got[0].attribute_str(sqskit::delay::DELIVER_AT), Some(want.as_str()), "due at the instant given");

    let (code, _, err) = run(&["send", "--queue-url", q.url(), "--body", "x", "--deliver-at", "2026-12-24T18:00:00"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--deliver-at") && err.contains("Z") && err.contains("offset"), "says what to add: {err}");
}

#[tokio::test]
async fn fifo_delays_are_refused_with_the_reason() {
    let q = fifo_queue("in-fifo-delay").await;
    for delay in ["2h", "5m"] {
        let (code, _, err) = run(&["send", "--queue-url", q.url(), "--body", "x", "--group-id", "g", "--delay", delay]);
        assert_eq!(code, 2, "--delay {delay}: {err}");
        assert!(err.contains("--delay") && err.contains("FIFO"), "--delay {delay}: {err}");
        assert!(!err.contains("invalid deliver_at"), "--delay {delay}: {err}");
    }
    let (_, _, err) = run(&["send", "--queue-url", q.url(), "--body", "x", "--group-id", "g", "--delay", "2h"]);
    assert!(err.contains("delay hops"), "says why a long delay cannot be had: {err}");
    assert_eq!(depth(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn send_jsonl_refuses_unknown_envelope_keys_and_names_the_real_line() {
    let q = queue("in-jsonl").await;
    let dir = temp_dir("in-jsonl");
    let file = dir.join("in.jsonl");
    let mut lines = vec![
        r#"{"to":"a@example.com","subject":"Hello","body":"Hi there"}"#.to_string(),
        r#"{"body":"misspelt","atributes":{"k":"v"}}"#.to_string(),
        String::new(),
        r#"{"body":"misspelt too","groupid":"g"}"#.to_string(),
        r#"{"body":"ok","attributes":{"k":"v"}}"#.to_string(),
    ];
    lines.extend((6..=15).map(|i| format!("plain {i}")));
    lines.push(r#"{"body":""}"#.to_string()); // line 16: empty body
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (code, out, err) =
        run(&["send", "--queue-url", q.url(), "--jsonl", file.to_str().unwrap(), "--output", "json"]);
    assert_eq!(code, 1, "{err}");
    let summary: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let failed: Vec<(u64, String)> = summary["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["line"].as_u64().unwrap(), f["reason"].as_str().unwrap().to_string()))
        .collect();
    let lines_failed: Vec<u64> = failed.iter().map(|f| f.0).collect();
    assert_eq!(lines_failed, [1, 2, 4, 16], "{failed:?}");
    assert!(failed[0].1.contains("\"to\"") && failed[0].1.contains("--raw-lines"), "{failed:?}");
    assert!(failed[1].1.contains("\"atributes\""), "{failed:?}");
    assert!(failed[2].1.contains("\"groupid\""), "{failed:?}");
    assert!(failed[3].1.contains("empty") && !failed[3].1.contains("message 15"), "{failed:?}");
    assert_eq!(summary["sent"], 11);
    let got = drain(&q, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 11);
    let ok = got.iter().find(|m| m.body == "ok").expect("the envelope line");
    assert_eq!(ok.attribute_str("k"), Some("v"));

    // --raw-lines: every line is a body, byte for byte
    let raw = dir.join("raw.jsonl");
    std::fs::write(&raw, format!("{}\n", lines[0])).unwrap();
    let (code, _, err) = run(&["send", "--queue-url", q.url(), "--jsonl", raw.to_str().unwrap(), "--raw-lines"]);
    assert_eq!(code, 0, "{err}");
    let got = drain(&q, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, lines[0], "nothing lost: to, subject and body");
}

#[tokio::test]
async fn send_jsonl_upload_failure_mid_file_reports_the_line_and_resumes_from_it() {
    let q = queue("in-jsonl-s3").await;
    let dir = temp_dir("in-jsonl-s3");
    let file = dir.join("in.jsonl");
    let big = "x".repeat(1_100_000); // over 1 MiB: goes through the bucket
    let mut text = String::new();
    for line in 1..=3100 {
        match line {
            10 => text.push('\n'), // a blank line still counts
            3001 => {
                text.push_str(&big);
                text.push('\n');
            }
            n => text.push_str(&format!("line {n}\n")),
        }
    }
    std::fs::write(&file, text).unwrap();
    let bucket = unique("in-missing").to_lowercase();
    let path = file.to_str().unwrap();
    let (code, out, err) =
        run(&["send", "--queue-url", q.url(), "--jsonl", path, "--payload-bucket", &bucket, "--output", "json"]);
    assert_eq!(code, 1, "{out}{err}");
    let summary: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(summary["sent"], 2999, "lines 1-3000 but the blank one: {summary}");
    assert_eq!(summary["stopped_at_line"], 3001, "{summary}");
    assert_eq!(summary["resume_from_line"], 3001, "{summary}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("line 3001") && last.contains("--from-line 3001") && last.contains("2999"),
        "one line with the line, the count and how to resume: {err}"
    );
    assert_eq!(depth(&q).await.0, 2999);

    let s3 = sqskit::payload::s3_client(&sdk_config().await);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let (code, out, err) =
        run(&["send", "--queue-url", q.url(), "--jsonl", path, "--payload-bucket", &bucket, "--from-line", "3001"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sent 100 message(s)"), "{out}");
    let got = drain(&q, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 3099);
    let mut bodies: Vec<&str> =
        got.iter().filter(|m| !m.attributes.contains_key(SIZE_ATTRIBUTE)).map(|m| m.body.as_str()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 3098, "every small line once");
    assert_eq!(got.iter().filter(|m| m.attributes.contains_key(SIZE_ATTRIBUTE)).count(), 1, "the big one as a pointer");
}

#[tokio::test]
async fn send_refuses_a_repeated_attribute_and_applies_attributes_to_jsonl_lines() {
    let q = queue("in-attrs").await;
    let (code, _, err) =
        run(&["send", "--queue-url", q.url(), "--body", "x", "--attribute", "k=1", "--attribute", "k=2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--attribute") && err.contains("\"k\""), "{err}");
    let dir = temp_dir("in-attrs");
    let file = dir.join("in.jsonl");
    std::fs::write(&file, "plain\n{\"body\":\"own\",\"attributes\":{\"k\":\"mine\"}}\n").unwrap();
    let (code, _, err) =
        run(&["send", "--queue-url", q.url(), "--jsonl", file.to_str().unwrap(), "--attribute", "k=default"]);
    assert_eq!(code, 0, "{err}");
    let got = drain(&q, Duration::from_secs(1)).await;
    let attr = |body: &str| got.iter().find(|m| m.body == body).and_then(|m| m.attribute_str("k")).map(str::to_string);
    assert_eq!(attr("plain").as_deref(), Some("default"), "--attribute applies to lines");
    assert_eq!(attr("own").as_deref(), Some("mine"), "a line's own attribute wins");
}

#[tokio::test]
async fn a_handler_that_cannot_start_is_refused_before_any_receive() {
    let (q, dlq) = queue_with_dlq("in-exec", 1, false, 30).await;
    q.send(OutgoingMessage::new("{\"job\":1}")).await.unwrap();
    let dir = temp_dir("in-exec");
    let not_exec = script(&dir, "not-executable", "#!/bin/sh\nexit 0\n", 0o644);
    let bad_interp = script(&dir, "bad-interpreter", "#!/nonexistent/python3\nprint(1)\n", 0o755);
    let url = q.url().to_string();
    let poll = |handler: &[&str]| {
        let mut a = strings(&["poll", "--queue-url", &url, "--progress-interval", "0", "--wait-time", "1"]);
        a.extend(strings(&["--until-empty"]));
        a.extend(strings(handler));
        a
    };
    let none = Vec::new;
    let cases: Vec<Case> = vec![
        (poll(&["--exec", "/nonexistent/cmd"]), none(), "--exec"),
        (poll(&["--exec", "no-such-program-sqskit-test --flag"]), none(), "--exec"),
        (poll(&[]), vec![("SQSKIT_EXEC", "/nonexistent/cmd".into())], "--exec"),
        (poll(&["--exec", not_exec.to_str().unwrap()]), none(), "--exec"),
        (poll(&["--exec", bad_interp.to_str().unwrap()]), none(), "--exec"),
        (poll(&["--exec", "sh -c '/nonexistent/cmd --flag | tee x'"]), none(), "--exec"),
        (poll(&["--exec", "'unterminated"]), none(), "--exec"),
        (poll(&["--http", "not a url"]), none(), "--http"),
        (poll(&["--http", "http://"]), none(), "--http"),
        (poll(&["--http", "ftp://127.0.0.1/x"]), none(), "--http"),
    ];
    check_usage_errors(&cases);
    assert_eq!(depth(&q).await, (1, 0, 0), "never received");
    assert_eq!(depth(&dlq).await, (0, 0, 0), "nothing dead-lettered that never ran");

    // a shell script whose first command is a builtin starts: the rest is the shell's business
    let out = dir.join("out");
    let handler = format!("sh -c 'cd / && cat > {}'", out.display());
    let args = poll(&["--exec", &handler]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, err) = run_env(&args, &[], EXIT_LIMIT);
    assert_eq!(code, 0, "{stdout}{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"job\":1}");
}

#[tokio::test]
async fn a_pointer_is_resolved_without_a_payload_bucket() {
    let s3 = sqskit::payload::s3_client(&sdk_config().await);
    let bucket = unique("in-pointer").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let payload = "the real payload ✓".repeat(1000);
    s3.put_object().bucket(&bucket).key("k1").body(payload.clone().into_bytes().into()).send().await.unwrap();
    let (q, dlq) = queue_with_dlq("in-pointer", 3, false, 30).await;
    let pointer = Pointer { bucket: bucket.clone(), key: "k1".into() };
    q.send(OutgoingMessage::new(pointer.body()).attribute(SIZE_ATTRIBUTE, AttributeValue::number(payload.len())))
        .await
        .unwrap();
    let dir = temp_dir("in-pointer");
    let out = dir.join("stdin");
    let handler = script(&dir, "handler", &format!("#!/bin/sh\ncat > '{}'\n", out.display()), 0o755);
    poll_until_empty(&q, &handler);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), payload, "the handler got the payload, not the pointer");
    assert_eq!(depth(&dlq).await.0, 0);
}

#[tokio::test]
async fn exec_attributes_whose_env_names_collide_are_all_passed() {
    let q = queue("in-env").await;
    q.send(
        OutgoingMessage::new("x")
            .attribute("weird.name-x_y", AttributeValue::string("dotted"))
            .attribute("WEIRD_NAME_X_Y", AttributeValue::string("upper"))
            .attribute("tenant-id", AttributeValue::string("acme"))
            .attribute("n", AttributeValue::number(42)),
    )
    .await
    .unwrap();
    let dir = temp_dir("in-env");
    let env_file = dir.join("env");
    let handler = script(&dir, "handler", &format!("#!/bin/sh\nenv > '{}'\n", env_file.display()), 0o755);
    let p = poll_until_empty(&q, &handler);
    let env = std::fs::read_to_string(&env_file).unwrap();
    let var = |name: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).map(str::to_string);
    let all: Value = serde_json::from_str(&var("SQSKIT_ATTRIBUTES").expect("SQSKIT_ATTRIBUTES")).unwrap();
    assert_eq!(
        all,
        serde_json::json!({"weird.name-x_y": "dotted", "WEIRD_NAME_X_Y": "upper", "tenant-id": "acme", "n": "42"}),
        "every attribute under its exact name"
    );
    assert_eq!(var("SQSKIT_ATTR_TENANT_ID").as_deref(), Some("acme"));
    assert_eq!(var("SQSKIT_ATTR_N").as_deref(), Some("42"));
    assert_eq!(var("SQSKIT_ATTR_WEIRD_NAME_X_Y"), None, "an ambiguous name is not given one value of two");
    let err = p.stderr();
    assert!(err.contains("weird.name-x_y") && err.contains("WEIRD_NAME_X_Y"), "the collision is logged:\n{err}");
}

#[tokio::test]
async fn health_accepts_an_http_url_and_refuses_what_it_cannot_check() {
    let q = queue("in-health").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut p = spawn({
        let mut c = sqskit(None);
        c.args(["poll", "--queue-url", q.url(), "--progress-interval", "0", "--wait-time", "1"]);
        c.args(["--exec", "true", "--metrics-addr", &addr]);
        c
    });
    // ready: the queues are resolved and a receive answered (the signal handler is in place)
    wait_until(Duration::from_secs(60), "ready", || {
        run(&["health", "--addr", &addr, "--ready", "--timeout", "3"]).0 == 0
    });
    for form in [format!("http://{addr}"), format!("http://{addr}/"), format!("http://localhost:{port}")] {
        let (code, out, err) = run(&["health", "--addr", &form, "--timeout", "3"]);
        assert_eq!(code, 0, "{form}: {out}{err}");
        assert!(out.contains("\"live\":true"), "{form}: {out}");
    }
    for bad in [format!("https://{addr}"), format!("http://{addr}/metrics"), "localhost".to_string()] {
        let (code, _, err) = run(&["health", "--addr", &bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--addr"), "{bad}: {err}");
    }
    p.signal("TERM");
    assert!(p.wait(EXIT_LIMIT).success(), "stderr:\n{}", tail(&p.stderr(), 30));
}
