//! The ready-made `--http` and `--exec` handlers at their edges (redirects, TLS, child
//! processes that misbehave), through the real `sqskit poll` against LocalStack.
use sqskit_test_support as support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqskit::OutgoingMessage;
use support::http::{serve_with, Reply};
use support::proc::{log_lines, spawn, sqskit, tail, temp_dir, wait_until};
use support::tls::TlsServer;
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(120);

/// `sqskit poll` on `queue` with quick retries; `handler` is e.g. `["--http", url]`.
fn poll(queue: &sqskit::Queue, handler: &[&str], extra: &[&str]) -> std::process::Command {
    let mut cmd = sqskit(None);
    cmd.args(["poll", "--queue-url", queue.url(), "--progress-interval", "0", "--wait-time", "1"]);
    cmd.args(["--backoff-base", "1", "--backoff-max", "1"]);
    cmd.args(handler);
    cmd.args(extra);
    cmd
}

fn summary(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary line: {e}: {stdout:?}"))
}

fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn http_redirect_is_a_retryable_failure_not_a_success() {
    let (url, seen) = serve_with(|req| {
        if req.method == "POST" {
            Reply { status: 302, headers: vec![("Location".into(), "/ok".into())] }
        } else {
            Reply { status: 200, headers: vec![] }
        }
    });
    let q = queue("http-redirect").await;
    q.send(OutgoingMessage::new("{\"job\":1}")).await.unwrap();
    let mut p = spawn(poll(&q, &["--http", &url], &[]));
    let count = |m: &str| seen.lock().unwrap().iter().filter(|r| r.method == m).count();
    wait_until(Duration::from_secs(60), "a second POST (retry) or a GET (redirect followed)", || {
        count("POST") >= 2 || count("GET") >= 1
    });
    p.signal("TERM");
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    let requests: Vec<String> = seen.lock().unwrap().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(count("GET"), 0, "the redirect was followed with a body-less GET: {requests:?}");
    assert!(count("POST") >= 2, "retried: {requests:?}");
    assert_eq!(summary(&p.stdout())["succeeded"], 0, "a 302 is not a success");
    let err = p.stderr();
    assert!(err.contains("302") && err.contains("/ok"), "the error names the status and Location:\n{}", tail(&err, 20));
    let (visible, in_flight, _) = depth(&q).await;
    assert_eq!(visible + in_flight, 1, "the message is still in the queue");
}

#[tokio::test]
async fn https_delivery_trusts_the_ca_given_in_ssl_cert_file() {
    let tls = TlsServer::start(200);
    let (q, dlq) = queue_with_dlq("http-tls", 1, false, 30).await;
    q.send_batch((0..3).map(|i| OutgoingMessage::new(format!("{{\"tls\":{i}}}"))))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let mut cmd = poll(&q, &["--http", &tls.url], &["--until-empty"]);
    cmd.env("SSL_CERT_FILE", &tls.ca_file);
    let mut p = spawn(cmd);
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    assert_eq!(summary(&p.stdout())["succeeded"], 3, "stderr:\n{}", tail(&p.stderr(), 20));
    let mut bodies: Vec<String> = tls
        .requests()
        .iter()
        .filter(|r| r["method"] == "POST")
        .map(|r| r["body"].as_str().unwrap().to_string())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["{\"tls\":0}", "{\"tls\":1}", "{\"tls\":2}"]);
    assert_eq!(depth(&dlq).await.0, 0);
}

#[tokio::test]
async fn exec_handler_writing_non_utf8_output_succeeds_once() {
    let (q, dlq) = queue_with_dlq("exec-bytes", 1, false, 30).await;
    let id = q.send(OutgoingMessage::new("{\"job\":\"bytes\"}")).await.unwrap().message_id;
    let dir = temp_dir("exec-bytes");
    let log = dir.join("handler.log");
    // an invalid UTF-8 line first, then far more than a pipe buffer (64 KiB) of output
    let handler = script(
        &dir,
        "handler",
        r#"#!/bin/sh
cat > /dev/null
echo "start $SQSKIT_MESSAGE_ID" >> "$HANDLER_LOG"
printf 'bad \377\376 bytes\n'
printf 'bad \377 on stderr\n' >&2
i=0
while [ $i -lt 8000 ]; do echo "line $i of some output that fills the pipe"; i=$((i+1)); done
echo "done $SQSKIT_MESSAGE_ID" >> "$HANDLER_LOG"
exit 0
"#,
    );
    let mut cmd = poll(&q, &["--exec", handler.to_str().unwrap()], &["--until-empty"]);
    cmd.env("HANDLER_LOG", &log);
    let mut p = spawn(cmd);
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    let lines = log_lines(&log);
    assert_eq!(
        lines,
        [format!("start {id}"), format!("done {id}")],
        "ran once, to the end; sqskit said:\n{}",
        tail(&p.stderr(), 5)
    );
    assert_eq!(summary(&p.stdout())["succeeded"], 1);
    assert_eq!(depth(&dlq).await.0, 0, "not dead-lettered");
}

/// The state letter of /proc/<pid>/stat (None when the process is gone).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next())
}

#[tokio::test]
async fn exec_timeout_kills_the_handlers_whole_process_group() {
    let (q, _dlq) = queue_with_dlq("exec-pgroup", 1, false, 30).await;
    q.send(OutgoingMessage::new("{\"job\":\"slow\"}")).await.unwrap();
    let dir = temp_dir("exec-pgroup");
    let pids = dir.join("pids");
    let handler = script(
        &dir,
        "handler",
        r#"#!/bin/sh
echo $$ >> "$PIDS"
sh -c 'echo $$ >> "$PIDS"; exec sleep 300' | sh -c 'echo $$ >> "$PIDS"; exec sleep 301'
"#,
    );
    let mut cmd = poll(&q, &["--exec", handler.to_str().unwrap()], &["--until-empty", "--handler-timeout", "2"]);
    cmd.env("PIDS", &pids);
    let mut p = spawn(cmd);
    let status = p.wait(EXIT_LIMIT);
    assert!(status.success(), "exit {status}; stderr:\n{}", tail(&p.stderr(), 30));
    let pids: Vec<u32> = log_lines(&pids).iter().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(pids.len(), 3, "the handler and both pipeline members started");
    let alive = || pids.iter().copied().filter(|&pid| !matches!(proc_state(pid), None | Some('Z'))).collect::<Vec<_>>();
    let outcome = std::panic::catch_unwind(|| {
        wait_until(Duration::from_secs(20), "every process of the handler's group to be gone", || alive().is_empty())
    });
    let left = alive();
    for pid in &left {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    assert!(outcome.is_ok() && left.is_empty(), "still running after the timeout: {left:?}");
    assert!(p.stderr().contains("timeout"), "the overrun is reported:\n{}", tail(&p.stderr(), 10));
}
