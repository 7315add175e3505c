//! One line per guest request, at the level the operator chose: none,
//! failed requests only (the default), or every request; the same words
//! for `meta169 serve` and the agent.

use std::time::Duration;

/// Which guest requests get an access log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    /// Answers other than 2xx.
    #[default]
    Errors,
    All,
}

impl std::str::FromStr for AccessLog {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "off" => Ok(AccessLog::Off),
            "errors" => Ok(AccessLog::Errors),
            "all" => Ok(AccessLog::All),
            other => Err(format!(
                "access_log {other:?} is not one of off, errors, all"
            )),
        }
    }
}

impl AccessLog {
    /// Would an answer with `status` be logged?
    pub fn wants(self, status: u16) -> bool {
        match self {
            AccessLog::Off => false,
            AccessLog::Errors => !(200..300).contains(&status),
            AccessLog::All => true,
        }
    }

    /// Log one request of `guest` (an instance id, or a network and
    /// address): `why` is the error message of a failed one.
    pub fn record(self, path: &str, status: u16, guest: &str, took: Duration, why: Option<&str>) {
        let failed = !(200..300).contains(&status);
        let micros = took.as_micros();
        match (self, failed) {
            (AccessLog::Off, _) | (AccessLog::Errors, false) => {}
            (_, true) if status >= 500 => {
                tracing::error!(status, %path, %guest, micros, "{}", why.unwrap_or("failed"))
            }
            (_, true) => {
                tracing::info!(status, %path, %guest, micros, "{}", why.unwrap_or("refused"))
            }
            (AccessLog::All, false) => tracing::info!(status, %path, %guest, micros, "served"),
        }
    }
}
