//! Errors: [`RemoteError`] travels on the wire; [`RpcError`] is what a
//! caller gets back.

use serde::{Deserialize, Serialize};

/// An error the server reports instead of a reply body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// An at-most-once call stamped with another incarnation: the server
    /// restarted since the call was first sent. It was not executed by this
    /// incarnation; whether the old one executed it is unknown.
    #[error("server restarted since the call was first sent (not executed by the new incarnation)")]
    ServerRestarted,
    /// The server has no record of this client session although the client
    /// says it has seen replies (evicted after idling, or the server
    /// restarted). Not executed.
    #[error("server does not know this client session (evicted or restarted); not executed")]
    SessionExpired,
    /// The server has freed the saved reply of this call (below the
    /// client's acknowledgement or past the per-client table bound). Not
    /// re-executed; whether it ran once before is unknown.
    #[error("server no longer remembers the outcome of this call; not re-executed")]
    Expired,
    /// The at-most-once table is full of other clients. Not executed.
    #[error("server's at-most-once table is full; not executed")]
    Overloaded,
    /// The request body did not decode as this service's request type
    /// (usually client and server built from different versions). Not
    /// executed; the server closes the connection after this reply.
    #[error("server could not decode the request: {0}")]
    BadRequest(String),
    /// The reply did not fit in the maximum frame size.
    #[error("reply of {size} bytes exceeds the maximum frame of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    /// The handler panicked, was cancelled by shutdown, or its reply could
    /// not be encoded.
    #[error("server failed to produce a reply: {0}")]
    Internal(String),
}

/// The outcome of a failed call.
///
/// `Timeout`, `Unreachable` and `Protocol` leave the outcome unknown (the
/// request may have executed once, never twice for `call_once`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Every attempt timed out (the last failure was a timeout).
    #[error("call timed out on every attempt")]
    Timeout,
    /// No connection could be made or kept (the last failure was a refused
    /// or lost connection).
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// An at-most-once call whose server restarted before replying; see
    /// [`RemoteError::ServerRestarted`].
    #[error("server restarted before replying; the call may have executed once, not more")]
    ServerRestarted,
    /// The server answered with an error.
    #[error("remote error: {0}")]
    Remote(RemoteError),
    /// The peer broke the protocol (not a shoal-rpc server, wrong version,
    /// garbled frames).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request or the reply exceeds the maximum frame size.
    #[error("message of {size} bytes exceeds the maximum frame of {max} bytes")]
    TooLarge { size: usize, max: usize },
}

impl From<RemoteError> for RpcError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::ServerRestarted => RpcError::ServerRestarted,
            RemoteError::TooLarge { size, max } => RpcError::TooLarge {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                max: usize::try_from(max).unwrap_or(usize::MAX),
            },
            other => RpcError::Remote(other),
        }
    }
}
