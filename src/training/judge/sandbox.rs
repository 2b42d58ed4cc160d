//! Running Python that a score depends on, in a bubblewrap sandbox: new user, PID, network, IPC
//! and UTS namespaces (no network at all), `/usr` read-only and nothing else of the host's files
//! (no home, no `/etc`, no `/tmp`), a private size-limited `/tmp`, an empty environment, no
//! capabilities, no further user namespaces, a process-count, memory, CPU and file-size limit,
//! and the whole process tree killed at the deadline (the sandbox's PID namespace dies with it).
//!
//! Run as root, the sandbox first drops to `nobody` (`setpriv`): the kernel does not apply a
//! process-count limit to root, and root could raise its own limits.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What one sandboxed program may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall clock; the whole process tree is killed after it.
    pub timeout: Duration,
    /// Address space per process.
    pub memory_bytes: u64,
    /// Processes (and threads) inside the sandbox.
    pub processes: u64,
    /// The private `/tmp`, and any one file written there.
    pub tmp_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(5), memory_bytes: 1 << 30, processes: 32, tmp_bytes: 16 << 20 }
    }
}

/// How a sandboxed program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Passed,
    /// Any other exit status or a signal.
    Failed,
    /// Killed at the deadline.
    TimedOut,
}

/// The host's bubblewrap and Python, checked to start once per process.
#[derive(Debug)]
pub struct Sandbox {
    bwrap: PathBuf,
    python: PathBuf,
    /// `setpriv`, when running as root.
    drop_root: Option<PathBuf>,
}

/// The user a sandbox runs as when started by root.
const NOBODY: u32 = 65534;

impl Sandbox {
    /// The shared sandbox, or why there is none (bubblewrap missing, user namespaces refused).
    pub fn get() -> Result<&'static Sandbox> {
        static SANDBOX: OnceLock<std::result::Result<Sandbox, String>> = OnceLock::new();
        SANDBOX.get_or_init(|| Sandbox::find().map_err(|e| e.to_string())).as_ref().map_err(|e| Error::Config(e.clone()))
    }

    fn find() -> Result<Sandbox> {
        let unavailable = |what: &str| Error::Config(format!("the Python sandbox needs {what}"));
        if !cfg!(target_os = "linux") {
            return Err(unavailable("Linux (bubblewrap)"));
        }
        let bwrap = which("bwrap").ok_or_else(|| unavailable("bubblewrap (`bwrap`; Debian: apt-get install bubblewrap)"))?;
        // Only /usr is visible inside, so the system's interpreter (not a venv's or pyenv's shim).
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"].iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| unavailable("/usr/bin/python3"))?;
        let drop_root = if running_as_root() { Some(which("setpriv").ok_or_else(|| unavailable("setpriv (util-linux) to leave root"))?) } else { None };
        let sandbox = Sandbox { bwrap, python, drop_root };
        let probe = sandbox.command(&Limits::default()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output().map_err(|e| unavailable(&format!("bubblewrap to start: {e}")))?;
        if !probe.status.success() {
            return Err(unavailable(&format!("bubblewrap to start ({}); user namespaces may be disabled", String::from_utf8_lossy(&probe.stderr).trim())));
        }
        Ok(sandbox)
    }

    /// Run `program` (Python source, read from stdin by the sandboxed interpreter).
    pub fn run_python(&self, program: &str, limits: &Limits) -> Result<Outcome> {
        let mut child = self.command(limits).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| Error::Config(format!("sandbox: {e}")))?;
        // A writer thread: a program that never reads its stdin must not block the deadline.
        let mut stdin = child.stdin.take().expect("piped");
        let source = program.as_bytes().to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&source);
        });
        let deadline = Instant::now() + limits.timeout;
        let outcome = loop {
            match child.try_wait() {
                Ok(Some(status)) => break if status.success() { Outcome::Passed } else { Outcome::Failed },
                Ok(None) if Instant::now() >= deadline => {
                    // bwrap's own child holds PDEATHSIG and is the sandbox's PID 1: when it dies
                    // the kernel kills every process left in the namespace.
                    let _ = child.kill();
                    let _ = child.wait();
                    break Outcome::TimedOut;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(Error::Config(format!("sandbox: {e}"))),
            }
        };
        let _ = writer.join();
        Ok(outcome)
    }

    fn command(&self, limits: &Limits) -> Command {
        let mut cmd = match &self.drop_root {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args([format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into(), "--".into()]).arg(&self.bwrap);
                c
            }
            None => Command::new(&self.bwrap),
        };
        cmd.env_clear();
        cmd.args(["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL"]);
        cmd.args(["--uid", &NOBODY.to_string(), "--gid", &NOBODY.to_string(), "--hostname", "sandbox", "--setenv", "PATH", "/usr/bin"]);
        cmd.args(["--ro-bind", "/usr", "/usr"]);
        // Merged-/usr systems link /bin, /lib… into /usr; older ones have real directories.
        for top in ["bin", "sbin", "lib", "lib32", "lib64"] {
            let host = Path::new("/").join(top);
            match std::fs::read_link(&host) {
                Ok(target) => cmd.arg("--symlink").arg(target).arg(&host),
                Err(_) if host.is_dir() => cmd.arg("--ro-bind").arg(&host).arg(&host),
                Err(_) => &mut cmd,
            };
        }
        cmd.args(["--proc", "/proc", "--dev", "/dev", "--size", &limits.tmp_bytes.to_string(), "--tmpfs", "/tmp", "--chdir", "/tmp", "--"]);
        let wrapper = format!(
            "import resource as r, sys\n\
             for k, v in ((r.RLIMIT_NPROC, {procs}), (r.RLIMIT_AS, {mem}), (r.RLIMIT_CPU, {cpu}), (r.RLIMIT_FSIZE, {fsize}), (r.RLIMIT_NOFILE, 64), (r.RLIMIT_CORE, 0)):\n    r.setrlimit(k, (v, v))\n\
             src = sys.stdin.read()\n\
             sys.stdin.close()\n\
             exec(compile(src, '<check>', 'exec'), {{'__name__': '__main__'}})\n",
            procs = limits.processes,
            mem = limits.memory_bytes,
            cpu = limits.timeout.as_secs().max(1),
            fsize = limits.tmp_bytes,
        );
        cmd.arg(&self.python).args(["-I", "-S", "-c", &wrapper]);
        cmd
    }
}

#[cfg(unix)]
fn running_as_root() -> bool {
    // When /proc cannot tell, assume root: the sandbox then leaves it anyway.
    std::fs::metadata("/proc/self").map_or(true, |m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

#[cfg(not(unix))]
fn running_as_root() -> bool {
    false
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each program fails (or is killed), and the host is as it was.
    #[test]
    fn hostile_programs_fail_and_change_nothing() {
        let sb = Sandbox::get().expect("bubblewrap (scripts/test.sh installs it)");
        let limits = Limits { timeout: Duration::from_secs(3), ..Limits::default() };
        assert_eq!(sb.run_python("import sys; sys.exit(0)", &limits).unwrap(), Outcome::Passed, "the sandbox runs Python");
        assert_eq!(sb.run_python("raise SystemExit(3)", &limits).unwrap(), Outcome::Failed);

        let dir = std::env::temp_dir().join(format!("lopa-sandbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, "keep me").unwrap();
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let marker = 700_000 + std::process::id() % 100_000; // a sleep nobody else runs
        let cases = [
            ("unlink", format!("import os; os.unlink({victim:?})")),
            ("rmtree", format!("import shutil; shutil.rmtree({dir:?})")),
            ("read home", format!("import os; os.listdir({home:?})")),
            ("read etc", "open('/etc/passwd').read()".to_string()),
            ("environment", "import os, sys; sys.exit(0 if os.environ.get('HOME') or os.environ.get('CARGO') else 1)".into()),
            ("network", format!("import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)")),
            ("write usr", "open('/usr/lopa-was-here', 'w')".into()),
            ("raise limits", "import resource as r; r.setrlimit(r.RLIMIT_NPROC, (10**6, 10**6))".into()),
            ("fork bomb", "import os\nwhile True:\n    os.fork()".into()),
            ("setsid sleeper", format!("import os, time\nif os.fork() == 0:\n    os.setsid()\n    os.execv('/usr/bin/sleep', ['sleep', '{marker}'])\ntime.sleep(1)\nraise SystemExit(1)")),
            ("timeout", format!("import os\nos.setsid() if os.fork() == 0 else None\nos.execv('/usr/bin/sleep', ['sleep', '{marker}'])")),
            ("memory", "x = bytearray(4 << 30)".into()),
            ("tmp quota", "open('/tmp/big', 'wb').write(b'x' * (64 << 20))".into()),
        ];
        for (name, program) in &cases {
            let t0 = Instant::now();
            let out = sb.run_python(program, &limits).unwrap();
            assert_ne!(out, Outcome::Passed, "{name} must fail");
            assert!(t0.elapsed() < Duration::from_secs(6), "{name} took {:?}", t0.elapsed());
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(listener.accept().is_err(), "no connection reached the host");
        assert!(!Path::new("/usr/lopa-was-here").exists());
        // No process is left: scan every command line on the host for the sleeper's argument.
        std::thread::sleep(Duration::from_millis(200));
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&marker.to_string()) && c.starts_with("sleep"))
            .collect();
        assert!(left.is_empty(), "processes left behind: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The process limit holds for the sandbox, whoever runs it: forks stop at the limit.
    #[test]
    fn process_limit_holds() {
        let sb = Sandbox::get().expect("bubblewrap");
        let program = "import os, sys, time\nn = 0\ntry:\n    while n < 1000:\n        if os.fork() == 0:\n            time.sleep(3); os._exit(0)\n        n += 1\nexcept OSError:\n    sys.exit(0 if n < 32 else 1)\nsys.exit(1)";
        assert_eq!(sb.run_python(program, &Limits::default()).unwrap(), Outcome::Passed, "fork must fail before 32 processes");
    }
}
