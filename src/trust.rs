//! Which callers may choose their own profile and tier by header: those whose address is in a
//! configured network. Everyone else's headers are removed unread.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// `10.0.0.0/8`, `127.0.0.1` (one address), `fd00::/8`.
    pub fn parse(text: &str) -> Result<Network, String> {
        let bad = || format!("`{text}` is not an address or a network like `10.0.0.0/8`");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.trim().parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Network { address, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => (u128::from(u32::from(v4)) << 96, 32),
                    None => (u128::from(v6), 128),
                },
            }
        };
        let ((network, width), (candidate, candidate_width)) = (bits(self.address), bits(ip));
        if width != candidate_width {
            return false;
        }
        // Both sit in the top bits of a u128, so the prefix masks the same way for v4 and v6.
        let shift = 128 - u32::from(self.prefix);
        let mask = if shift >= 128 { 0 } else { u128::MAX << shift };
        network & mask == candidate & mask
    }
}

/// The IP of Envoy's `source.address` property (`1.2.3.4:5678`, `[::1]:5678`).
pub fn source_ip(address: &str) -> Option<IpAddr> {
    if let Ok(ip) = address.parse() {
        return Some(ip);
    }
    let host = address.rsplit_once(':')?.0;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_addresses() {
        let cases = [
            ("10.0.0.0/8", "10.200.3.4:5000", true),
            ("10.0.0.0/8", "11.0.0.1:5000", false),
            ("127.0.0.1", "127.0.0.1:1", true),
            ("127.0.0.1", "127.0.0.2:1", false),
            ("0.0.0.0/0", "8.8.8.8:53", true),
            ("fd00::/8", "[fd12::1]:443", true),
            ("fd00::/8", "[fe80::1]:443", false),
            ("127.0.0.0/8", "[::ffff:127.0.0.1]:80", true),
            ("::1", "[::1]:80", true),
            ("::1", "127.0.0.1:80", false),
        ];
        for (network, source, expected) in cases {
            let ip = source_ip(source).unwrap();
            assert_eq!(Network::parse(network).unwrap().contains(ip), expected, "{network} {source}");
        }
        for bad in ["10.0.0.0/33", "ten", "10.0.0.0/x", ""] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(source_ip("garbage"), None);
    }
}
