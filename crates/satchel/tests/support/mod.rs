//! Starting the real binary on port 0 (it writes the port it got to `--port-file`), killing
//! it, and a tiny HTTP client.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_satchel");

pub struct Server {
    pub addr: SocketAddr,
    /// Where `--metrics-listen` bound, if it was given.
    pub metrics_addr: Option<SocketAddr>,
    child: Child,
    log: PathBuf,
}

/// A name no other server of this test process has (for its log and port files).
fn unique_name() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// Any free loopback port, as the server picks it.
const ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl Server {
    /// Starts `satchel serve` on `db` with extra `args`, and waits until it answers.
    pub async fn start(db: &Path, args: &[&str]) -> Self {
        Self::start_via(db, args, None).await
    }

    /// As [`Server::start`], under `ulimit -n nofile` (through `bash`, which then `exec`s
    /// the binary: the child's pid is the server's).
    pub async fn start_with_nofile(db: &Path, nofile: u32, args: &[&str]) -> Self {
        Self::start_via(db, args, Some(nofile)).await
    }

    /// Starts `satchel serve` on a shared database (`--db` a PostgreSQL URL), its log in
    /// `log_dir`.
    pub async fn start_shared(url: &str, log_dir: &Path, args: &[&str]) -> Self {
        let files = log_dir.join(format!("node-{}", unique_name()));
        Self::spawn(Command::new(BIN), ANY_PORT, url, &files, args).await
    }

    /// Starts `satchel serve` on `db` at `addr` (a restart where clients expect it).
    pub async fn start_at(db: &Path, addr: SocketAddr, args: &[&str]) -> Self {
        let files = PathBuf::from(format!("{}.{}", db.display(), unique_name()));
        Self::spawn(Command::new(BIN), addr, db.to_str().unwrap(), &files, args).await
    }

    async fn start_via(db: &Path, args: &[&str], nofile: Option<u32>) -> Self {
        let files = PathBuf::from(format!("{}.{}", db.display(), unique_name()));
        let command = match nofile {
            None => Command::new(BIN),
            Some(n) => {
                let mut bash = Command::new("bash");
                bash.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), BIN]);
                bash
            }
        };
        Self::spawn(command, ANY_PORT, db.to_str().unwrap(), &files, args).await
    }

    /// Starts `satchel serve --listen LISTEN --port-file …` (LISTEN: port 0 unless a restart
    /// needs its old address) and waits for the port file: it is written once the server
    /// listens, so the address read from it answers. `files` names the log (`.log`) and the
    /// port file (`.port`).
    async fn spawn(
        mut command: Command,
        listen: SocketAddr,
        db: &str,
        files: &Path,
        args: &[&str],
    ) -> Self {
        let log = PathBuf::from(format!("{}.log", files.display()));
        let port_file = PathBuf::from(format!("{}.port", files.display()));
        let child = command
            .args([
                "serve",
                "--listen",
                &listen.to_string(),
                "--db",
                db,
                "--port-file",
            ])
            .arg(&port_file)
            .args(args)
            .env_remove("SATCHEL_API_KEYS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text;
            }
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "server exited: {}",
                server.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut lines = text.lines().map(|l| l.parse::<SocketAddr>().unwrap());
        server.addr = lines.next().expect("the API's address");
        server.metrics_addr = lines.next();
        server
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (e.g. "TERM") and waits up to `within` for the process to exit.
    pub async fn signal_and_wait(
        &mut self,
        signal: &str,
        within: Duration,
    ) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {within:?} of SIG{signal}: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process's peak resident memory so far (VmHWM), in KB.
    pub fn peak_rss_kb(&self) -> u64 {
        self.status_kb("VmHWM")
    }

    /// The process's resident memory now (VmRSS), in KB.
    pub fn rss_kb(&self) -> u64 {
        self.status_kb("VmRSS")
    }

    /// A field of `/proc/<pid>/status`, in KB (or a count, for `Threads`).
    pub fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub async fn wait_ended(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = client_get(&self.url(&format!("/v1/messages/batches/{id}"))).await;
            assert_eq!(status, 200, "{body}");
            let batch: Value = serde_json::from_str(&body).unwrap();
            if batch["processing_status"] == "ended" {
                return batch;
            }
            assert!(
                Instant::now() < deadline,
                "batch did not end: {batch}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `satchel mock-upstream` as a process.
pub struct Mock {
    child: Child,
    pub base: String,
}

impl Mock {
    /// On a free port.
    pub fn start(args: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", args)
    }

    /// On `listen` (e.g. the address of a mock that was stopped, to bring it back).
    pub fn start_on(listen: &str, args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["mock-upstream", "--listen", listen])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{line}");
        Self { child, base }
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = client_get(&format!("{}/stats", self.base)).await;
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until the mock has seen at least `n` requests (a condition, not a guess at how
    /// long that takes), failing after a generous `within`.
    pub async fn wait_requests(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.stats().await["requests"].as_u64().unwrap();
            if seen >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the mock saw {seen} requests, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Mock {
    /// The `host:port` it listens on.
    pub fn listen_addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run_to_exit(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SATCHEL_API_KEYS")
        .output()
        .unwrap()
}

pub async fn client_send(method: &str, url: &str, body: Option<String>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method.parse().unwrap(), url)
        .header("x-api-key", "any-key")
        .header("anthropic-version", "2023-06-01");
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Creates a batch from a whole create body; returns its id.
pub async fn create_batch(server: &Server, body: String) -> String {
    let (status, reply) =
        client_send("POST", &server.url("/v1/messages/batches"), Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    serde_json::from_str::<Value>(&reply).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The batch `id`, as JSON.
pub async fn get_batch(server: &Server, id: &str) -> Value {
    let (status, body) = client_get(&server.url(&format!("/v1/messages/batches/{id}"))).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

pub async fn client_get(url: &str) -> (u16, String) {
    client_send("GET", url, None).await
}

/// A create body of `n` requests `r0..`, each with about `size` bytes of prompt.
pub fn requests_body(n: usize, size: usize) -> String {
    let filler = "lorem ipsum dolor sit amet ".repeat(size / 27 + 1);
    let filler = &filler[..size];
    let mut body = String::with_capacity(n * (size + 200) + 20);
    body.push_str(r#"{"requests":["#);
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"custom_id":"r{i}","params":{{"model":"claude-test","max_tokens":16,"system":"You are terse.","messages":[{{"role":"user","content":"{filler}"}}]}}}}"#
        ));
    }
    body.push_str("]}");
    body
}
