//! Where a webhook may deliver from each environment: production sends only over https and
//! only to public addresses (judged on the address it connects to, so a name or a
//! redirect cannot aim a code inward); sandbox sends anywhere, for local testing.

use crate::ids::Environment;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a public destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonPublic {
    CloudMetadata,
    Unspecified,
    Loopback,
    /// RFC 1918, and IPv6 unique local addresses (RFC 4193).
    Private,
    LinkLocal,
    /// 100.64.0.0/10, carrier-grade NAT (RFC 6598).
    SharedAddressSpace,
    Multicast,
    Broadcast,
    Documentation,
    /// Special-purpose ranges that are not globally reachable (RFC 6890 and its updates).
    Reserved,
}

impl NonPublic {
    /// A stable name for audit events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CloudMetadata => "cloud_metadata",
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link_local",
            Self::SharedAddressSpace => "shared_address_space",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Reserved => "reserved",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::CloudMetadata => "a cloud metadata address",
            Self::Unspecified => "an unspecified address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::SharedAddressSpace => "a carrier-grade NAT address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "a broadcast address",
            Self::Documentation => "a documentation address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// Why this instance will not send to a webhook destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRefusal {
    #[error("the tenant's webhook_url is not an http(s) URL with a host")]
    Malformed,
    #[error("the tenant's webhook_url cannot be used in production: it must use https")]
    NotHttps,
    #[error("the tenant's webhook_url cannot be used in production: it points at {0}")]
    Address(NonPublic),
}

impl WebhookRefusal {
    /// A stable name for audit events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotHttps => "not_https",
            Self::Address(a) => a.as_str(),
        }
    }
}

impl fmt::Display for NonPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Whether `env` may send to a URL of this scheme.
pub fn check_scheme(env: Environment, scheme: &str) -> Result<(), WebhookRefusal> {
    match (env, scheme) {
        (_, "https") | (Environment::Sandbox, "http") => Ok(()),
        (Environment::Production, "http") => Err(WebhookRefusal::NotHttps),
        _ => Err(WebhookRefusal::Malformed),
    }
}

/// Whether `env` may connect to `ip` to deliver a webhook.
pub fn check_address(env: Environment, ip: IpAddr) -> Result<(), WebhookRefusal> {
    match (env, non_public(ip)) {
        (Environment::Production, Some(kind)) => Err(WebhookRefusal::Address(kind)),
        _ => Ok(()),
    }
}

/// What makes `ip` not a public unicast address, if anything. IPv4 addresses carried in IPv6
/// (IPv4-mapped, NAT64, 6to4) are judged as the IPv4 address they reach.
pub fn non_public(ip: IpAddr) -> Option<NonPublic> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

/// Instance metadata services: AWS, GCP, Azure, Oracle… (169.254.169.254), AWS ECS task
/// credentials, Alibaba Cloud, Azure's platform endpoint (a public address).
const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];

/// AWS's instance metadata service over IPv6.
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn non_public_v4(ip: Ipv4Addr) -> Option<NonPublic> {
    Some(if METADATA_V4.contains(&ip) {
        NonPublic::CloudMetadata
    } else if ip.is_unspecified() || in_v4(ip, [0, 0, 0, 0], 8) {
        // 0.0.0.0/8 is "this network": connecting to 0.0.0.0 reaches the host itself.
        NonPublic::Unspecified
    } else if ip.is_loopback() {
        NonPublic::Loopback
    } else if ip.is_private() {
        NonPublic::Private
    } else if ip.is_link_local() {
        NonPublic::LinkLocal
    } else if in_v4(ip, [100, 64, 0, 0], 10) {
        NonPublic::SharedAddressSpace
    } else if ip.is_broadcast() {
        NonPublic::Broadcast
    } else if ip.is_multicast() {
        NonPublic::Multicast
    } else if ip.is_documentation() {
        NonPublic::Documentation
    } else if in_v4(ip, [192, 0, 0, 0], 24)
        || in_v4(ip, [198, 18, 0, 0], 15)
        || in_v4(ip, [240, 0, 0, 0], 4)
    {
        // IETF protocol assignments, benchmarking, and the former class E.
        NonPublic::Reserved
    } else {
        return None;
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<NonPublic> {
    let embedded = |from_bit: u32| {
        let bits = u128::from(ip) >> (96 - from_bit);
        Ipv4Addr::from(u32::try_from(bits & u128::from(u32::MAX)).unwrap_or(0))
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        // RFC 6052's well-known NAT64 prefix: the last 32 bits are the IPv4 destination.
        return non_public_v4(embedded(96));
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        // 6to4 (RFC 3056): bits 16..48 are the IPv4 address of the tunnel's end.
        return non_public_v4(embedded(16));
    }
    Some(if METADATA_V6.contains(&ip) {
        NonPublic::CloudMetadata
    } else if ip.is_unspecified() {
        NonPublic::Unspecified
    } else if ip.is_loopback() {
        NonPublic::Loopback
    } else if ip.is_multicast() {
        NonPublic::Multicast
    } else if ip.is_unicast_link_local() {
        NonPublic::LinkLocal
    } else if ip.is_unique_local() {
        NonPublic::Private
    } else if in_v6(ip, [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32)
        || in_v6(ip, [0x3fff, 0, 0, 0, 0, 0, 0, 0], 20)
    {
        NonPublic::Documentation
    } else if in_v6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 23)
        || !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3)
    {
        // IETF protocol assignments (Teredo, benchmarking, ORCHID…), and everything outside
        // global unicast 2000::/3 (IPv4-compatible, local-use NAT64, site-local, discard…).
        NonPublic::Reserved
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_are_classified_as_public_or_by_what_makes_them_inward() {
        use NonPublic::*;
        let cases: &[(&str, Option<NonPublic>)] = &[
            // Public IPv4 and IPv6, also when carried in IPv6.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.215.14", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("198.17.255.255", None),
            ("223.255.255.255", None),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:82a::200e", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("2002:808:808::1", None),
            // Cloud metadata.
            ("169.254.169.254", Some(CloudMetadata)),
            ("169.254.170.2", Some(CloudMetadata)),
            ("100.100.100.200", Some(CloudMetadata)),
            ("168.63.129.16", Some(CloudMetadata)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("64:ff9b::a9fe:a9fe", Some(CloudMetadata)),
            ("2002:a9fe:a9fe::", Some(CloudMetadata)),
            // Unspecified and "this network".
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            // Loopback.
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("2002:7f00:1::", Some(Loopback)),
            // Private: RFC 1918 and unique local.
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("64:ff9b::c0a8:101", Some(Private)),
            // Link-local.
            ("169.254.0.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            // Carrier-grade NAT.
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            // Multicast and broadcast.
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            // Documentation.
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            // Reserved.
            ("192.0.0.8", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("198.19.255.255", Some(Reserved)),
            ("240.0.0.1", Some(Reserved)),
            ("2001::1", Some(Reserved)),
            ("2001:2::1", Some(Reserved)),
            ("::127.0.0.1", Some(Reserved)),
            ("64:ff9b:1::1", Some(Reserved)),
            ("fec0::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
        ];
        for (ip, want) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(non_public(ip), *want, "{ip}");
        }
    }

    #[test]
    fn production_refuses_inward_addresses_and_sandbox_allows_them() {
        let cases: &[(&str, Environment, Result<(), WebhookRefusal>)] = &[
            ("8.8.8.8", Environment::Production, Ok(())),
            ("2606:4700:4700::1111", Environment::Production, Ok(())),
            (
                "127.0.0.1",
                Environment::Production,
                Err(WebhookRefusal::Address(NonPublic::Loopback)),
            ),
            (
                "169.254.169.254",
                Environment::Production,
                Err(WebhookRefusal::Address(NonPublic::CloudMetadata)),
            ),
            ("127.0.0.1", Environment::Sandbox, Ok(())),
            ("::1", Environment::Sandbox, Ok(())),
            ("10.0.0.1", Environment::Sandbox, Ok(())),
        ];
        for (ip, env, want) in cases {
            assert_eq!(
                check_address(*env, ip.parse().unwrap()),
                *want,
                "{ip} in {env}"
            );
        }
    }

    #[test]
    fn production_sends_only_over_https_and_sandbox_also_over_http() {
        let cases: &[(&str, Environment, Result<(), WebhookRefusal>)] = &[
            ("https", Environment::Production, Ok(())),
            (
                "http",
                Environment::Production,
                Err(WebhookRefusal::NotHttps),
            ),
            ("https", Environment::Sandbox, Ok(())),
            ("http", Environment::Sandbox, Ok(())),
            ("ftp", Environment::Sandbox, Err(WebhookRefusal::Malformed)),
            (
                "file",
                Environment::Production,
                Err(WebhookRefusal::Malformed),
            ),
            (
                "ws",
                Environment::Production,
                Err(WebhookRefusal::Malformed),
            ),
        ];
        for (scheme, env, want) in cases {
            assert_eq!(check_scheme(*env, scheme), *want, "{scheme} in {env}");
        }
    }

    #[test]
    fn a_refusal_says_what_production_refuses_and_why() {
        assert_eq!(
            WebhookRefusal::Address(NonPublic::SharedAddressSpace).to_string(),
            "the tenant's webhook_url cannot be used in production: it points at a carrier-grade NAT address"
        );
        assert_eq!(
            WebhookRefusal::NotHttps.to_string(),
            "the tenant's webhook_url cannot be used in production: it must use https"
        );
    }
}
