//! The gRPC settings file (TOML): where to listen, who may call, TLS, executors to push to.
//!
//! ```toml
//! listen = "127.0.0.1:50051"
//! max_message_bytes = 4194304
//! queue = 16384            # submissions waiting for the engine; beyond: RESOURCE_EXHAUSTED
//! metrics_addr = "127.0.0.1:9464"   # optional: Prometheus metrics (as --metrics-addr)
//!
//! [[tokens]]               # one per caller; the token itself is never stored
//! identity = "alice"       # recorded as the actor of what the caller changes
//! role = "marketer"        # marketer | approver | operator | service | reader
//! sha256 = "<hex of SHA-256 of the token>"   # `canvass token hash` prints it
//!
//! [tls]                    # optional
//! cert = "server.pem"
//! key = "server.key"
//! client_ca = "ca.pem"     # optional: require client certificates (mutual TLS)
//!
//! [[executors]]            # optional: push these kinds to a service implementing ActionExecutor
//!                          # (or, with retries and copies, in a `--delivery` file: delivery::plan)
//! kinds = ["EMAIL", "POSTAL_MAIL"]
//! endpoint = "http://127.0.0.1:7001"
//! concurrency = 8          # calls in flight to this endpoint
//! timeout_ms = 5000        # per attempt
//! ```
//!
//! Kinds without an executor are served to pullers (`ActionService.StreamActions`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use canvass_proto::v1;
use serde::Deserialize;

use crate::auth::Role;

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a bad field (the message names line and field).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What and where.
        message: String,
    },
}

/// The `[[tokens]]` of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the caller is: the actor recorded for what it changes.
    pub identity: String,
    /// What it may do.
    pub role: Role,
    /// Hex SHA-256 of the bearer token.
    pub sha256: String,
}

/// The `[tls]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate it signed.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// One `[[executors]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Action kinds pushed there, by name (`EMAIL`, `SALES_HANDOFF`...).
    pub kinds: Vec<String>,
    /// `http://host:port` (or `https://`).
    pub endpoint: String,
    /// Calls in flight to this endpoint at most.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Deadline of one attempt, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_concurrency() -> usize {
    8
}

fn default_timeout_ms() -> u64 {
    5000
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}

/// The gRPC settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest message accepted or sent, in bytes; larger ones get `RESOURCE_EXHAUSTED`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Callers.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// TLS, if any.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Executors to push actions to.
    #[serde(default)]
    pub executors: Vec<ExecutorConfig>,
    /// Submissions waiting for the engine at most; beyond it a call is refused with
    /// `RESOURCE_EXHAUSTED` (backpressure) instead of queueing without bound.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Where to serve Prometheus metrics (`host:port`), as `canvass run --metrics-addr`.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
}

/// Submissions waiting for the engine at most, by default.
pub const DEFAULT_QUEUE: usize = 16_384;

fn default_queue() -> usize {
    DEFAULT_QUEUE
}

/// Reads a settings file and checks it with `parse`; errors name the file.
pub(crate) fn load_with<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

impl GrpcConfig {
    /// Reads and checks a settings file; errors name the file, line and field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_with(path, Self::parse)
    }

    /// Parses and checks settings.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for (i, t) in config.tokens.iter().enumerate() {
            if t.identity.trim().is_empty() {
                return Err(format!("tokens[{i}].identity: required"));
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "tokens[{i}].sha256: expected 64 hex digits (the SHA-256 of the token), got {:?}",
                    t.sha256
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in config.executors.iter().enumerate() {
            if e.kinds.is_empty() {
                return Err(format!("executors[{i}].kinds: at least one action kind"));
            }
            for (j, k) in e.kinds.iter().enumerate() {
                if action_kind(k).is_none() {
                    return Err(format!(
                        "executors[{i}].kinds[{j}]: unknown action kind {k:?}"
                    ));
                }
                if !seen.insert(k.to_ascii_uppercase()) {
                    return Err(format!(
                        "executors[{i}].kinds[{j}]: {k} already has an executor"
                    ));
                }
            }
            crate::delivery::plan::check_executor(&format!("executors[{i}]"), e)?;
        }
        if config.queue == 0 {
            return Err("queue: at least 1".into());
        }
        Ok(config)
    }
}

/// An action kind by its short name (`EMAIL`) or full enum name (`ACTION_KIND_EMAIL`).
#[must_use]
pub fn action_kind(name: &str) -> Option<v1::ActionKind> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("ACTION_KIND_") {
        upper
    } else {
        format!("ACTION_KIND_{upper}")
    };
    v1::ActionKind::from_str_name(&full).filter(|k| *k != v1::ActionKind::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    #[test]
    fn reads_a_full_file() {
        let c = GrpcConfig::parse(&format!(
            "listen = \"127.0.0.1:7000\"\n[[tokens]]\nidentity = \"alice\"\nrole = \"approver\"\nsha256 = \"{HASH}\"\n[[executors]]\nkinds = [\"EMAIL\"]\nendpoint = \"http://127.0.0.1:7001\"\n"
        ))
        .unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.tokens[0].role, Role::Approver);
        assert_eq!(c.executors[0].concurrency, 8);
    }

    #[test]
    fn names_the_bad_field() {
        let e =
            GrpcConfig::parse("[[tokens]]\nidentity = \"a\"\nrole = \"boss\"\nsha256 = \"x\"\n")
                .unwrap_err();
        assert!(e.contains("role") && e.contains("line"), "{e}");
        let e =
            GrpcConfig::parse("[[tokens]]\nidentity = \"a\"\nrole = \"reader\"\nsha256 = \"x\"\n")
                .unwrap_err();
        assert!(e.starts_with("tokens[0].sha256"), "{e}");
        let e = GrpcConfig::parse("[[executors]]\nkinds = [\"FAX\"]\nendpoint = \"http://x:1\"\n")
            .unwrap_err();
        assert!(e.starts_with("executors[0].kinds[0]: unknown"), "{e}");
        let e = GrpcConfig::parse("[[executors]]\nkinds = [\"EMAIL\"]\nendpoint = \"x:1\"\n")
            .unwrap_err();
        assert!(e.starts_with("executors[0].endpoint"), "{e}");
    }

    #[test]
    fn kinds_by_short_or_full_name() {
        assert_eq!(action_kind("email"), Some(v1::ActionKind::Email));
        assert_eq!(
            action_kind("ACTION_KIND_SALES_HANDOFF"),
            Some(v1::ActionKind::SalesHandoff)
        );
        assert_eq!(action_kind("UNSPECIFIED"), None);
    }
}
