//! `satchel serve`: flags (each also a `SATCHEL_*` variable) into a `ServerConfig`, then run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use satchel_core::dispatch::{DEFAULT_LEASE_TTL, DEFAULT_MAX_IN_FLIGHT};
use satchel_core::lifecycle::{DEFAULT_EXPIRY, DEFAULT_RETENTION};
use satchel_server::auth::DEFAULT_WORKSPACE;
use satchel_server::config::{
    DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_DRAIN_DELAY, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT,
};
use satchel_server::{ConfigFile, PrefixGrouping, ServerConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Beyond loopback, API keys are required. Port 0 takes any free
    /// port: the address bound is logged ("Satchel is serving") and written to --port-file.
    #[arg(long, env = "SATCHEL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Once listening, write the address bound (`host:port` and a newline) to this file, and
    /// on a second line the --metrics-listen address bound, if any; whole or not at all
    /// (written beside it, then renamed): how a script or test that listens on port 0 learns
    /// the port.
    #[arg(long, env = "SATCHEL_PORT_FILE")]
    port_file: Option<PathBuf>,

    /// SQLite database file (created if missing; one server process per file), or a
    /// PostgreSQL URL (postgres://user@host:5432/satchel) shared by several nodes, each
    /// started with the same URL.
    #[arg(long, env = "SATCHEL_DB", default_value = "./satchel.db")]
    db: PathBuf,

    /// TOML config file: `[[api_keys]]` (key → workspace) and `[[backends]]` (model servers,
    /// their models, limits and retries; without any, the emulator runs every model),
    /// `[[webhooks]]` and `[webhook_delivery]` (signed events when batches end).
    /// See satchel.example.toml.
    #[arg(long, env = "SATCHEL_CONFIG")]
    config: Option<PathBuf>,

    /// Comma-separated API keys of the default workspace, added to those of --config.
    #[arg(
        long = "api-keys",
        env = "SATCHEL_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    api_keys: Vec<String>,

    /// Base URL clients reach this server at, used in `results_url`
    /// (e.g. https://batches.example.com). Default: the scheme and Host of each request.
    #[arg(long, env = "SATCHEL_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,

    /// Time the emulator takes per request, e.g. 50ms.
    #[arg(long, env = "SATCHEL_EMULATOR_LATENCY", default_value = "0s", value_parser = humantime::parse_duration)]
    emulator_latency: Duration,

    /// Share of emulated requests (0.0-1.0) that fail with api_error or overloaded_error.
    #[arg(long, env = "SATCHEL_EMULATOR_ERROR_RATE", default_value_t = 0.0, value_parser = parse_fraction)]
    emulator_error_rate: f64,

    /// A JSONL file of scripted emulator replies for tests: rules matching requests by
    /// custom_id (exact or glob) or params, each giving a message merged over the reply, an
    /// error, a latency or "fail the first N attempts". Re-read on SIGHUP. See the README.
    #[arg(long, env = "SATCHEL_EMULATOR_FIXTURES")]
    emulator_fixtures: Option<PathBuf>,

    /// Processing window of a batch: requests not started by then end `expired` (API: 24h).
    #[arg(long, env = "SATCHEL_EXPIRY", default_value_t = DEFAULT_EXPIRY.into(), value_parser = parse_positive_duration)]
    expiry: humantime::Duration,

    /// How long results are kept after a batch is created; then purged, `archived_at` set
    /// (API: 29 days).
    #[arg(long, env = "SATCHEL_RETENTION", default_value_t = DEFAULT_RETENTION.into(), value_parser = parse_positive_duration)]
    retention: humantime::Duration,

    /// Most requests running at once, over all backends (each is also capped by its own
    /// `max_concurrency`).
    #[arg(long, env = "SATCHEL_MAX_IN_FLIGHT", default_value_t = default_max_in_flight(), value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,

    /// This node's id, the owner of its leases: stable across restarts, unique among the
    /// nodes sharing a store. Default: this host's name and the database's path (SQLite), or
    /// this host's name and the listening port (PostgreSQL).
    #[arg(long, env = "SATCHEL_NODE_ID")]
    node_id: Option<String>,

    /// How long a lease on a request lasts unless renewed (renewed every third of it while
    /// the request waits or runs). A node that stops renewing loses its requests to others
    /// after this long.
    #[arg(long, env = "SATCHEL_LEASE_TTL", default_value_t = DEFAULT_LEASE_TTL.into(), value_parser = parse_lease_ttl)]
    lease_ttl: humantime::Duration,

    /// On SIGTERM or SIGINT: how long attempts in flight and open responses may take to
    /// finish before what is left is given back (it runs again at the next start).
    #[arg(long, env = "SATCHEL_SHUTDOWN_TIMEOUT", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT.into())]
    shutdown_timeout: humantime::Duration,

    /// How long a client may take to send a request's headers (from connecting, or from
    /// its first byte after an idle moment); then it is disconnected.
    #[arg(long, env = "SATCHEL_HEADER_READ_TIMEOUT", default_value_t = DEFAULT_HEADER_READ_TIMEOUT.into(), value_parser = parse_positive_duration)]
    header_read_timeout: humantime::Duration,

    /// How long a kept-alive connection may wait for its next request; then it is closed.
    #[arg(long, env = "SATCHEL_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT.into(), value_parser = parse_positive_duration)]
    idle_timeout: humantime::Duration,

    /// How long an upload may go without a new byte; then it is refused (408) and nothing
    /// of it is kept.
    #[arg(long, env = "SATCHEL_BODY_IDLE_TIMEOUT", default_value_t = DEFAULT_BODY_IDLE_TIMEOUT.into(), value_parser = parse_positive_duration)]
    body_idle_timeout: humantime::Duration,

    /// Browser origins allowed to call the API without the SDK's
    /// `anthropic-dangerous-direct-browser-access` header (comma-separated; `*` for any).
    /// Requests that carry that header get CORS headers whatever their origin.
    #[arg(
        long = "cors-allow-origin",
        env = "SATCHEL_CORS_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    cors_allow_origins: Vec<String>,

    /// Most connections open at once; at the cap, new ones wait until one closes.
    /// Default: the open-file soft limit (`ulimit -n`) less 128, at most 8192.
    #[arg(long, env = "SATCHEL_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// On SIGTERM or SIGINT: how long to go on serving, with /readyz answering 503, before
    /// draining, so load balancers stop sending first (e.g. 10s behind a Kubernetes Service).
    #[arg(long, env = "SATCHEL_DRAIN_DELAY", default_value_t = DEFAULT_DRAIN_DELAY.into())]
    drain_delay: humantime::Duration,

    /// Serve Prometheus metrics at /metrics (and /healthz, /readyz) on this address, apart
    /// from the API and its keys, e.g. 0.0.0.0:9090 on a private interface. Default: off.
    #[arg(long, env = "SATCHEL_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,

    /// The `anthropic-organization-id` (a UUID) sent on every response, as the hosted API
    /// does. Default: derived from the database (the same across restarts, and for nodes
    /// started with the same --db URL).
    #[arg(long, env = "SATCHEL_ORGANIZATION_ID")]
    organization_id: Option<String>,

    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `satchel_core=debug`.
    #[arg(long, env = "SATCHEL_LOG", default_value = "info")]
    log: String,

    /// Log lines as text for people, or one JSON object a line for log shippers.
    #[arg(long, env = "SATCHEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Run a batch's requests that share a prompt prefix (model, system prompt, tools)
    /// together, for model servers' prefix caches. auto: when a backend is a model server
    /// (`anthropic` or `openai`), not for the emulator alone.
    #[arg(long, env = "SATCHEL_GROUP_BY_PREFIX", value_enum, default_value_t = GroupByPrefix::Auto)]
    group_by_prefix: GroupByPrefix,
}

/// Whether batches run requests sharing a prompt prefix together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GroupByPrefix {
    Auto,
    On,
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("expected a fraction between 0 and 1, got {text:?}")),
    }
}

/// The `--max-in-flight` default: the dispatcher's own.
fn default_max_in_flight() -> u32 {
    u32::try_from(DEFAULT_MAX_IN_FLIGHT).unwrap_or(u32::MAX)
}

fn parse_lease_ttl(text: &str) -> Result<humantime::Duration, String> {
    match text.parse::<humantime::Duration>() {
        Ok(d) if *d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err("must be at least 1s".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_positive_duration(text: &str) -> Result<humantime::Duration, String> {
    match text.parse::<humantime::Duration>() {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let mut config = ServerConfig::new(self.listen, self.db);
        if let Some(path) = &self.config {
            let file = ConfigFile::load(path)?;
            file.add_keys_to(&mut config.keys)?;
            config.webhooks = file.webhook_config()?;
            config.backends = file.backends;
            config.workspace_limits = std::sync::Arc::new(satchel_server::workspace_limits::build(
                &file.workspace_limits,
            )?);
        }
        for key in self
            .api_keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
        {
            config
                .keys
                .add(key, DEFAULT_WORKSPACE)
                .context("SATCHEL_API_KEYS / --api-keys")?;
        }
        config.public_base_url = self.public_base_url;
        config.emulator.latency = self.emulator_latency;
        config.emulator.error_rate = self.emulator_error_rate;
        config.emulator.fixtures = self.emulator_fixtures;
        config.lifecycle.expiry = self.expiry.into();
        config.lifecycle.retention = self.retention.into();
        config.http.header_read_timeout = self.header_read_timeout.into();
        config.http.idle_timeout = self.idle_timeout.into();
        config.http.body_idle_timeout = self.body_idle_timeout.into();
        config.cors_allowed_origins = self.cors_allow_origins;
        config.prefix_grouping = match self.group_by_prefix {
            GroupByPrefix::Auto => PrefixGrouping::Auto,
            GroupByPrefix::On => PrefixGrouping::On,
            GroupByPrefix::Off => PrefixGrouping::Off,
        };
        if let Some(max) = self.max_connections {
            config.http.max_connections = max as usize;
        }
        config.dispatch.max_in_flight = self.max_in_flight as usize;
        match self.node_id.filter(|n| !n.trim().is_empty()) {
            Some(node_id) => config.dispatch.node_id = node_id,
            // The default id on a shared database is made of the port: port 0 would give every
            // node the same one (and each restart another port's), so it must be chosen.
            None if config.postgres_url().is_some() && config.listen.port() == 0 => {
                anyhow::bail!(
                    "--listen on port 0 with a PostgreSQL database needs --node-id (the default \
                     node id is made of the port)"
                )
            }
            None => {}
        }
        config.dispatch.lease_ttl = self.lease_ttl.into();
        config.shutdown_timeout = self.shutdown_timeout.into();
        config.drain_delay = self.drain_delay.into();
        config.metrics_listen = self.metrics_listen;
        config.organization_id = self.organization_id;
        Ok(config)
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object a line, the event's fields at the top level beside `timestamp`,
        // `level`, `target` and `message`.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    let port_file = args.port_file.clone();
    let config = args.into_config()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let window = config.shutdown_timeout;
        // Listening for SIGHUP before serving: once clients can reach the server, a SIGHUP
        // reloads rather than kills.
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        let server = satchel_server::start(config).await?;
        if let Some(path) = &port_file {
            write_port_file(path, server.addr, server.metrics_addr)?;
        }
        // The serving loop only ends when shut down: wait for the signal to do so, reloading
        // files on each SIGHUP meanwhile.
        let stop = shutdown_signal();
        tokio::pin!(stop);
        let signal = loop {
            tokio::select! {
                signal = &mut stop => break signal?,
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    server.reload();
                }
            }
        };
        tracing::info!(%signal, window = %humantime::format_duration(window), "shutting down: draining");
        let report = server.shutdown(window).await;
        tracing::info!(
            settled = report.dispatch.settled,
            released = report.dispatch.released,
            cut = report.dispatch.cut,
            connections_finished = report.http.finished,
            connections_cut = report.http.cut,
            "drained; stopped (accepted batches are safe in the store)"
        );
        Ok(())
    })
}

/// Writes `addr` (and `metrics`, if any, on the next line) to `path` atomically: to a file
/// beside it, then renamed over it, so a reader polling for the file never sees half of it.
fn write_port_file(
    path: &std::path::Path,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut text = format!("{addr}\n");
    if let Some(metrics) = metrics {
        text.push_str(&format!("{metrics}\n"));
    }
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("cannot write --port-file {}", path.display()))
}

/// Waits for SIGTERM (what deployments send) or SIGINT (Ctrl-C), and says which.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
