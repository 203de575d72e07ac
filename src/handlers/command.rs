//! Whether a command line for [`ExecHandler`](super::ExecHandler) can start at all, checked once
//! before any message is received: a program that cannot start would otherwise fail every
//! message (each retried until the DLQ takes it, nothing having run).
//!
//! It resolves the program as a shell does (a name with a `/` is a path, else each `PATH` entry
//! in turn), requires an executable regular file, and follows a `#!` line to its interpreter
//! (and `#!/usr/bin/env NAME` to NAME). For a shell given a script (`sh -c SCRIPT`, also bash,
//! dash, zsh, ksh, ash, mksh) it checks the shell and the script's first command when that is a
//! plain program name or path (after an `exec`), not a builtin, keyword, assignment or
//! expansion; what the rest of a script runs is the shell's business: a command it cannot find
//! makes it exit 127, a retryable failure whose error says so.

use std::path::{Path, PathBuf};

/// Shells whose `-c SCRIPT` is looked into.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"];

/// Words a shell runs itself: never looked up on `PATH`.
const BUILTINS: &[&str] = &[
    "!", "{", "}", "[[", "]]", "case", "do", "done", "elif", "else", "esac", "fi", "for", "function", "if", "in",
    "select", "then", "time", "until", "while", ".", ":", "[", "alias", "bg", "break", "builtin", "cd", "command",
    "continue", "declare", "echo", "eval", "exit", "export", "false", "fc", "fg", "getopts", "hash", "jobs", "kill",
    "let", "local", "printf", "pwd", "read", "readonly", "return", "set", "shift", "source", "test", "times", "trap",
    "true", "type", "typeset", "ulimit", "umask", "unalias", "unset", "wait",
];

/// Check that `command` (program and arguments, already split) can start.
///
/// # Errors
/// A text naming the program and what is wrong (not found on `PATH`, not executable, a
/// missing interpreter), for the caller to name its flag or field.
///
/// # Example
/// ```
/// use sqskit::handlers::check_command;
/// assert!(check_command(&["sh".into(), "-c".into(), "cat > /dev/null".into()]).is_ok());
/// assert!(check_command(&["/nonexistent/cmd".into()]).unwrap_err().contains("/nonexistent/cmd"));
/// assert!(check_command(&["sh".into(), "-c".into(), "/nonexistent/cmd | tee x".into()]).is_err());
/// ```
pub fn check_command(command: &[String]) -> Result<(), String> {
    let Some(program) = command.first().filter(|p| !p.is_empty()) else {
        return Err("the command is empty".into());
    };
    let path = resolve(program)?;
    check_interpreter(&path)?;
    let name = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if SHELLS.contains(&name) {
        // the script is the operand after the first option that holds `c` (`-c`, `-ec`, `-lc`)
        let script = command
            .iter()
            .skip(1)
            .position(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('c'))
            .and_then(|i| command.get(i + 2));
        if let Some(first) = script.and_then(|s| first_program(s)) {
            let found = resolve(&first).map_err(|e| format!("{e} (the first command of the {name} -c script)"))?;
            check_interpreter(&found)?;
        }
    }
    Ok(())
}

/// The script's first command when it is a plain program name or path (else `None`).
fn first_program(script: &str) -> Option<String> {
    let words = shlex::split(script)?;
    let mut words = words.into_iter();
    let mut first = words.next()?;
    if first == "exec" {
        first = words.next()?;
    }
    let plain = !first.is_empty()
        && !first.starts_with('-')
        && !first.contains(['=', '$', '`', '(', ')', '{', '}', ';', '|', '&', '<', '>', '*', '?', '[', '~', '\\'])
        && !BUILTINS.contains(&first.as_str());
    plain.then_some(first)
}

/// `program` resolved like a shell: a name with a `/` as a path, else through `PATH` (unset:
/// `/bin:/usr/bin`, an empty entry meaning the current directory).
fn resolve(program: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).map(|()| path).map_err(|why| format!("{program}: {why}"));
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    let mut found_but = None;
    for dir in std::env::split_paths(&search) {
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let candidate = dir.join(program);
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(why) if candidate.exists() => found_but = found_but.or(Some(format!("{}: {why}", candidate.display()))),
            Err(_) => {}
        }
    }
    Err(found_but.unwrap_or_else(|| format!("{program}: not found on PATH")))
}

/// Whether `path` is a regular file this process may execute.
fn executable(path: &Path) -> Result<(), &'static str> {
    use std::os::unix::ffi::OsStrExt;
    let meta = std::fs::metadata(path).map_err(|_| "no such file")?;
    if !meta.is_file() {
        return Err("not a regular file");
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| "a path with a NUL byte")?;
    // SAFETY: access(2) reads the NUL-terminated path it is given and nothing else.
    let ok = unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } == 0;
    if ok {
        Ok(())
    } else {
        Err("not executable (chmod +x?)")
    }
}

/// A `#!` line's interpreter must exist too (and `#!/usr/bin/env NAME`'s NAME on `PATH`).
fn check_interpreter(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
    let Some(line) = head[..n].strip_prefix(b"#!") else { return Ok(()) };
    let line = String::from_utf8_lossy(line.split(|b| *b == b'\n').next().unwrap_or_default()).to_string();
    let mut words = line.split_whitespace();
    let Some(interpreter) = words.next() else { return Ok(()) };
    let why = |e: String| format!("{}: its interpreter {e}", path.display());
    executable(Path::new(interpreter)).map_err(|e| why(format!("{interpreter}: {e}")))?;
    if Path::new(interpreter).file_name().is_some_and(|n| n == "env") {
        if let Some(name) = words.next().filter(|w| !w.starts_with('-')) {
            resolve(name).map_err(why)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn words(s: &str) -> Vec<String> {
        shlex::split(s).unwrap()
    }

    #[test]
    fn programs_resolve_like_a_shell() {
        assert!(check_command(&words("true")).is_ok());
        assert!(check_command(&words("/bin/sh -c 'exit 0'")).is_ok());
        assert!(check_command(&[]).is_err());
        let e = check_command(&words("no-such-program-sqskit --x")).unwrap_err();
        assert!(e.contains("no-such-program-sqskit") && e.contains("PATH"), "{e}");
        assert!(check_command(&words("/")).unwrap_err().contains("regular file"));
        for script in ["cd / && cat", "exec cat", "FOO=1 prog", "$CMD", "echo hi | nope", "if true; then x; fi"] {
            assert!(check_command(&["sh".into(), "-c".into(), script.into()]).is_ok(), "{script}");
        }
        for script in ["/nonexistent/cmd", "exec /nonexistent/cmd", "no-such-program-sqskit arg | tee x"] {
            let e = check_command(&["bash".into(), "-ec".into(), script.into()]).unwrap_err();
            assert!(e.contains("-c script"), "{script}: {e}");
        }
    }

    #[test]
    fn files_need_the_execute_bit_and_their_interpreter() {
        let dir = std::env::temp_dir().join(format!("sqskit-command-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.to_str().unwrap().to_string()
        };
        let plain = write("plain", "#!/bin/sh\nexit 0\n", 0o644);
        assert!(check_command(&[plain]).unwrap_err().contains("not executable"));
        let ok = write("ok", "#!/bin/sh\nexit 0\n", 0o755);
        assert!(check_command(&[ok]).is_ok());
        let missing = write("missing", "#!/nonexistent/python3 -u\n", 0o755);
        assert!(check_command(&[missing]).unwrap_err().contains("/nonexistent/python3"));
        let env = write("env", "#!/usr/bin/env no-such-interpreter-sqskit\n", 0o755);
        assert!(check_command(&[env]).unwrap_err().contains("no-such-interpreter-sqskit"));
        let env_ok = write("env-ok", "#!/usr/bin/env sh\nexit 0\n", 0o755);
        assert!(check_command(&[env_ok]).is_ok());
        let binary = write("binary", "\x7fELF", 0o755);
        assert!(check_command(&[binary]).is_ok(), "no #! line: the kernel's business");
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest::proptest! {
        #[test]
        fn any_command_line_is_checked_without_panicking(line in "\\PC{0,40}") {
            if let Some(w) = shlex::split(&line) {
                let _ = check_command(&w);
            }
            let _ = first_program(&line);
        }
    }
}
