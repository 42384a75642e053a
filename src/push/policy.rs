//! The endpoint policy (DESIGN §3): a subscription's endpoint is a URL chosen
//! by whoever subscribed, so without checks the daemon would POST wherever a
//! browser — or an attacker posing as one — tells it to.
//!
//! The gates: `https` only; no user name or password in the URL (a push
//! service never needs one, and they would be sent along); the host must be
//! a known push service, on an allowed port (443 unless widened, so an
//! allowed host's other services are out of reach); and the address the host
//! resolves to is checked *when connecting* (a DNS name pointing at
//! 127.0.0.1 or 169.254.169.254 is refused, not only a literal IP) against
//! the IANA special-purpose registries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::EndpointSettings;
use crate::model::{Endpoint, HostPattern};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("endpoint must use https (axion_push.endpoints.allow_http is false)")]
    NotHttps,
    #[error("endpoint scheme '{0}' is not http(s)")]
    BadScheme(String),
    /// The credentials themselves are never repeated.
    #[error("endpoint must not carry a user name or password")]
    UserInfo,
    #[error("push service host '{0}' is not allowed (axion_push.endpoints.allow_hosts)")]
    HostNotAllowed(String),
    #[error("push service port {0} is not allowed (axion_push.endpoints.allow_ports)")]
    PortNotAllowed(u16),
    #[error(
        "push service address {0} is not globally reachable: {range}; loopback, private and other special-purpose addresses are refused (axion_push.endpoints.allow_private_addresses is false)",
        range = special_range(.0)
    )]
    PrivateAddress(IpAddr),
}

#[derive(Debug, Clone)]
pub struct EndpointPolicy {
    hosts: Vec<HostPattern>,
    /// Sorted: a test config allows all 65535.
    ports: Vec<u16>,
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
            ports: {
                let mut ports = settings.allow_ports.clone();
                ports.sort_unstable();
                ports.dedup();
                ports
            },
            allow_http: settings.allow_http,
            allow_private: settings.allow_private_addresses,
        }
    }

    /// The checks that need no DNS: scheme, credentials, host allow-list,
    /// port, literal IPs.
    pub fn check(&self, endpoint: &Endpoint) -> Result<(), PolicyError> {
        let url = endpoint.url();
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(PolicyError::NotHttps),
            other => return Err(PolicyError::BadScheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(PolicyError::UserInfo);
        }
        let host = url.host_str().unwrap_or_default();
        if !self.hosts.iter().any(|p| p.matches(host)) {
            return Err(PolicyError::HostNotAllowed(host.to_owned()));
        }
        // http and https always have a known default port.
        let port = url.port_or_known_default().unwrap_or(443);
        if self.ports.binary_search(&port).is_err() {
            return Err(PolicyError::PortNotAllowed(port));
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

/// True for addresses a push service may have: none of the blocks the IANA
/// special-purpose registries list (loopback, private, shared, link-local,
/// documentation, benchmarking, translation and tunnelling prefixes…), no
/// multicast, and for IPv6 only the global unicast space; an IPv4 address
/// written in IPv6 (mapped, or behind the global NAT64 prefix) is judged as
/// the IPv4 address it is.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

/// An address block: its first address and prefix length.
struct Block<A> {
    start: A,
    len: u32,
    name: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u32, name: &'static str) -> Block<u32> {
    Block {
        start: u32::from_be_bytes([a, b, c, d]),
        len,
        name,
    }
}

const fn v6(segments: [u16; 8], len: u32, name: &'static str) -> Block<u128> {
    let mut start = 0u128;
    let mut i = 0;
    while i < 8 {
        start = (start << 16) | segments[i] as u128;
        i += 1;
    }
    Block { start, len, name }
}

impl Block<u32> {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - self.len).unwrap_or(0);
        u32::from(ip) & mask == self.start
    }
}

impl Block<u128> {
    fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = u128::MAX.checked_shl(128 - self.len).unwrap_or(0);
        u128::from(ip) & mask == self.start
    }
}

/// Every block of the IANA IPv4 Special-Purpose Address Registry
/// (<https://www.iana.org/assignments/iana-ipv4-special-registry/>, its
/// CSV as published in 2026), and multicast from the IPv4 Multicast Address
/// Space registry. The more specific rows inside 192.0.0.0/24 (service
/// continuity, dummy address, PCP and TURN anycast, NAT64 discovery) and
/// 192.88.99.0/24 (6a44 relay) fall in their parent's block. A few rows are
/// marked globally reachable — PCP and TURN anycast, AS112 DNS sinks, AMT
/// relays — but they are protocol services no push service is, so every
/// row is refused whatever its flag.
const SPECIAL_V4: [Block<u32>; 19] = [
    v4(0, 0, 0, 0, 8, "\"this network\" (RFC 791)"),
    v4(10, 0, 0, 0, 8, "private-use (RFC 1918)"),
    v4(100, 64, 0, 0, 10, "shared address space (RFC 6598)"),
    v4(127, 0, 0, 0, 8, "loopback (RFC 1122)"),
    v4(169, 254, 0, 0, 16, "link local (RFC 3927)"),
    v4(172, 16, 0, 0, 12, "private-use (RFC 1918)"),
    v4(192, 0, 0, 0, 24, "IETF protocol assignments (RFC 6890)"),
    v4(192, 0, 2, 0, 24, "documentation TEST-NET-1 (RFC 5737)"),
    v4(192, 31, 196, 0, 24, "AS112-v4 (RFC 7535)"),
    v4(192, 52, 193, 0, 24, "AMT (RFC 7450)"),
    v4(
        192,
        88,
        99,
        0,
        24,
        "deprecated 6to4 relay anycast (RFC 7526)",
    ),
    v4(192, 168, 0, 0, 16, "private-use (RFC 1918)"),
    v4(
        192,
        175,
        48,
        0,
        24,
        "direct delegation AS112 service (RFC 7534)",
    ),
    v4(198, 18, 0, 0, 15, "benchmarking (RFC 2544)"),
    v4(198, 51, 100, 0, 24, "documentation TEST-NET-2 (RFC 5737)"),
    v4(203, 0, 113, 0, 24, "documentation TEST-NET-3 (RFC 5737)"),
    v4(240, 0, 0, 0, 4, "reserved (RFC 1112)"),
    v4(255, 255, 255, 255, 32, "limited broadcast (RFC 919)"),
    v4(224, 0, 0, 0, 4, "multicast (RFC 5771)"),
];

/// The IANA IPv6 Special-Purpose Address Registry
/// (<https://www.iana.org/assignments/iana-ipv6-special-registry/>, its
/// CSV as published in 2026), less the two blocks that hold an IPv4 address
/// judged on its own ([`embedded_v4`]: `::ffff:0:0/96` IPv4-mapped and
/// `64:ff9b::/96` global NAT64). `2001::/23` covers the rows inside it:
/// Teredo `2001::/32`, PCP/TURN/DNS-SD anycast, benchmarking, AMT, AS112,
/// ORCHID(v2) and drone tags. As for IPv4, rows marked globally reachable
/// are refused too. The last two rows come from the IPv6 Address Space
/// registry instead.
const SPECIAL_V6: [Block<u128>; 15] = [
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback (RFC 4291)"),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified (RFC 4291)"),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "local-use IPv4/IPv6 translation (RFC 8215)",
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only (RFC 6666)"),
    v6(
        [0x100, 0, 0, 1, 0, 0, 0, 0],
        64,
        "dummy IPv6 prefix (RFC 9780)",
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments, Teredo among them (RFC 2928, RFC 4380)",
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation (RFC 3849)",
    ),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4 (RFC 3056)"),
    v6(
        [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0],
        48,
        "direct delegation AS112 service (RFC 7534)",
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "documentation (RFC 9637)",
    ),
    v6(
        [0x5f00, 0, 0, 0, 0, 0, 0, 0],
        16,
        "segment routing SIDs (RFC 9602)",
    ),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique-local (RFC 4193)"),
    v6(
        [0xfe80, 0, 0, 0, 0, 0, 0, 0],
        10,
        "link-local unicast (RFC 4291)",
    ),
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "deprecated site-local (RFC 3879)",
    ),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast (RFC 4291)"),
];

/// The IPv6 Address Space registry: IANA assigns global unicast addresses
/// from 2000::/3 only. Outside it lie the rest of `::/8` (IPv4-compatible,
/// IPv4-translated `::ffff:0:a.b.c.d`…) and space never assigned.
const GLOBAL_UNICAST_V6: Block<u128> = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3, "global unicast");

/// Why `ip` is not global: the name of its block.
fn special_range(ip: &IpAddr) -> &'static str {
    let name = match *ip {
        IpAddr::V4(v4) => SPECIAL_V4.iter().find(|b| b.contains(v4)).map(|b| b.name),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => return special_range(&IpAddr::V4(v4)),
            None => SPECIAL_V6
                .iter()
                .find(|b| b.contains(v6))
                .map(|b| b.name)
                .or((!GLOBAL_UNICAST_V6.contains(v6))
                    .then_some("outside the global unicast space 2000::/3")),
        },
    };
    name.unwrap_or("a special-purpose range")
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    !SPECIAL_V4.iter().any(|b| b.contains(ip))
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    match embedded_v4(ip) {
        Some(v4) => is_global_v4(v4),
        None => GLOBAL_UNICAST_V6.contains(ip) && !SPECIAL_V6.iter().any(|b| b.contains(ip)),
    }
}

/// The IPv4 address inside an IPv4-mapped address (`::ffff:a.b.c.d`, how a
/// dual-stack socket writes an IPv4 destination) or one behind the global
/// NAT64 prefix (`64:ff9b::a.b.c.d`, RFC 6052: on an IPv6-only network DNS64
/// gives push services such addresses, and the translator connects to the
/// IPv4 address inside). Every other prefix that carries an IPv4 address —
/// local-use NAT64, Teredo, 6to4, IPv4-compatible and IPv4-translated — is
/// refused whole.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], allow_http: bool, allow_private: bool) -> EndpointPolicy {
        EndpointPolicy::new(&EndpointSettings {
            allow_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allow_ports: vec![443, 8443, 9],
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

    /// One address (or more) from every row of the IANA IPv4 and IPv6
    /// special-purpose registries, the more specific rows included, and
    /// the other blocks refused.
    const NOT_GLOBAL: [&str; 61] = [
        // IPv4 special-purpose registry.
        "0.0.0.0",
        "0.1.2.3",
        "10.1.2.3",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.1",
        "192.0.0.8",
        "192.0.0.9",
        "192.0.0.10",
        "192.0.0.170",
        "192.0.0.171",
        "192.0.2.1",
        "192.31.196.1",
        "192.52.193.1",
        "192.88.99.1",
        "192.88.99.2",
        "192.168.1.1",
        "192.175.48.1",
        "198.18.0.1",
        "198.19.255.254",
        "198.51.100.1",
        "203.0.113.1",
        "240.0.0.1",
        "255.255.255.255",
        // IPv4 multicast.
        "224.0.0.1",
        "239.255.255.250",
        // IPv6 special-purpose registry.
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::7f00:1",
        "64:ff9b:1::808:808",
        "100::1",
        "100:0:0:1::1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "2001:1::1",
        "2001:1::3",
        "2001:2::1",
        "2001:3::1",
        "2001:4:112::1",
        "2001:10::1",
        "2001:20::1",
        "2001:30::1",
        "2001:db8::1",
        "2002:7f00:1::1",
        "2002:808:808::1",
        "2620:4f:8000::1",
        "3fff::1",
        "5f00::1",
        "fd00::1",
        "fe80::1",
        // Outside the special-purpose registry: deprecated site-local,
        // multicast, and outside 2000::/3 (IPv4-translated, -compatible).
        "fec0::1",
        "ff02::1",
        "::ffff:0:7f00:1",
        "::7f00:1",
    ];

    #[test]
    fn every_special_purpose_range_is_refused() {
        for ip in NOT_GLOBAL {
            assert!(!is_global(ip.parse().unwrap()), "{ip} counted as global");
        }
    }

    #[test]
    fn public_addresses_are_global_however_written() {
        for ip in [
            "142.250.74.10",
            "8.8.8.8",
            "2a00:1450:4001:80b::200a",
            "2600:1901:0:38d7::",
            "::ffff:8.8.8.8",
            // DNS64 on an IPv6-only network: the public IPv4 inside counts.
            "64:ff9b::808:808",
            // Just outside the blocks.
            "100.128.0.1",
            "192.0.1.1",
            "192.88.100.1",
            "198.20.0.1",
            "2001:200::1",
            "2620:4f:8001::1",
        ] {
            assert!(is_global(ip.parse().unwrap()), "{ip} counted as private");
        }
    }

    #[test]
    fn a_refusal_names_the_range() {
        let cases = [
            ("192.88.99.1", "deprecated 6to4 relay anycast (RFC 7526)"),
            ("64:ff9b:1::7f00:1", "local-use IPv4/IPv6 translation"),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo"),
            ("::ffff:0:7f00:1", "outside the global unicast space"),
            ("::ffff:127.0.0.1", "loopback"),
        ];
        for (ip, range) in cases {
            let text = PolicyError::PrivateAddress(ip.parse().unwrap()).to_string();
            assert!(text.contains(range), "{ip}: {text}");
            assert!(text.contains("is not globally reachable"), "{ip}: {text}");
        }
    }

    #[test]
    fn only_port_443_unless_widened() {
        let p = EndpointPolicy::new(&EndpointSettings::default());
        assert_eq!(
            check(&p, "https://fcm.googleapis.com:22/fcm/send/x"),
            Err(PolicyError::PortNotAllowed(22))
        );
        assert_eq!(
            check(&p, "https://fcm.googleapis.com:8443/fcm/send/x"),
            Err(PolicyError::PortNotAllowed(8443))
        );
        assert_eq!(
            check(&p, "https://fcm.googleapis.com:443/fcm/send/x"),
            Ok(())
        );
        let wider = EndpointPolicy::new(&EndpointSettings {
            allow_ports: vec![443, 8443],
            ..EndpointSettings::default()
        });
        assert_eq!(check(&wider, "https://fcm.googleapis.com:8443/x"), Ok(()));
        // http's default port is 80, which must be listed too.
        let http = EndpointPolicy::new(&EndpointSettings {
            allow_http: true,
            ..EndpointSettings::default()
        });
        assert_eq!(
            check(&http, "http://fcm.googleapis.com/x"),
            Err(PolicyError::PortNotAllowed(80))
        );
    }

    #[test]
    fn user_names_and_passwords_are_refused_and_not_repeated() {
        let p = EndpointPolicy::new(&EndpointSettings::default());
        for url in [
            "https://user:hunter2@fcm.googleapis.com:22/x",
            "https://user@fcm.googleapis.com/x",
            "https://:hunter2@fcm.googleapis.com/x",
        ] {
            let err = check(&p, url).unwrap_err();
            assert_eq!(err, PolicyError::UserInfo, "{url}");
            assert!(!err.to_string().contains("hunter2"));
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connect_time() {
        let err = GuardedResolver::resolve("localhost").await.unwrap_err();
        assert!(err.to_string().contains("loopback (RFC 1122)"), "{err}");
    }
}
