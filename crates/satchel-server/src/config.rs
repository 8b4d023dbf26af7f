//! The server's configuration: typed, with the API's defaults, filled by the command line
//! (and its `SATCHEL_*` variables) and by an optional TOML file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use satchel_core::LifecycleConfig;
use satchel_core::dispatch::DispatchConfig;
use satchel_core::emulator::EmulatorConfig;
use serde::Deserialize;

use crate::auth::Keys;

/// Everything a running server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub db: PathBuf,
    /// The externally reachable base URL used in `results_url`; when unset, the scheme and
    /// `Host` of each request.
    pub public_base_url: Option<String>,
    pub keys: Keys,
    pub lifecycle: LifecycleConfig,
    pub dispatch: DispatchConfig,
    pub emulator: EmulatorConfig,
    /// How often housekeeping runs (expiry, canceling sweeps, retention).
    pub housekeeping_tick: std::time::Duration,
}

impl ServerConfig {
    /// The defaults: loopback port 8080, `./satchel.db`, no keys, the API's windows.
    pub fn new(listen: SocketAddr, db: PathBuf) -> Self {
        Self {
            listen,
            db,
            public_base_url: None,
            keys: Keys::default(),
            lifecycle: LifecycleConfig::default(),
            dispatch: DispatchConfig::default(),
            emulator: EmulatorConfig::default(),
            housekeeping_tick: std::time::Duration::from_millis(250),
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

    /// Adds this file's keys to `keys`.
    pub fn add_keys_to(&self, keys: &mut Keys) {
        for entry in &self.api_keys {
            keys.add(entry.key.trim(), entry.workspace.clone());
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
}
