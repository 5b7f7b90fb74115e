//! What a request can fail with, and the one place that chooses its HTTP status.
//!
//! Every handler returns `Result<_, ServiceError>`; [`ServiceError::status`] is an
//! exhaustive match, so a new kind of failure cannot be added without choosing its status,
//! and no call site picks a status number by hand. The body of every refusal is
//! `{"error": "<Display of the error>"}`; a WebSocket gets the same text as an `error`
//! message.

use crate::sdp::SdpError;
use hyper::StatusCode;
use std::time::Duration;

/// Why a request (or a WebSocket message) was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    /// The `Host` header (or an absolute request target) is missing, repeated or malformed.
    #[error("{0}")]
    BadHost(&'static str),
    /// `Host` does not name this device: a DNS-rebinding page names its own domain.
    #[error(
        "Host {0:?} does not name this device: use its address, localhost or its host name \
         (or start the service with --allow-host NAME)"
    )]
    UnknownHost(String),
    /// A WebSocket or state-changing request from another site's page (at most 100
    /// characters of its `Origin`).
    #[error(
        "Origin {0:?} is not this service's own (http://<Host>) (start the service with \
         --allow-origin ORIGIN to allow another)"
    )]
    BadOrigin(String),
    /// A token is configured and the request has none, or the wrong one.
    #[error("{}", .0.message())]
    Unauthorized(Denied),
    /// No such path.
    #[error("no such resource: {0}")]
    NotFound(String),
    /// No such session (`/whip/<id>`).
    #[error("unknown session {0:?}")]
    UnknownSession(String),
    /// The path exists, the method is not served there.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The body's media type is not the one the endpoint takes.
    #[error("expected Content-Type {expected}, got {got:?}")]
    UnsupportedMediaType { expected: &'static str, got: String },
    /// The body is (or says it is) larger than `max_body`.
    #[error("{}", body_too_large(*.len, *.max))]
    BodyTooLarge { len: Option<usize>, max: usize },
    /// The body did not arrive within `body_timeout`.
    #[error("request body not received within {:.1} s (body_timeout)", .0.as_secs_f64())]
    BodyTimeout(Duration),
    /// The body (or a WebSocket message) cannot be read as what the endpoint takes.
    #[error("{0}")]
    BadBody(String),
    /// The SDP of an offer does not parse.
    #[error("bad SDP: {0}")]
    BadSdp(SdpError),
    /// A trickle fragment (`PATCH /whip/<id>`) does not parse.
    #[error("bad fragment: {0}")]
    BadFragment(SdpError),
    /// A service limit on what clients hold is reached (see [`Held`]).
    #[error("{}", too_many(*.held, .limit, *.max))]
    TooMany {
        held: Held,
        /// The limit's `ServiceConfig` field.
        limit: &'static str,
        max: usize,
    },
    /// No stream of that name (`/whep/NAME`).
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    /// No sink of that name (`/whip/NAME`, `?sink=NAME`).
    #[error("unknown sink {0:?}")]
    UnknownSink(String),
    /// An `rtp://` sink already takes another session (one sender per port).
    #[cfg(feature = "media")]
    #[error("{0}")]
    SinkBusy(String),
    /// The stream's source has not yet shown its codec (no keyframe or SPS so far).
    #[cfg(feature = "media")]
    #[error("{0}")]
    StreamNotReady(String),
    /// The offer and the stream have nothing in common (no video section, no codec, ...).
    #[cfg(feature = "media")]
    #[error("{0}")]
    Unplayable(String),
    /// A page file asked with an `Accept-Encoding` that refuses gzip (the page is stored
    /// gzipped and the binary has no inflater).
    #[error(
        "the page is only served gzip-compressed and Accept-Encoding refuses gzip \
         (ask with Accept-Encoding: gzip, e.g. curl --compressed)"
    )]
    NotAcceptable,
    /// `GET /ws` without a WebSocket upgrade.
    #[error("/ws needs a WebSocket upgrade request")]
    UpgradeRequired,
    /// The service failed on its own (no description to answer with, no randomness).
    #[error("{0}")]
    Internal(String),
    /// The session's peer connection refused or failed (see [`ServiceError::status`]).
    #[error(transparent)]
    Peer(#[from] crate::Error),
}

/// Why a request was not let in by the token check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    Missing,
    Wrong,
}

impl Denied {
    fn message(self) -> &'static str {
        match self {
            Denied::Missing => {
                "this service needs a token: send Authorization: Bearer <token> (a WebSocket \
                 may use ?token=<token>; the page takes it from its address as #token=<token>, \
                 or from its Token field)"
            }
            Denied::Wrong => "wrong token",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3).
    pub(crate) fn challenge(self) -> &'static str {
        match self {
            Denied::Missing => "Bearer realm=\"smolrtc\"",
            Denied::Wrong => "Bearer realm=\"smolrtc\", error=\"invalid_token\"",
        }
    }
}

/// What a client holds too many of: a per-address limit is `429`, a global one `503`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// `max_connections`
    Connections,
    /// `max_connections_per_address`
    ConnectionsFromAddress,
    /// `max_slow_connections_per_address`: connections still sending their first request.
    SlowConnectionsFromAddress,
    /// `max_websockets`
    WebSockets,
    /// `max_websockets_per_address`
    WebSocketsFromAddress,
    /// `max_sessions`
    Sessions,
    /// `max_sessions_per_address`
    SessionsFromAddress,
}

impl Held {
    fn per_address(self) -> bool {
        match self {
            Held::ConnectionsFromAddress
            | Held::SlowConnectionsFromAddress
            | Held::WebSocketsFromAddress
            | Held::SessionsFromAddress => true,
            Held::Connections | Held::WebSockets | Held::Sessions => false,
        }
    }

    /// A refused connection (rather than a request on one): the client may retry soon.
    pub(crate) fn is_connection(self) -> bool {
        matches!(
            self,
            Held::Connections | Held::ConnectionsFromAddress | Held::SlowConnectionsFromAddress
        )
    }
}

fn too_many(held: Held, limit: &str, max: usize) -> String {
    let what = match held {
        Held::Connections => "connections",
        Held::ConnectionsFromAddress => "connections from your address",
        Held::SlowConnectionsFromAddress => {
            "connections from your address still sending their first request"
        }
        Held::WebSockets => "WebSocket connections",
        Held::WebSocketsFromAddress => "WebSocket connections from your address",
        Held::Sessions => "sessions",
        Held::SessionsFromAddress => "sessions from your address",
    };
    let retry = if held.is_connection() {
        "; try again"
    } else {
        ""
    };
    format!("too many {what} ({limit} = {max}){retry}")
}

fn body_too_large(len: Option<usize>, max: usize) -> String {
    match len {
        Some(len) => format!("body of {len} bytes exceeds max_body ({max})"),
        None => format!("body exceeds max_body ({max} bytes)"),
    }
}

impl ServiceError {
    /// The one mapping of failures to HTTP statuses:
    ///
    /// | error | status |
    /// | --- | --- |
    /// | `BadHost`, `BadBody`, `BadSdp`, `BadFragment` | 400 |
    /// | `Unauthorized` | 401 |
    /// | `BadOrigin` | 403 |
    /// | `NotFound`, `UnknownSession`, `UnknownStream`, `UnknownSink` | 404 |
    /// | `MethodNotAllowed` | 405 |
    /// | `NotAcceptable` | 406 |
    /// | `SinkBusy` | 409 |
    /// | `BodyTimeout` | 408 |
    /// | `BodyTooLarge` | 413 |
    /// | `UnsupportedMediaType` | 415 |
    /// | `UnknownHost` | 421 |
    /// | `UpgradeRequired` | 426 |
    /// | `TooMany` per client address | 429 |
    /// | `TooMany` in all | 503 |
    /// | `Internal` | 500 |
    /// | `Peer`: see [`peer_status`] | 400, 409, 422, 500 |
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ServiceError::BadHost(_)
            | ServiceError::BadBody(_)
            | ServiceError::BadSdp(_)
            | ServiceError::BadFragment(_) => StatusCode::BAD_REQUEST,
            ServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServiceError::BadOrigin(_) => StatusCode::FORBIDDEN,
            ServiceError::NotFound(_)
            | ServiceError::UnknownSession(_)
            | ServiceError::UnknownStream(_)
            | ServiceError::UnknownSink(_) => StatusCode::NOT_FOUND,
            #[cfg(feature = "media")]
            ServiceError::SinkBusy(_) => StatusCode::CONFLICT,
            #[cfg(feature = "media")]
            ServiceError::StreamNotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            #[cfg(feature = "media")]
            ServiceError::Unplayable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ServiceError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ServiceError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ServiceError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServiceError::UnknownHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ServiceError::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            ServiceError::TooMany { held, .. } if held.per_address() => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ServiceError::TooMany { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServiceError::Peer(e) => peer_status(e),
        }
    }

    /// The JSON body of the refusal.
    pub(crate) fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.to_string() })
    }

    /// What the log line says: the message, with any ICE password a bad SDP line quotes
    /// taken out; never the token.
    pub(crate) fn log_text(&self) -> String {
        match self {
            ServiceError::Unauthorized(Denied::Missing) => "no token".into(),
            ServiceError::Unauthorized(Denied::Wrong) => "wrong token".into(),
            e => crate::sdp::redact_secrets(&e.to_string()),
        }
    }
}

/// The session's peer connection's failures: the request's fault (`400`: wrong or out of
/// turn; `422`: it would pass a per-session limit such as remote candidates or channels,
/// named in the message), the session's (`409`: its connection closed meanwhile) or the
/// service's (`500`).
fn peer_status(e: &crate::Error) -> StatusCode {
    use crate::Error;
    match e {
        Error::Sdp(_) | Error::InvalidArgument(_) | Error::InvalidState(_) => {
            StatusCode::BAD_REQUEST
        }
        Error::Limit(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Closed => StatusCode::CONFLICT,
        Error::FingerprintMismatch
        | Error::Dtls(_)
        | Error::Ice(_)
        | Error::Sctp(_)
        | Error::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp_error() -> SdpError {
        crate::sdp::parse("v=0\r\nbogus\r\n").unwrap_err()
    }

    /// The whole table: every kind, its status and its message.
    #[test]
    fn every_error_has_its_status_and_message() {
        let too_many = |held, limit| ServiceError::TooMany {
            held,
            limit,
            max: 3,
        };
        let cases: Vec<(ServiceError, u16, &str)> = vec![
            (ServiceError::BadHost("malformed Host header"), 400, "malformed Host header"),
            (ServiceError::BadBody("body is not UTF-8".into()), 400, "body is not UTF-8"),
            (ServiceError::BadSdp(sdp_error()), 400, "bad SDP: line 2"),
            (ServiceError::BadFragment(sdp_error()), 400, "bad fragment: line 2"),
            (ServiceError::Unauthorized(Denied::Missing), 401, "this service needs a token"),
            (ServiceError::Unauthorized(Denied::Wrong), 401, "wrong token"),
            (ServiceError::BadOrigin("http://evil.example".into()), 403, "\"http://evil.example\" is not"),
            (ServiceError::NotFound("/nope".into()), 404, "no such resource: /nope"),
            (ServiceError::UnknownSession("ab".into()), 404, "unknown session \"ab\""),
            (ServiceError::UnknownSink("cam".into()), 404, "unknown sink \"cam\""),
            (
                ServiceError::MethodNotAllowed { method: "PUT".into(), path: "/whip".into() },
                405,
                "PUT is not allowed on /whip",
            ),
            (ServiceError::BodyTimeout(Duration::from_millis(1500)), 408, "within 1.5 s (body_timeout)"),
            (ServiceError::BodyTooLarge { len: Some(9), max: 8 }, 413, "body of 9 bytes exceeds max_body (8)"),
            (ServiceError::BodyTooLarge { len: None, max: 8 }, 413, "body exceeds max_body (8 bytes)"),
            (
                ServiceError::UnsupportedMediaType { expected: "application/sdp", got: "text/plain".into() },
                415,
                "expected Content-Type application/sdp, got \"text/plain\"",
            ),
            (ServiceError::UnknownHost("evil.example".into()), 421, "\"evil.example\" does not name this device"),
            (ServiceError::UpgradeRequired, 426, "/ws needs a WebSocket upgrade request"),
            (too_many(Held::Connections, "max_connections"), 503, "too many connections (max_connections = 3); try again"),
            (
                too_many(Held::ConnectionsFromAddress, "max_connections_per_address"),
                429,
                "too many connections from your address (max_connections_per_address = 3); try again",
            ),
            (
                too_many(Held::SlowConnectionsFromAddress, "max_slow_connections_per_address"),
                429,
                "still sending their first request (max_slow_connections_per_address = 3); try again",
            ),
            (too_many(Held::WebSockets, "max_websockets"), 503, "too many WebSocket connections (max_websockets = 3)"),
            (
                too_many(Held::WebSocketsFromAddress, "max_websockets_per_address"),
                429,
                "too many WebSocket connections from your address (max_websockets_per_address = 3)",
            ),
            (too_many(Held::Sessions, "max_sessions"), 503, "too many sessions (max_sessions = 3)"),
            (
                too_many(Held::SessionsFromAddress, "max_sessions_per_address"),
                429,
                "too many sessions from your address (max_sessions_per_address = 3)",
            ),
            (ServiceError::Internal("no local description".into()), 500, "no local description"),
        ];
        for (e, status, text) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            let body = e.body();
            let message = body["error"].as_str().unwrap();
            assert!(message.contains(text), "{e:?}: {message:?} lacks {text:?}");
        }
    }

    #[test]
    fn peer_errors_map_exhaustively() {
        use crate::Error;
        let io = || Error::Io(std::io::Error::other("x"));
        let cases = [
            (Error::Sdp(sdp_error()), 400),
            (Error::InvalidArgument("x".into()), 400),
            (Error::InvalidState("x".into()), 400),
            (
                Error::Limit(crate::LimitError::new("max_remote_candidates", 100, "x")),
                422,
            ),
            (Error::Closed, 409),
            (Error::FingerprintMismatch, 500),
            (Error::Dtls(crate::DtlsError::Handshake("x".into())), 500),
            (Error::Ice(crate::IceError::NoAddress), 500),
            (Error::Sctp(crate::SctpError::Closed), 500),
            (io(), 500),
        ];
        for (e, status) in cases {
            let text = e.to_string();
            let e = ServiceError::from(e);
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            // The peer's message goes out as it is.
            assert_eq!(e.body()["error"], text.as_str());
        }
    }

    #[test]
    fn log_text_never_holds_the_token_or_an_ice_password() {
        assert_eq!(
            ServiceError::Unauthorized(Denied::Wrong).log_text(),
            "wrong token"
        );
        assert_eq!(
            ServiceError::Unauthorized(Denied::Missing).log_text(),
            "no token"
        );
        let e = ServiceError::BadBody("line 3: a=ice-pwd:s3cr3tpassw0rdxxxxxxxxx bad".into());
        assert!(!e.log_text().contains("s3cr3t"), "{}", e.log_text());
    }
}
