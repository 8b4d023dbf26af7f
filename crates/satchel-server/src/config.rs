//! The server's configuration: typed, with the API's defaults, filled by the command line
//! (and its `SATCHEL_*` variables) and by an optional TOML file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use satchel_core::LifecycleConfig;
use satchel_core::dispatch::DispatchConfig;
use satchel_core::emulator::EmulatorConfig;
use serde::Deserialize;

use crate::auth::Keys;
pub use crate::backend_config::{
    AnthropicEntry, BackendEntry, BackendKind, EmulatorEntry, HttpEntry, NoPin,
};

/// Everything a running server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub db: PathBuf,
    /// The externally reachable base URL used in `results_url`; when unset, the scheme and
    /// `Host` of each request (without a `Host`, the address the client connected to).
    pub public_base_url: Option<String>,
    pub keys: Keys,
    pub lifecycle: LifecycleConfig,
    pub dispatch: DispatchConfig,
    pub emulator: EmulatorConfig,
    /// How often housekeeping runs (expiry, canceling sweeps, retention).
    pub housekeeping_tick: Duration,
    /// Model servers (`[[backends]]`); empty: the emulator runs every model.
    pub backends: Vec<BackendEntry>,
    /// How long a graceful shutdown lets attempts in flight and open responses finish.
    pub shutdown_timeout: Duration,
    /// Limits of the HTTP serving loop.
    pub http: HttpConfig,
    /// Browser origins allowed beyond the SDK's browser header (`*`: any).
    pub cors_allowed_origins: Vec<String>,
    /// On a graceful shutdown, how long to go on serving with `/readyz` answering 503
    /// before draining, so load balancers stop sending first.
    pub drain_delay: Duration,
    /// Where to serve `/metrics` (and the probes again); none: metrics are off.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether batches run requests sharing a prompt prefix together.
    pub prefix_grouping: PrefixGrouping,
    /// The `anthropic-organization-id` sent on responses; none: derived (see
    /// [`crate::organization`]).
    pub organization_id: Option<String>,
    /// Per-workspace limits (`[[workspace_limits]]`); none by default.
    pub workspace_limits: std::sync::Arc<satchel_core::workspace_limits::WorkspaceLimits>,
    /// Webhook endpoints and how they are delivered to (see `crate::webhooks`).
    pub webhooks: satchel_core::webhooks::WebhookConfig,
}

/// Whether claims group a batch's requests by prompt prefix (`satchel_core::prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrefixGrouping {
    /// When some backend is a model server (`anthropic` or `openai`), whose prefix cache it
    /// helps; not for the emulator alone, where it would only cost a scan at ingest.
    #[default]
    Auto,
    On,
    Off,
}

impl PrefixGrouping {
    /// Whether to group, given the configured backends.
    pub fn resolve(self, backends: &[BackendEntry]) -> bool {
        match self {
            Self::On => true,
            Self::Off => false,
            Self::Auto => backends.iter().any(|b| match b.kind {
                BackendKind::Anthropic(_) | BackendKind::Openai(_) => true,
                BackendKind::Emulator(_) => false,
            }),
        }
    }
}

/// How long a graceful shutdown waits for attempts in flight and open responses.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// By default a shutdown drains at once (set a delay where a load balancer probes `/readyz`).
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::ZERO;

/// The default node id: this host's name and the database's absolute path, so it is the same
/// at every restart of the same server and differs between servers.
pub fn default_node_id(db: &Path) -> String {
    let host = host_name();
    // The file may not exist yet: make the path absolute through its directory.
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = match (std::fs::canonicalize(dir), db.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => db.to_owned(),
    };
    format!("{host}:{}", path.display())
}

/// How long a client may take to send a request's headers, from connecting or from the
/// first byte after an idle moment.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may sit without a new request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an upload may go without a new byte before it is refused (408).
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// File descriptors kept for everything but connections (the store's files, the listener,
/// the runtime, outgoing backend connections) when the connection cap is derived.
pub const FD_RESERVE: u64 = 128;
/// The derived connection cap never exceeds this (each open connection costs memory).
pub const MAX_DERIVED_CONNECTIONS: u64 = 8192;
/// The connection cap when the open-file limit cannot be read.
pub const FALLBACK_MAX_CONNECTIONS: usize = 1024;

/// The HTTP serving loop's limits (see [`crate::http`]).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a request body may go without a new byte.
    pub body_idle_timeout: Duration,
    /// Most connections open at once; at the cap, new ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            max_connections: default_max_connections(),
        }
    }
}

/// The default connection cap: the process's open-file soft limit less [`FD_RESERVE`] (but
/// at least half the limit), at most [`MAX_DERIVED_CONNECTIONS`]; so that at the cap the
/// server still has descriptors for its store and backends, instead of failing accepts
/// and requests with EMFILE. [`FALLBACK_MAX_CONNECTIONS`] where the limit cannot be read
/// (read with `getrlimit`, through rustix: no unsafe code here).
pub fn default_max_connections() -> usize {
    match open_file_soft_limit() {
        Some(soft) => {
            let derived = soft
                .saturating_sub(FD_RESERVE)
                .max(soft / 2)
                .clamp(1, MAX_DERIVED_CONNECTIONS);
            usize::try_from(derived).unwrap_or(FALLBACK_MAX_CONNECTIONS)
        }
        None => FALLBACK_MAX_CONNECTIONS,
    }
}

#[cfg(unix)]
fn open_file_soft_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
fn open_file_soft_limit() -> Option<u64> {
    None
}

/// The default node id on a PostgreSQL database shared by several nodes: this host's name
/// and the port it listens on, so it is the same at every restart and differs between the
/// nodes of one host.
pub fn default_shared_node_id(listen: SocketAddr) -> String {
    format!("{}:{}", host_name(), listen.port())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl ServerConfig {
    /// The defaults: loopback port 8080, `./satchel.db`, no keys, the API's windows.
    /// `db` is a SQLite file path, or a `postgres://` URL.
    pub fn new(listen: SocketAddr, db: PathBuf) -> Self {
        let node_id = match db.to_str() {
            Some(url) if satchel_store_postgres::is_postgres_url(url) => {
                default_shared_node_id(listen)
            }
            _ => default_node_id(&db),
        };
        let dispatch = DispatchConfig {
            node_id,
            ..DispatchConfig::default()
        };
        Self {
            listen,
            db,
            public_base_url: None,
            keys: Keys::default(),
            lifecycle: LifecycleConfig::default(),
            dispatch,
            emulator: EmulatorConfig::default(),
            housekeeping_tick: Duration::from_millis(250),
            backends: Vec::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            http: HttpConfig::default(),
            cors_allowed_origins: Vec::new(),
            drain_delay: DEFAULT_DRAIN_DELAY,
            metrics_listen: None,
            prefix_grouping: PrefixGrouping::Auto,
            organization_id: None,
            workspace_limits: Default::default(),
            webhooks: Default::default(),
        }
    }
}

/// The TOML config file (`--config`).
///
/// ```toml
/// [[api_keys]]
/// key = "sk-team-a-…"
/// workspace = "team-a"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub api_keys: Vec<ApiKeyEntry>,
    /// Model servers requests run on; none means the emulator runs every model.
    #[serde(default)]
    pub backends: Vec<BackendEntry>,
    #[serde(default)]
    pub workspace_limits: Vec<crate::workspace_limits::WorkspaceLimitEntry>,
    /// Webhook endpoints (`[[webhooks]]`) and their delivery settings (see `crate::webhooks`).
    #[serde(default)]
    pub webhooks: Vec<crate::webhooks::WebhookEntry>,
    #[serde(default)]
    pub webhook_delivery: crate::webhooks::WebhookDeliverySection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub key: String,
    #[serde(default = "default_workspace")]
    pub workspace: String,
}

fn default_workspace() -> String {
    crate::auth::DEFAULT_WORKSPACE.to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config file {path}: an API key is empty")]
    EmptyKey { path: PathBuf },
    #[error(transparent)]
    Keys(#[from] crate::auth::KeyConflict),
    #[error("backend {backend:?}: {problem}")]
    Backend { backend: String, problem: String },
    #[error("workspace_limits for {workspace:?}: {problem}")]
    WorkspaceLimits { workspace: String, problem: String },
    #[error("webhook {entry}: {problem}")]
    Webhook { entry: String, problem: String },
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        if file.api_keys.iter().any(|k| k.key.trim().is_empty()) {
            return Err(ConfigError::EmptyKey {
                path: path.to_owned(),
            });
        }
        Ok(file)
    }

    /// The file's webhook endpoints and delivery settings, checked.
    pub fn webhook_config(&self) -> Result<satchel_core::webhooks::WebhookConfig, ConfigError> {
        crate::webhooks::config::build(&self.webhooks, &self.webhook_delivery)
    }

    /// Adds this file's keys to `keys`; a key already given to another workspace is refused.
    pub fn add_keys_to(&self, keys: &mut Keys) -> Result<(), ConfigError> {
        for entry in &self.api_keys {
            keys.add(entry.key.trim(), entry.workspace.clone())?;
        }
        Ok(())
    }
}

impl ServerConfig {
    /// The PostgreSQL URL `db` names, if it names one (else it is a SQLite file).
    pub fn postgres_url(&self) -> Option<&str> {
        self.db
            .to_str()
            .filter(|db| satchel_store_postgres::is_postgres_url(db))
    }

    /// `db` as it may be logged: a URL's password is left out.
    pub fn db_for_logs(&self) -> String {
        match self.postgres_url() {
            Some(url) => satchel_store_postgres::redact_url(url),
            None => self.db.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_rejects_unknown_fields() {
        let file: ConfigFile = toml::from_str(
            "[[api_keys]]\nkey = \"a\"\nworkspace = \"w\"\n[[api_keys]]\nkey = \"b\"\n",
        )
        .unwrap();
        assert_eq!(file.api_keys.len(), 2);
        assert_eq!(file.api_keys[1].workspace, "default");
        assert!(
            toml::from_str::<ConfigFile>("[[api_keys]]\nkey = \"a\"\nwrkspace = \"w\"\n").is_err()
        );
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../satchel.example.toml");
        let file = ConfigFile::load(&path).unwrap();
        assert_eq!(file.api_keys.len(), 2);
        let kinds: Vec<&str> = file.backends.iter().map(|b| b.kind.name()).collect();
        assert_eq!(kinds, ["anthropic", "openai", "openai", "emulator"]);
        assert_eq!(
            file.backends[0].requests_per_minute.map(|n| n.get()),
            Some(1000)
        );
    }
}
