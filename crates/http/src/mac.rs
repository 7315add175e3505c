//! MAC addresses in the text form Neutron, OVN and instance records use
//! (`fa:16:3e:12:34:56`), and the EUI-64 link-local address a MAC gives an
//! IPv6 guest (and back).

use std::net::Ipv6Addr;

/// Parse `aa:bb:cc:dd:ee:ff` (any case) into bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in out.iter_mut() {
        let part = parts.next()?;
        // from_str_radix would take a sign: "+a" is not an octet.
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Canonical lower-case text form of a MAC.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The EUI-64 link-local address of a MAC (`fa:16:3e:aa:bb:cc` →
/// `fe80::f816:3eff:feaa:bbcc`).
pub fn eui64_link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// The MAC inside an EUI-64 IPv6 interface identifier
/// (`fe80::f816:3eff:fe12:3456` → `fa:16:3e:12:34:56`), as Neutron derives
/// it for IPv6 link-local guests. `None` for addresses that are not EUI-64
/// (stable-privacy, random).
pub fn mac_from_eui64(ip: Ipv6Addr) -> Option<[u8; 6]> {
    let o = ip.octets();
    if o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    Some([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_format() {
        assert_eq!(
            parse_mac("FA:16:3e:00:00:01"),
            Some([0xfa, 0x16, 0x3e, 0, 0, 1])
        );
        assert_eq!(parse_mac("fa:16:3e:00:00"), None);
        assert_eq!(parse_mac("fa:16:3e:00:00:01:02"), None);
        assert_eq!(parse_mac("fa:16:3e:00:00:0g"), None);
        assert_eq!(parse_mac("fa:16:3e:00:00:001"), None);
        assert_eq!(
            format_mac(&[0xfa, 0x16, 0x3e, 0, 0, 1]),
            "fa:16:3e:00:00:01"
        );
    }

    #[test]
    fn eui64_goes_both_ways() {
        let mac = [0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc];
        assert_eq!(
            eui64_link_local(mac).to_string(),
            "fe80::f816:3eff:feaa:bbcc"
        );
        assert_eq!(mac_from_eui64(eui64_link_local(mac)), Some(mac));
        let ip: Ipv6Addr = "fe80::f816:3eff:fe12:3456".parse().unwrap();
        assert_eq!(
            mac_from_eui64(ip),
            Some([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56])
        );
        let privacy: Ipv6Addr = "fe80::1c2d:3a4b:5c6d:7e8f".parse().unwrap();
        assert_eq!(mac_from_eui64(privacy), None);
    }
}
