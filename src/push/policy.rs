//! The endpoint policy (DESIGN §3): a subscription's endpoint is a URL chosen
//! by whoever subscribed, so without checks the daemon would POST wherever a
//! browser — or an attacker posing as one — tells it to.
//!
//! Three gates: `https` only; the host must be a known push service; and the
//! address the host resolves to is checked *when connecting* (a DNS name
//! pointing at 127.0.0.1 or 169.254.169.254 is refused, not only a literal IP).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::EndpointSettings;
use crate::model::{Endpoint, HostPattern};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("endpoint must use https (axion_push.endpoints.allow_http is false)")]
    NotHttps,
    #[error("endpoint scheme '{0}' is not http(s)")]
    BadScheme(String),
    #[error("push service host '{0}' is not allowed (axion_push.endpoints.allow_hosts)")]
    HostNotAllowed(String),
    #[error(
        "push service address {0} is loopback, private or link-local (axion_push.endpoints.allow_private_addresses is false)"
    )]
    PrivateAddress(IpAddr),
}

#[derive(Debug, Clone)]
pub struct EndpointPolicy {
    hosts: Vec<HostPattern>,
    allow_http: bool,
    allow_private: bool,
}

impl EndpointPolicy {
    pub fn new(settings: &EndpointSettings) -> Self {
        Self {
            hosts: settings
                .allow_hosts
                .iter()
                .filter_map(|h| HostPattern::parse(h).ok())
                .collect(),
            allow_http: settings.allow_http,
            allow_private: settings.allow_private_addresses,
        }
    }

    /// The checks that need no DNS: scheme, host allow-list, literal IPs.
    pub fn check(&self, endpoint: &Endpoint) -> Result<(), PolicyError> {
        let url = endpoint.url();
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(PolicyError::NotHttps),
            other => return Err(PolicyError::BadScheme(other.to_owned())),
        }
        let host = url.host_str().unwrap_or_default();
        if !self.hosts.iter().any(|p| p.matches(host)) {
            return Err(PolicyError::HostNotAllowed(host.to_owned()));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !self.allow_private
            && !is_global(ip)
        {
            return Err(PolicyError::PrivateAddress(ip));
        }
        Ok(())
    }

    /// The resolver the HTTP client dials through; `None` when private
    /// addresses are allowed and the system resolver can be used as is.
    pub fn resolver(&self) -> Option<GuardedResolver> {
        (!self.allow_private).then_some(GuardedResolver)
    }
}

/// Resolves like the system does, then drops every address that is not
/// globally routable; a name with nothing left is refused.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver;

impl GuardedResolver {
    pub async fn resolve(
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        let (public, private): (Vec<_>, Vec<_>) =
            resolved.into_iter().partition(|a| is_global(a.ip()));
        if public.is_empty() {
            return match private.first() {
                Some(addr) => Err(Box::new(PolicyError::PrivateAddress(addr.ip()))),
                None => Err(format!("{host} has no address").into()),
            };
        }
        Ok(public)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = GuardedResolver::resolve(&host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// True for addresses a push service may have: not loopback, private,
/// link-local, unique-local, shared (CGNAT), multicast, documentation or
/// otherwise reserved — including IPv4 addresses wrapped in IPv6.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64) // 100.64.0.0/10 shared address space
        || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24 IETF assignments
        || (a == 198 && (b & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || a >= 240) // reserved
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_global_v4(v4);
    }
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // 100::/64 discard
}

/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible, NAT64 (`64:ff9b::/96`)
/// and 6to4 (`2002::/16`) addresses reach the IPv4 address inside them.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail(s[6], s[7]));
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(tail(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(tail(s[1], s[2]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], allow_http: bool, allow_private: bool) -> EndpointPolicy {
        EndpointPolicy::new(&EndpointSettings {
            allow_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allow_http,
            allow_private_addresses: allow_private,
        })
    }

    fn check(p: &EndpointPolicy, url: &str) -> Result<(), PolicyError> {
        p.check(&Endpoint::parse(url).unwrap())
    }

    #[test]
    fn the_default_policy_takes_the_big_push_services_only() {
        let p = EndpointPolicy::new(&EndpointSettings::default());
        for ok in [
            "https://fcm.googleapis.com/fcm/send/x",
            "https://updates.push.services.mozilla.com/wpush/v2/x",
            "https://web.push.apple.com/x",
            "https://wns2-par02p.notify.windows.com/w/?token=x",
        ] {
            assert_eq!(check(&p, ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check(&p, "https://evil.example/x"),
            Err(PolicyError::HostNotAllowed("evil.example".into()))
        );
        assert_eq!(
            check(&p, "http://fcm.googleapis.com/x"),
            Err(PolicyError::NotHttps)
        );
        assert_eq!(
            check(&p, "ftp://fcm.googleapis.com/x"),
            Err(PolicyError::BadScheme("ftp".into()))
        );
    }

    #[test]
    fn literal_private_addresses_are_refused_even_when_listed() {
        let p = policy(&["127.0.0.1", "169.254.169.254", "[::1]"], false, false);
        assert!(matches!(
            check(&p, "https://127.0.0.1/x"),
            Err(PolicyError::PrivateAddress(_))
        ));
        assert!(matches!(
            check(&p, "https://169.254.169.254/latest/meta-data"),
            Err(PolicyError::PrivateAddress(_))
        ));
        assert!(matches!(
            check(&p, "https://[::1]:8443/x"),
            Err(PolicyError::PrivateAddress(_))
        ));
        let open = policy(&["127.0.0.1"], true, true);
        assert_eq!(check(&open, "http://127.0.0.1:9/x"), Ok(()));
    }

    #[test]
    fn non_global_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip} counted as global");
        }
        for ip in [
            "142.250.74.10",
            "2a00:1450:4001:80b::200a",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_global(ip.parse().unwrap()), "{ip} counted as private");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connect_time() {
        let err = GuardedResolver::resolve("localhost").await.unwrap_err();
        assert!(err.to_string().contains("loopback, private"), "{err}");
    }
}
