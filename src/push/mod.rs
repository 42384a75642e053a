//! Web Push: everything between a rendered payload and a push service's
//! answer. It never touches the store and never retries; it reports an
//! [`Outcome`] and leaves the decisions to its caller.
//!
//! - [`ece`]: RFC 8291 `aes128gcm` encryption.
//! - [`vapid`]: RFC 8292 `Authorization` headers, cached per origin.
//! - [`payload`]: the Declarative Web Push JSON browsers decrypt.
//! - [`policy`]: which endpoints may be pushed to (SSRF guard).
//! - [`sender`]: the shared HTTP/2 client.
//! - [`status`]: a response as an [`Outcome`].

pub mod ece;
pub mod payload;
pub mod policy;
pub mod sender;
pub mod status;
pub mod vapid;

pub use payload::PayloadTooLarge;
pub use policy::{EndpointPolicy, PolicyError};
pub use sender::{Message, PushClient, PushError};
pub use status::{Outcome, RetryCause};
pub use vapid::{VapidSigner, VapidSigners};
