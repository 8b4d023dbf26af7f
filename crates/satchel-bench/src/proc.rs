//! The processes under test: `satchel serve` on a fresh SQLite file, `satchel mock-upstream`,
//! each a real child process on a free loopback port, killed when dropped. Peak memory is the
//! kernel's own account of the process (`VmHWM` in `/proc/PID/status`), so it includes
//! everything: SQLite's page cache, the allocator's slack, every buffer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The `satchel` binary: next to this one, in the same target directory.
pub fn satchel_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_owned());
        }
        bail!("--satchel {}: no such file", path.display());
    }
    let me = std::env::current_exe().context("cannot tell where satchel-bench runs from")?;
    let dir = me
        .parent()
        .context("satchel-bench has no parent directory")?;
    let candidate = dir.join("satchel");
    if candidate.is_file() {
        return Ok(candidate);
    }
    let profile = if dir.ends_with("release") {
        "--release "
    } else {
        ""
    };
    bail!(
        "the satchel binary is missing: expected {} next to satchel-bench.\n\
         Build it first: cargo build {profile}-p satchel",
        candidate.display()
    )
}

/// Whether `satchel` has the `mock-upstream` subcommand (it is being added alongside this).
pub fn has_mock_upstream(satchel: &Path) -> bool {
    Command::new(satchel)
        .args(["mock-upstream", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How to learn that a process listens, and where.
enum Listening {
    /// `satchel serve --listen 127.0.0.1:0 --port-file FILE` writes its address there.
    PortFile(PathBuf),
    /// A process told its address, up once it accepts a connection.
    At(SocketAddr),
}

/// A running child process listening on `addr`.
pub struct Proc {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    what: String,
}

impl Proc {
    /// Starts `satchel serve --db db` with `extra` arguments, logging to `db`'s directory.
    pub async fn serve(satchel: &Path, db: &Path, extra: &[String]) -> Result<Self> {
        let port_file = db.with_extension("port");
        let mut args = vec![
            "serve".to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--port-file".into(),
            port_file.display().to_string(),
            "--db".into(),
            db.display().to_string(),
            "--log".into(),
            "warn".into(),
        ];
        args.extend_from_slice(extra);
        Self::start(
            satchel,
            &args,
            Listening::PortFile(port_file),
            db.with_extension("log"),
            "satchel serve",
        )
        .await
    }

    /// Starts `satchel serve --db url` (a PostgreSQL database shared by nodes) as `node`,
    /// logging to `log`.
    pub async fn serve_shared(satchel: &Path, url: &str, node: &str, log: PathBuf) -> Result<Self> {
        let port_file = log.with_extension("port");
        let args = [
            "serve".to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--port-file".into(),
            port_file.display().to_string(),
            "--db".into(),
            url.to_owned(),
            "--node-id".into(),
            node.to_owned(),
            "--log".into(),
            "warn".into(),
        ];
        let listening = Listening::PortFile(port_file);
        Self::start(satchel, &args, listening, log, "satchel serve (PostgreSQL)").await
    }

    /// Starts `satchel mock-upstream` answering at once.
    pub async fn mock_upstream(satchel: &Path, log: PathBuf) -> Result<Self> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let args = [
            "mock-upstream".to_owned(),
            "--listen".into(),
            addr.to_string(),
            "--latency".into(),
            "0ms".into(),
        ];
        let listening = Listening::At(addr);
        Self::start(satchel, &args, listening, log, "satchel mock-upstream").await
    }

    async fn start(
        satchel: &Path,
        args: &[String],
        listening: Listening,
        log: PathBuf,
        what: &str,
    ) -> Result<Self> {
        if let Listening::PortFile(file) = &listening {
            // Left by an earlier run: the address in it is not this process's.
            let _ = std::fs::remove_file(file);
        }
        let child = Command::new(satchel)
            .args(args)
            .env_remove("SATCHEL_API_KEYS")
            .env_remove("SATCHEL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| log.display().to_string())?)
            .spawn()
            .with_context(|| format!("cannot start {}", satchel.display()))?;
        let mut proc = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log,
            what: what.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = match &listening {
                // Written once the server listens: the first line is the API's address.
                Listening::PortFile(file) => std::fs::read_to_string(file)
                    .ok()
                    .and_then(|text| text.lines().next()?.parse().ok()),
                Listening::At(addr) => tokio::net::TcpStream::connect(addr)
                    .await
                    .is_ok()
                    .then_some(*addr),
            };
            if let Some(addr) = up {
                proc.addr = addr;
                break;
            }
            if let Some(status) = proc.child.try_wait()? {
                bail!("{} exited ({status}): {}", proc.what, proc.log_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start within 30 s: {}",
                    proc.what,
                    proc.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(proc)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status_field(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .with_context(|| format!("cannot read the status of {}", self.what))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in /proc/PID/status"))
    }

    /// Peak resident memory since the process started (`VmHWM`), in KB.
    pub fn peak_rss_kb(&self) -> Result<u64> {
        self.status_field("VmHWM:")
    }

    /// Resident memory now (`VmRSS`), in KB.
    pub fn rss_kb(&self) -> Result<u64> {
        self.status_field("VmRSS:")
    }

    /// Fails with the process's log if it died.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}): {}", self.what, self.log_text());
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
