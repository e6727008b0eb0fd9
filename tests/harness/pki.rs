//! Certificates made by the test, with the `openssl` command line (OpenSSL 3): a CA, server
//! certificates for `127.0.0.1` (valid, or already expired), client certificates, all P-256
//! keys in PEM files of one temporary directory. For etcd with TLS see
//! [`EtcdServer::with_tls`](super::etcd::EtcdServer::with_tls).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::util::TempDir;

/// A certificate and its key (PEM files).
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
}

/// A directory of test certificates.
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A server at `127.0.0.1`, `127.0.0.2` or `localhost` (also usable as a client).
    Server,
    /// A client.
    Client,
}

impl TestPki {
    /// An empty directory for certificates.
    pub fn new() -> io::Result<TestPki> {
        Ok(TestPki {
            dir: TempDir::new("pki")?,
        })
    }

    /// The path of `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A self-signed CA `name` (`name.pem`, `name.key`).
    pub fn ca(&self, name: &str) -> io::Result<CertFiles> {
        let files = self.files(name);
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &s(&files.key),
            "-out",
            &s(&files.cert),
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
        ])?;
        Ok(files)
    }

    /// A certificate `name` with common name `cn` for `usage`, signed by `ca`, valid for
    /// `days` from now (`-1`: it expired a day ago).
    pub fn issue(
        &self,
        name: &str,
        cn: &str,
        usage: Usage,
        ca: &CertFiles,
        days: i32,
    ) -> io::Result<CertFiles> {
        let files = self.files(name);
        let csr = self.path(&format!("{name}.csr"));
        let ext = self.path(&format!("{name}.ext"));
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &s(&files.key),
            "-out",
            &s(&csr),
            "-subj",
            &format!("/CN={cn}"),
        ])?;
        let extensions = match usage {
            Usage::Server => {
                "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost\n\
                 extendedKeyUsage=serverAuth,clientAuth\n"
            }
            Usage::Client => "extendedKeyUsage=clientAuth\n",
        };
        std::fs::write(&ext, extensions)?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&ca.cert),
            "-CAkey",
            &s(&ca.key),
            "-CAcreateserial",
            "-out",
            &s(&files.cert),
            "-days",
            &days.to_string(),
            "-extfile",
            &s(&ext),
        ])?;
        Ok(files)
    }

    fn files(&self, name: &str) -> CertFiles {
        CertFiles {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
        }
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn openssl(args: &[&str]) -> io::Result<()> {
    let out = Command::new("openssl").args(args).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("openssl {}: {e} (is openssl installed?)", args[0]),
        )
    })?;
    match out.status.success() {
        true => Ok(()),
        false => Err(io::Error::other(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))),
    }
}
