//! Client TLS to etcd (`--etcd-ca`, `--etcd-cert`, `--etcd-key`), the same for both shells and
//! both stores: the PEM files are read and checked at start ([`EtcdTls::load`]; a bad file is
//! a usage error, exit status 2) and read again when they change on disk
//! ([`EtcdTls::current`]), so a rotated client certificate is used from the next connection
//! on without a restart. A file that cannot be read again, or no longer parses, is logged
//! once and the last good set is kept.
//!
//! One TLS stack: rustls (ring). The shells build their connectors from [`TlsMaterial`]: the
//! PEM bytes (etcd-client's gRPC channel parses them itself) or the [`rustls::ClientConfig`]
//! made of them ([`TlsMaterial::rustls_config`]: the v2 keys API, and the v3 JSON gateway of
//! `lainlet-smol`). Server certificates are always verified against `--etcd-ca`; there is no
//! fallback to plaintext or to an unverified connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::Cli;

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{flag} {}: {source}", path.display())]
    Read {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file holds no usable PEM object of the kind expected.
    #[error("{flag} {}: {reason}", path.display())]
    Parse {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The files do not make a TLS client configuration (e.g. a key that does not match).
    #[error("--etcd-cert/--etcd-key: {0}")]
    Config(String),
    /// TLS is asked for without a CA to verify etcd with.
    #[error(
        "TLS to etcd (an https:// endpoint, --etcd-cert or --etcd-key) needs --etcd-ca FILE: the \
         CA certificate that signed etcd's certificate"
    )]
    NoCa,
}

/// The file paths of the TLS flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    /// `--etcd-ca`.
    pub ca: PathBuf,
    /// `--etcd-cert` and `--etcd-key`, if given.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// One consistent read of the TLS files.
#[derive(Debug)]
pub struct TlsMaterial {
    /// Counts the reads that changed something (1 at start): a shell rebuilds its connector
    /// when it sees a new one.
    pub generation: u64,
    /// The CA certificate(s), PEM.
    pub ca_pem: Vec<u8>,
    /// The client certificate chain and key, PEM.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    config: Arc<rustls::ClientConfig>,
}

impl TlsMaterial {
    /// The rustls client configuration of these files (server verified against the CA,
    /// the client certificate presented if given; HTTP/1.1 only).
    pub fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}

/// A client configuration that trusts no server, for a connector that can do TLS but was
/// given no `--etcd-ca` (every `https://` connection then fails its verification).
pub fn trusting_nobody() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
}

/// When a file was last seen changed: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

/// The TLS files and their last good read.
#[derive(Debug)]
pub struct EtcdTls {
    paths: TlsPaths,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    stamps: Vec<Stamp>,
    material: Arc<TlsMaterial>,
    /// The stamps of a read that failed (logged once).
    failed: Option<Vec<Stamp>>,
}

impl EtcdTls {
    /// The TLS the command line asks for: `None` without `--etcd-ca`, `--etcd-cert` and an
    /// `https://` endpoint; else the files read and checked (the error is a usage error).
    pub fn from_cli(cli: &Cli) -> Result<Option<Arc<EtcdTls>>, TlsError> {
        let https = cli
            .etcd_endpoints()
            .iter()
            .any(|e| e.starts_with("https://"));
        let identity = cli.etcd_cert.clone().zip(cli.etcd_key.clone());
        let ca = match (&cli.etcd_ca, https || identity.is_some()) {
            (Some(ca), _) => ca.clone(),
            (None, true) => return Err(TlsError::NoCa),
            (None, false) => return Ok(None),
        };
        EtcdTls::load(TlsPaths { ca, identity }).map(|tls| Some(Arc::new(tls)))
    }

    /// Reads and checks the files of `paths`.
    pub fn load(paths: TlsPaths) -> Result<EtcdTls, TlsError> {
        let stamps = stamps(&paths);
        let material = Arc::new(read(&paths, 1)?);
        Ok(EtcdTls {
            paths,
            state: Mutex::new(State {
                stamps,
                material,
                failed: None,
            }),
        })
    }

    /// The files as they are now: read again if any changed since the last read (a failed
    /// read is logged once, and the last good material kept).
    pub fn current(&self) -> Arc<TlsMaterial> {
        let now = stamps(&self.paths);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now == state.stamps || state.failed.as_ref() == Some(&now) {
            return state.material.clone();
        }
        match read(&self.paths, state.material.generation + 1) {
            Ok(material) => {
                info!(
                    "etcd TLS: read {} again (changed on disk); the next connection uses it",
                    self.describe()
                );
                state.material = Arc::new(material);
                state.stamps = now;
                state.failed = None;
            }
            Err(e) => {
                warn!("etcd TLS: the files changed but cannot be used ({e}); keeping the last good ones");
                state.failed = Some(now);
            }
        }
        state.material.clone()
    }

    fn describe(&self) -> String {
        let mut files = vec![self.paths.ca.display().to_string()];
        if let Some((cert, key)) = &self.paths.identity {
            files.push(cert.display().to_string());
            files.push(key.display().to_string());
        }
        files.join(", ")
    }
}

fn stamps(paths: &TlsPaths) -> Vec<Stamp> {
    let stamp = |p: &Path| {
        let meta = std::fs::metadata(p).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut out = vec![stamp(&paths.ca)];
    if let Some((cert, key)) = &paths.identity {
        out.push(stamp(cert));
        out.push(stamp(key));
    }
    out
}

fn read_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

fn certificates(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let parse = |reason: String| TlsError::Parse {
        flag,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(format!("not a PEM certificate: {e}")))?;
    match certs.is_empty() {
        true => Err(parse(
            "no PEM certificate (BEGIN CERTIFICATE) in it".to_owned(),
        )),
        false => Ok(certs),
    }
}

/// Reads and checks the files, and builds the rustls configuration.
fn read(paths: &TlsPaths, generation: u64) -> Result<TlsMaterial, TlsError> {
    let ca_pem = read_file("--etcd-ca", &paths.ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates("--etcd-ca", &paths.ca, &ca_pem)? {
        roots.add(cert).map_err(|e| TlsError::Parse {
            flag: "--etcd-ca",
            path: paths.ca.clone(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let (config, identity_pem) = match &paths.identity {
        None => (builder.with_no_client_auth(), None),
        Some((cert_path, key_path)) => {
            let cert_pem = read_file("--etcd-cert", cert_path)?;
            let key_pem = read_file("--etcd-key", key_path)?;
            let chain = certificates("--etcd-cert", cert_path, &cert_pem)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Parse {
                flag: "--etcd-key",
                path: key_path.clone(),
                reason: format!("no PEM private key in it: {e}"),
            })?;
            let config = builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Config(e.to_string()))?;
            (config, Some((cert_pem, key_pem)))
        }
    };
    Ok(TlsMaterial {
        generation,
        ca_pem,
        identity_pem,
        config: Arc::new(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lainlet-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = EtcdTls::load(TlsPaths {
            ca: "/nonexistent/ca.pem".into(),
            identity: None,
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("--etcd-ca /nonexistent/ca.pem:"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let ca = temp("not-a-cert.pem", b"hello\n");
        let e = EtcdTls::load(TlsPaths {
            ca: ca.clone(),
            identity: None,
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::Parse {
                    flag: "--etcd-ca",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn tls_without_a_ca_is_a_usage_error() {
        use clap::Parser as _;
        let cli = Cli::parse_from(["lainlet", "--etcd", "https://127.0.0.1:2379"]);
        assert!(matches!(EtcdTls::from_cli(&cli), Err(TlsError::NoCa)));
        let plain = Cli::parse_from(["lainlet", "--etcd", "127.0.0.1:2379"]);
        assert!(EtcdTls::from_cli(&plain).unwrap().is_none());
    }
}
