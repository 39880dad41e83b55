//! Errors of the API server and client.

use thiserror::Error;

/// What can fail while serving or calling the API.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The socket path is held by a live daemon.
    #[error("another nydusd is using the API socket {0} (it accepts connections); stop it or pick another --apisock")]
    SocketInUse(String),
    /// The socket path exists but is not a socket.
    #[error("{0} exists and is not a Unix socket; remove it or pick another --apisock")]
    NotASocket(String),
    /// Creating or binding the socket failed.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path or address.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Connecting to the daemon failed.
    #[error("cannot connect to {path}: {source} (is nydusd running with --apisock {path}?)")]
    Connect {
        /// The socket path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Sending the request or reading the response failed.
    #[error("API request failed: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon's answer is not a valid HTTP response.
    #[error("malformed response from the daemon: {0}")]
    BadResponse(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = ApiError::SocketInUse("/run/a.sock".into());
        assert!(e.to_string().contains("another nydusd is using"));
        let e = ApiError::Connect { path: "/x".into(), source: std::io::Error::from_raw_os_error(libc::ENOENT) };
        assert!(e.to_string().contains("is nydusd running with --apisock /x?"), "{e}");
    }
}
