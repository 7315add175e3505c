//! Extra trusted CA certificates for HTTPS clients (Neutron's
//! `auth_ca_cert`): read once at start, so a wrong path is an error then
//! and not a failed request later.

use std::path::{Path, PathBuf};

/// Why a CA bundle cannot be used; `what` says whose bundle it is.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    /// The file cannot be read.
    #[error("cannot read the {what} {}: {reason}", path.display())]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The file is not PEM certificates.
    #[error("{} is not a PEM CA bundle ({what}): {reason}", path.display())]
    NotPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// The certificates of a PEM bundle (`what`: whose, for messages).
pub fn ca_bundle(
    path: &Path,
    what: &'static str,
) -> Result<Vec<reqwest::Certificate>, CaBundleError> {
    let pem = std::fs::read(path).map_err(|e| CaBundleError::Unreadable {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| CaBundleError::NotPem {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A builder that trusts the bundle's certificates too, when one is given.
pub fn trusting(
    mut builder: reqwest::ClientBuilder,
    bundle: Option<&Path>,
    what: &'static str,
) -> Result<reqwest::ClientBuilder, CaBundleError> {
    if let Some(path) = bundle {
        for certificate in ca_bundle(path, what)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder)
}
