//! The WebSocket side of the browser listener: the handshake, with the
//! `Origin` check, and MQTT bytes in binary messages.
//!
//! async-tungstenite is the WebSocket implementation rumqttd's own listener
//! used (same version, so no new crate); the handshake runs inside each
//! connection's task under `connect_timeout`, never in the accept loop.

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio::net::TcpStream;

pub type Socket = WebSocketStream<TokioAdapter<TcpStream>>;

/// Subprotocols MQTT clients ask for, in our order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// A page of a web origin not in `websocket_origins` (answered 403).
    Origin(String),
    /// Not a WebSocket handshake, or the connection broke.
    Broken(String),
}

/// `Origin` as browsers send it, normalised like the configured origins
/// (`Url::origin`); `None` for an origin that is not an http(s) URL
/// (`null`, from a sandboxed frame or a file).
fn normalise(origin: &str) -> Option<String> {
    let url = url::Url::parse(origin).ok()?;
    matches!(url.scheme(), "http" | "https")
        .then(|| url.origin().ascii_serialization())
        .filter(|o| o != "null")
}

/// Decides a handshake from its request (tungstenite's `Callback`).
struct Gatekeeper<'a> {
    origins: &'a [String],
    /// The `Origin` it refused, if it did.
    refused: &'a mut Option<String>,
}

impl Callback for Gatekeeper<'_> {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        if let Some(origin) = request.headers().get("origin") {
            let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            let allowed = normalise(&text).is_some_and(|o| self.origins.contains(&o));
            if !allowed {
                *self.refused = Some(text);
                let mut refusal = ErrorResponse::new(Some(
                    "this page's origin may not open the notification server's WebSocket listener\n".into(),
                ));
                *refusal.status_mut() = StatusCode::FORBIDDEN;
                return Err(refusal);
            }
        }
        let asked: Vec<String> = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_ascii_lowercase())
            .collect();
        if let Some(chosen) = SUBPROTOCOLS.iter().find(|p| asked.iter().any(|a| a == *p)) {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
        }
        Ok(response)
    }
}

/// Answers the handshake on `stream`: refuses (403) a browser page whose
/// origin is not in `origins`, lets a client without `Origin` (not a
/// browser: it could send any) through to log in, and agrees on the `mqtt`
/// subprotocol when asked.
pub async fn accept(
    stream: TcpStream,
    origins: &[String],
    max_message: usize,
) -> Result<Socket, HandshakeError> {
    let mut refused = None;
    let gatekeeper = Gatekeeper {
        origins,
        refused: &mut refused,
    };
    let config = WebSocketConfig {
        max_message_size: Some(max_message),
        max_frame_size: Some(max_message),
        ..WebSocketConfig::default()
    };
    let result =
        async_tungstenite::tokio::accept_hdr_async_with_config(stream, gatekeeper, Some(config))
            .await;
    match (result, refused) {
        (Ok(socket), _) => Ok(socket),
        (Err(_), Some(origin)) => Err(HandshakeError::Origin(origin)),
        (Err(e), None) => Err(HandshakeError::Broken(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_compared_in_their_normal_form() {
        assert_eq!(
            normalise("HTTPS://App.Example.com:443").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            normalise("http://localhost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(normalise("null"), None);
        assert_eq!(normalise("file:///tmp/x.html"), None);
        assert_eq!(normalise("chrome-extension://abc"), None);
    }
}
