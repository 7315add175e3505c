//! Store URLs: which backend, where, and how to connect. Forgiving where
//! the intent is plain (`sqlite:/abs`, `sqlite:///abs`, `sqlite://rel`, a
//! bare path), and when a URL is refused the message names the forms that
//! work. PostgreSQL URLs take libpq's TLS parameters (`sslmode`,
//! `sslrootcert`, `sslcert`, `sslkey`), which tokio-postgres does not parse.

use crate::postgres::tls::{SslMode, TlsSettings};
use crate::StoreError;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How long opening a PostgreSQL connection may take unless the URL says
/// (`connect_timeout`): a replica must notice an unreachable database
/// quickly, not after the kernel's TCP retries.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed store URL.
#[derive(Debug)]
pub enum StoreUrl {
    /// `sqlite::memory:`: private to the process, gone when it ends.
    SqliteMemory,
    /// A SQLite database file.
    SqliteFile(PathBuf),
    /// A PostgreSQL database.
    Postgres(Box<PostgresUrl>),
}

/// A PostgreSQL URL split into what tokio-postgres takes and the TLS
/// settings meta169 applies itself.
#[derive(Debug)]
pub struct PostgresUrl {
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
}

/// Parameters taken out of the query string before tokio-postgres sees it.
const TLS_PARAMETERS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        let bad = |why: &str| StoreError::BadUrl {
            url: redact(url),
            why: why.to_string(),
        };
        if url.trim().is_empty() {
            return Err(bad("it is empty"));
        }
        if url == "sqlite::memory:" {
            return Ok(StoreUrl::SqliteMemory);
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            // sqlite:///abs and sqlite://rel (the URL forms), sqlite:/abs and
            // sqlite:rel (the short ones) all name a file.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad("it names no file"));
            }
            if path.contains('?') {
                return Err(bad("SQLite URLs take no parameters"));
            }
            return Ok(StoreUrl::SqliteFile(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return parse_postgres(url).map(|p| StoreUrl::Postgres(Box::new(p)));
        }
        if let Some((scheme, _)) = url.split_once(':') {
            let looks_like_scheme = !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic());
            if looks_like_scheme && !url.starts_with('/') {
                return Err(bad(&format!("{scheme:?} is not a store meta169 knows")));
            }
        }
        Ok(StoreUrl::SqliteFile(PathBuf::from(url)))
    }
}

fn parse_postgres(url: &str) -> Result<PostgresUrl, StoreError> {
    let bad = |why: String| StoreError::BadUrl {
        url: redact(url),
        why,
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut tls = std::collections::HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if TLS_PARAMETERS.contains(&key) {
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| bad(format!("{key} is not valid UTF-8")))?;
            tls.insert(key, value.into_owned());
        } else {
            kept.push(pair);
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| {
        bad(format!(
            "not a PostgreSQL URL tokio-postgres understands: {e}"
        ))
    })?;
    if config.get_hosts().is_empty() {
        return Err(bad("it names no host".into()));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("meta169");
    }
    config.keepalives(true);
    let mode = match tls.get("sslmode").map(String::as_str) {
        None | Some("prefer") | Some("allow") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some(other) => {
            return Err(bad(format!(
            "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
        )))
        }
    };
    let tls = TlsSettings::new(
        mode,
        tls.get("sslrootcert").map(PathBuf::from),
        tls.get("sslcert").map(PathBuf::from),
        tls.get("sslkey").map(PathBuf::from),
    )
    .map_err(bad)?;
    Ok(PostgresUrl { config, tls })
}

/// The URL with any password replaced, for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = format!("{scheme}://");
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                out.push_str(&format!("{user}:***@{host}"));
            } else {
                out.push_str(&format!("{user}@{host}"));
            }
        }
        None => out.push_str(authority),
    }
    // `password=` may also come as a query parameter.
    let mut tail = tail.to_string();
    if let Some((path, query)) = tail.clone().split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***".to_string(),
                _ => pair.to_string(),
            })
            .collect();
        tail = format!("{path}?{}", query.join("&"));
    }
    out.push_str(&tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(url: &str) -> PathBuf {
        match StoreUrl::parse(url) {
            Ok(StoreUrl::SqliteFile(p)) => p,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn sqlite_urls_in_every_common_form() {
        assert_eq!(
            file("sqlite:///var/lib/m.db"),
            PathBuf::from("/var/lib/m.db")
        );
        assert_eq!(file("sqlite:/var/lib/m.db"), PathBuf::from("/var/lib/m.db"));
        assert_eq!(file("sqlite://m.db"), PathBuf::from("m.db"));
        assert_eq!(file("sqlite:m.db"), PathBuf::from("m.db"));
        assert_eq!(file("/var/lib/m.db"), PathBuf::from("/var/lib/m.db"));
        assert_eq!(file("m.db"), PathBuf::from("m.db"));
        assert!(matches!(
            StoreUrl::parse("sqlite::memory:"),
            Ok(StoreUrl::SqliteMemory)
        ));
    }

    #[test]
    fn refusals_name_the_forms_that_work() {
        for url in [
            "mysql://x/y",
            "sqlite:",
            "sqlite:///m.db?mode=ro",
            "",
            "redis:x",
        ] {
            let e = StoreUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains("use sqlite:/path/to/meta169.db"), "{url}: {e}");
        }
        let e = StoreUrl::parse("postgres://u:hunter2@db/x?sslmode=sometimes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode=sometimes"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn postgres_urls_keep_libpq_tls_parameters_for_meta169() {
        let url = "postgresql://meta:pw@127.0.0.1:5433/meta169?sslmode=require&application_name=x";
        let Ok(StoreUrl::Postgres(pg)) = StoreUrl::parse(url) else {
            panic!()
        };
        assert_eq!(pg.tls.mode(), SslMode::Require);
        assert_eq!(pg.config.get_ports(), &[5433]);
        assert_eq!(pg.config.get_dbname(), Some("meta169"));
        assert_eq!(pg.config.get_application_name(), Some("x"));
        assert_eq!(
            pg.config.get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
        // verify-full without a CA file cannot verify anything.
        let e = StoreUrl::parse("postgres://h/d?sslmode=verify-full")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslrootcert"), "{e}");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://meta:s3cret@db:5432/m?sslmode=require"),
            "postgres://meta:***@db:5432/m?sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/m?user=a&password=s3cret"),
            "postgres://db/m?user=a&password=***"
        );
        assert_eq!(redact("postgres://meta@db/m"), "postgres://meta@db/m");
        assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
    }
}
