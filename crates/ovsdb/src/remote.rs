//! OVSDB remotes as OVS spells them, and opening a stream to one.

use crate::OvsdbError;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Certificate files for `ssl:` remotes (OVN's `ovn_sb_private_key`,
/// `ovn_sb_certificate`, `ovn_sb_ca_cert`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsFiles {
    pub private_key: Option<PathBuf>,
    pub certificate: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
}

/// Where an OVSDB server listens.
#[derive(Clone, Debug, PartialEq)]
pub enum Remote {
    Tcp(String),
    Unix(PathBuf),
    Ssl(String, TlsFiles),
}

impl FromStr for Remote {
    type Err = OvsdbError;
    fn from_str(s: &str) -> Result<Self, OvsdbError> {
        let bad = || OvsdbError::BadRemote(s.to_string());
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Remote::Unix(PathBuf::from(path)));
        }
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        // HOST:PORT, where HOST may be an IPv6 address in brackets.
        if rest
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(bad());
        }
        match kind {
            "tcp" => Ok(Remote::Tcp(rest.to_string())),
            "ssl" => Ok(Remote::Ssl(rest.to_string(), TlsFiles::default())),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Tcp(a) => write!(f, "tcp:{a}"),
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Ssl(a, _) => write!(f, "ssl:{a}"),
        }
    }
}

/// A connected byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

impl Remote {
    /// Attach TLS files (for `ssl:`; ignored otherwise).
    pub fn with_tls(self, files: TlsFiles) -> Remote {
        match self {
            Remote::Ssl(a, _) => Remote::Ssl(a, files),
            other => other,
        }
    }

    /// Check what can be checked before connecting: the TLS files of an
    /// `ssl:` remote are there and usable. A missing CA file does not fix
    /// itself; a server that is down may.
    pub fn check(&self) -> Result<(), OvsdbError> {
        match self {
            Remote::Ssl(_, files) => {
                tls_config(files)
                    .map(|_| ())
                    .map_err(|reason| OvsdbError::Tls {
                        remote: self.to_string(),
                        reason,
                    })
            }
            _ => Ok(()),
        }
    }

    pub(crate) async fn open(&self) -> Result<Box<dyn Stream>, OvsdbError> {
        let connect_error = |e: std::io::Error| OvsdbError::Connect {
            remote: self.to_string(),
            reason: e.to_string(),
        };
        match self {
            Remote::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(connect_error)?;
                let _ = s.set_nodelay(true);
                Ok(Box::new(s))
            }
            Remote::Unix(path) => Ok(Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_error)?,
            )),
            Remote::Ssl(addr, files) => {
                let config = tls_config(files).map_err(|reason| OvsdbError::Tls {
                    remote: self.to_string(),
                    reason,
                })?;
                let tcp = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(connect_error)?;
                let _ = tcp.set_nodelay(true);
                let host = addr
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_matches(['[', ']']))
                    .unwrap_or(addr);
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| OvsdbError::Tls {
                        remote: self.to_string(),
                        reason: e.to_string(),
                    })?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(connect_error)?;
                Ok(Box::new(tls))
            }
        }
    }
}

fn tls_config(files: &TlsFiles) -> Result<tokio_rustls::rustls::ClientConfig, String> {
    use tokio_rustls::rustls;
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let ca = files
        .ca_cert
        .as_ref()
        .ok_or("ssl: needs a CA certificate (ovn_sb_ca_cert)")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut read(ca)?.as_slice()) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)));
    match (&files.certificate, &files.private_key) {
        (Some(cert), Some(key)) => {
            let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
                .map_err(|e| format!("{}: {e}", key.display()))?
                .ok_or_else(|| format!("{}: no private key found", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Verifies the server's chain against the CA but not its name: OVS does
/// the same, and certificates made by `ovs-pki` carry no subject names a
/// client could match.
#[derive(Debug)]
struct ChainOnly(Arc<tokio_rustls::rustls::client::WebPkiServerVerifier>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        intermediates: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
        server_name: &tokio_rustls::rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        use tokio_rustls::rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ovs_remotes() {
        assert_eq!(
            "tcp:127.0.0.1:6642".parse::<Remote>().unwrap(),
            Remote::Tcp("127.0.0.1:6642".into())
        );
        assert_eq!(
            "tcp:[::1]:6642".parse::<Remote>().unwrap(),
            Remote::Tcp("[::1]:6642".into())
        );
        assert_eq!(
            "unix:/run/ovn/ovnsb_db.sock".parse::<Remote>().unwrap(),
            Remote::Unix("/run/ovn/ovnsb_db.sock".into())
        );
        assert!(matches!(
            "ssl:10.0.0.1:6642".parse::<Remote>().unwrap(),
            Remote::Ssl(..)
        ));
        for bad in [
            "tcp:127.0.0.1",
            "udp:1.2.3.4:5",
            "unix:",
            "tcp::6642",
            "127.0.0.1:6642",
        ] {
            assert!(bad.parse::<Remote>().is_err(), "{bad}");
        }
    }
}
