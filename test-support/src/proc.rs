//! Running the real `sqskit` binary as a child process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Running {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
    pub stdout: Arc<Mutex<String>>,
}

/// A `sqskit` command pointing at LocalStack (or `endpoint`).
pub fn sqskit(endpoint: Option<&str>) -> Command {
    let mut cmd = Command::new(cargo_bin("sqskit"));
    for (k, v) in super::aws_env() {
        cmd.env(k, v);
    }
    if let Some(e) = endpoint {
        cmd.env("AWS_ENDPOINT_URL", e);
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// The path of binary `name` of the workspace, as cargo builds it for the integration tests of
/// its package (`target/<profile>/<name>`, next to the test's own `deps/` directory). Tests of
/// that package only: cargo builds a package's binaries for its own integration tests, and
/// `env!("CARGO_BIN_EXE_<name>")` is the same path at compile time of the test crate itself.
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe.parent().and_then(Path::parent).expect("the test runs from target/<profile>/deps");
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} does not exist: only the tests of the package that has the `{name}` binary run it",
        bin.display()
    );
    bin
}

/// Run `sqskit ARGS` against LocalStack to its end: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = sqskit(None).args(args).stdin(Stdio::null()).output().expect("run sqskit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn spawn(mut cmd: Command) -> Running {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn sqskit");
    let stderr = Arc::new(Mutex::new(String::new()));
    let stdout = Arc::new(Mutex::new(String::new()));
    for (pipe, buf) in [
        (child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>), stderr.clone()),
        (child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>), stdout.clone()),
    ] {
        if let Some(pipe) = pipe {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut b = buf.lock().unwrap();
                    b.push_str(&line);
                    b.push('\n');
                }
            });
        }
    }
    Running { child, stderr, stdout }
}

impl Running {
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }
    /// Wait for exit up to `limit`; panics with the log tail on timeout.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(100)); // let the reader threads finish
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("sqskit did not exit within {limit:?}; stderr tail:\n{}", tail(&self.stderr(), 40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fresh temporary directory.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(super::unique(prefix));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The test handler script shipped for the demo (`scripts/demo-handler` at the workspace root).
pub fn demo_handler() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("scripts/demo-handler"))
        .find(|p| p.exists())
        .expect("scripts/demo-handler in the workspace")
}

/// Lines of a handler log (`<event> <message id> <receive count>`), empty when absent.
pub fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Wait until `cond` holds (polling), up to `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
