//! What stops the agent. Each message says what to check.

/// An error that stops the agent (or a step it will retry).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A database could not be reached or refused a write.
    #[error("{what}: {reason}")]
    Database { what: String, reason: String },
    /// Configuration that cannot work.
    #[error("{0}")]
    Config(String),
    /// Netlink, namespaces or sockets failed.
    #[error("{0}")]
    Netlink(#[from] std::io::Error),
}

impl AgentError {
    /// A system error with what was being done.
    pub fn io(doing: impl std::fmt::Display, error: std::io::Error) -> AgentError {
        AgentError::Netlink(std::io::Error::new(
            error.kind(),
            format!("{doing}: {error}"),
        ))
    }

    /// A blocking task that did not finish (it panicked or was cancelled).
    pub fn task(error: tokio::task::JoinError) -> AgentError {
        AgentError::Netlink(std::io::Error::other(error.to_string()))
    }
}
