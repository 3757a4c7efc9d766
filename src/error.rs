//! One error type for the whole program: a kind that decides retries and exit codes, and a
//! message written for the user (what went wrong, and what to do next).
//!
//! Only [`ErrorKind::Unavailable`] is retried by the runner and the client; every other kind is
//! definite. `Usage` maps to exit code 2, everything else to 1.

use std::fmt;

/// What kind of failure this is. Tests assert kinds, not prose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad command line, bad script syntax, bad verb arguments.
    Usage,
    /// Bad or missing configuration (profile, connection config).
    Config,
    /// Wrong credentials or an expired token.
    Auth,
    /// Something that may work if tried again: a server that cannot be reached, a lost connection.
    Unavailable,
    /// An unknown connection, flow, table or field.
    NotFound,
    /// A schema problem: a missing primary key, an incompatible type.
    Schema,
    /// Bad data: a value that cannot be converted, a user function that failed.
    Data,
    /// One record refused: by the target (a constraint, a value out of range or of the wrong
    /// type) or by a processor (a value it cannot convert). The one kind
    /// `skip_error_event_by_limit` skips.
    Rejected,
    /// A feature the chosen backend does not offer.
    Unsupported,
    /// The server answered with an error of its own (`code` other than `ok`).
    Remote,
    /// A bug or an impossible state.
    Internal,
}

impl ErrorKind {
    const ALL: [(ErrorKind, &'static str); 11] = [
        (ErrorKind::Usage, "usage"),
        (ErrorKind::Config, "config"),
        (ErrorKind::Auth, "auth"),
        (ErrorKind::Unavailable, "unavailable"),
        (ErrorKind::NotFound, "not_found"),
        (ErrorKind::Schema, "schema"),
        (ErrorKind::Data, "data"),
        (ErrorKind::Rejected, "rejected"),
        (ErrorKind::Unsupported, "unsupported"),
        (ErrorKind::Remote, "remote"),
        (ErrorKind::Internal, "internal"),
    ];

    /// The kind as a word, as the engine's envelope carries it (`kind`).
    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(k, _)| *k == self).map(|(_, s)| *s).unwrap_or("internal")
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, w)| *w == s).map(|(k, _)| *k)
    }
}

/// The error: a kind and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    pub fn usage(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, m)
    }
    pub fn config(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, m)
    }
    pub fn auth(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Auth, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn schema(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Schema, m)
    }
    pub fn data(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, m)
    }
    pub fn rejected(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Rejected, m)
    }
    pub fn unsupported(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, m)
    }
    pub fn remote(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Remote, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, m)
    }
    /// Prefix the message with context, keeping the kind.
    pub fn context(mut self, c: impl fmt::Display) -> Self {
        self.message = format!("{c}: {}", self.message);
        self
    }
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Usage => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// I/O errors by kind: a refused, reset or timed-out connection may work if tried again;
/// "permission denied", "not found" and a full disk do not, and stop at once.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::TimedOut
            | K::Interrupted
            | K::WouldBlock
            | K::AddrInUse
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown => ErrorKind::Unavailable,
            K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::Config,
            K::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::data(format!("invalid JSON: {e}"))
    }
}

/// `bail!(kind, "...")`-style helper used in connectors: `err!(not_found, "no table {t}")`.
#[macro_export]
macro_rules! err {
    ($kind:ident, $($arg:tt)*) => { $crate::error::Error::$kind(format!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified_by_kind() {
        let e = |k| Error::from(std::io::Error::from(k)).kind;
        assert_eq!(e(std::io::ErrorKind::ConnectionRefused), ErrorKind::Unavailable);
        assert_eq!(e(std::io::ErrorKind::PermissionDenied), ErrorKind::Config);
        assert_eq!(e(std::io::ErrorKind::NotFound), ErrorKind::NotFound);
        assert!(!Error::from(std::io::Error::from(std::io::ErrorKind::StorageFull)).is_transient());
    }
}
