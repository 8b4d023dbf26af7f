//! Test support: a throwaway PostgreSQL cluster started from the installed binaries, so the
//! PostgreSQL tests run against a real server with no shared state and no service running
//! beforehand.
//!
//! [`shared`] starts one cluster per test binary (each test then takes its own database with
//! [`Cluster::create_database`], which is fast); [`Cluster::start`] starts one a test owns
//! (process tests stop and restart it). A cluster is `initdb`-ed in a temp dir under /tmp,
//! listens on a free loopback port with `fsync=on`, keeps its unix socket in that dir, and is
//! stopped and removed when dropped, and by a watchdog process when the test binary exits
//! without dropping it (a static, a panic, a `kill`).
//!
//! `initdb` refuses to run as root, and CI runs tests as root: then every PostgreSQL binary
//! runs as the `postgres` OS user (`runuser`), on a temp dir chowned to it.
//!
//! Without PostgreSQL binaries the tests say loudly that they were skipped, unless
//! `SATCHEL_REQUIRE_PG=1`, which makes that a failure (CI sets it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running PostgreSQL cluster, stopped and removed on drop.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    databases: AtomicU32,
}

/// Where the PostgreSQL binaries are, if installed: `SATCHEL_PG_BIN`, else `initdb` on the
/// PATH, else the newest `/usr/lib/postgresql/*/bin` (Debian keeps them off the PATH).
pub fn find_binaries() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SATCHEL_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            // Through symlinks to the real bin dir, which also holds psql and postgres.
            if let Ok(initdb) = std::fs::canonicalize(dir.join("initdb"))
                && let Some(bin) = initdb.parent()
                && bin.join("pg_ctl").exists()
                && bin.join("psql").exists()
            {
                return Some(bin.to_owned());
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether a missing PostgreSQL fails the tests (`SATCHEL_REQUIRE_PG=1`, set by CI).
pub fn required() -> bool {
    std::env::var("SATCHEL_REQUIRE_PG").is_ok_and(|v| v == "1")
}

/// The cluster shared by the tests of this binary, started on first use; `None` when
/// PostgreSQL is not installed and not required (a line on stderr says the test was skipped).
pub fn shared(test: &str) -> Option<&'static Cluster> {
    static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
    let cluster = SHARED.get_or_init(|| {
        let bin = available()?;
        Some(Cluster::start_with(&bin))
    });
    if cluster.is_none() {
        skipped(test);
    }
    cluster.as_ref()
}

/// The binaries if installed; panics if they are missing while required.
pub fn available() -> Option<PathBuf> {
    let bin = find_binaries();
    if bin.is_none() && required() {
        panic!(
            "SATCHEL_REQUIRE_PG=1 but no PostgreSQL binaries were found (initdb on the PATH, \
             /usr/lib/postgresql/*/bin or SATCHEL_PG_BIN): install PostgreSQL (Debian: apt-get \
             install postgresql)"
        );
    }
    bin
}

/// Says loudly that a PostgreSQL test did not run.
pub fn skipped(test: &str) {
    eprintln!(
        "SKIPPED {test}: no PostgreSQL binaries found (install postgresql, or point \
         SATCHEL_PG_BIN at its bin dir); set SATCHEL_REQUIRE_PG=1 to make this a failure"
    );
}

impl Cluster {
    /// Starts a cluster this caller owns; `None` (after saying so) if PostgreSQL is missing
    /// and not required.
    pub fn start(test: &str) -> Option<Cluster> {
        match available() {
            Some(bin) => Some(Self::start_with(&bin)),
            None => {
                skipped(test);
                None
            }
        }
    }

    fn start_with(bin: &Path) -> Cluster {
        let as_postgres = rustix::process::geteuid().is_root();
        // Under /tmp whatever TMPDIR says: the postgres user must reach the dir.
        let dir = tempfile::Builder::new()
            .prefix("satchel-pg-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("cannot make a temp dir for PostgreSQL: {e}"));
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .stdout(Stdio::null()));
        }
        let mut cluster = Cluster {
            bin: bin.to_owned(),
            dir,
            port: 0,
            as_postgres,
            databases: AtomicU32::new(0),
        };
        let data = cluster.data_dir();
        run(cluster
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null()));
        cluster.watchdog();
        // A free port can be taken between finding it and binding it: try a few.
        for attempt in 0.. {
            cluster.port = free_port();
            if cluster.try_start() {
                break;
            }
            if attempt == 4 {
                let log =
                    std::fs::read_to_string(cluster.dir.path().join("log")).unwrap_or_default();
                panic!("PostgreSQL did not start; its log:\n{log}");
            }
        }
        cluster
    }

    /// Starts the server (again, after [`Cluster::stop_immediate`]); false if it failed.
    fn try_start(&self) -> bool {
        let options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=on -c max_connections=300 -c shared_buffers=64MB",
            self.port,
            self.dir.path().display()
        );
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the server again after a stop; panics if it does not come up.
    pub fn restart(&self) {
        assert!(self.try_start(), "PostgreSQL did not start again");
    }

    /// `pg_ctl stop -m immediate`: every backend killed, no checkpoint (crash recovery at the
    /// next start).
    pub fn stop_immediate(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this cluster (as the superuser `postgres`).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.psql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs one SQL command in the `postgres` database through `psql`.
    pub fn psql(&self, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A PostgreSQL binary, run as the `postgres` user when we are root.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// A shell that outlives this process by a moment: once the process is gone, however it
    /// ended, it stops the server and removes the dir.
    fn watchdog(&self) {
        let stop = format!(
            "{} {}/pg_ctl -D {} -m immediate -w stop",
            if self.as_postgres {
                "runuser -u postgres --"
            } else {
                ""
            },
            self.bin.display(),
            self.data_dir().display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.path().display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}
