// The NAT's IPv6 rules: which destinations may leave through host sockets (never one that would
// reach the host's loopback or the guest's own link by another spelling), and ICMPv6 codes in the
// ICMPv4 terms the stack's forwarding API takes.

public import VPNKitBase

extension NAT {
    /// Whether an IPv6 destination may be carried to host sockets: not unspecified or loopback, not
    /// multicast, not link-local (fe80::/10) or site-local (fec0::/10), not in the guest's `prefix`,
    /// not an IPv4-compatible (::/96), IPv4-mapped (::ffff:0:0/96) or IPv4-translated
    /// (::ffff:0:0:0/96) address, and not a NAT64 (64:ff9b::/96, 64:ff9b:1::/96) or 6to4 (2002::/16)
    /// address embedding an IPv4 loopback or unspecified address: no IPv6 way around the rules that
    /// hold for IPv4 and for the host alias.
    public static func isForwardableIPv6(_ address: IPv6Address, prefix: IPv6Address?) -> Bool {
        if address.high == 0 {
            // ::/96 (::, ::1, IPv4-compatible), ::ffff:0:0/96 (IPv4-mapped), ::ffff:0:0:0/96 (SIIT).
            let upper = address.low >> 32
            if upper == 0 || upper == 0xFFFF || upper == 0xFFFF_0000 { return false }
        }
        if address.isMulticast || address.isLinkLocal || address.high >> 54 == 0xFEC0 >> 6 { return false }
        if let prefix, address.high == prefix.high { return false }
        // NAT64 (RFC 6052, RFC 8215), IPv4 in the last 32 bits; 6to4 (RFC 3056), IPv4 in bits 16–47.
        let nat64 = address.high == 0x0064_FF9B_0000_0000 || address.high == 0x0064_FF9B_0001_0000
        if nat64, address.low >> 32 == 0, isLoopbackOrUnspecified(UInt32(truncatingIfNeeded: address.low)) { return false }
        if address.high >> 48 == 0x2002, isLoopbackOrUnspecified(UInt32(truncatingIfNeeded: address.high >> 16)) { return false }
        return true
    }

    /// Whether an embedded IPv4 address is in 127.0.0.0/8 or 0.0.0.0/8.
    private static func isLoopbackOrUnspecified(_ v4: UInt32) -> Bool { v4 >> 24 == 127 || v4 >> 24 == 0 }

    /// The ICMPv4 destination unreachable code for an ICMPv6 one the host reported (the stack maps it
    /// back for an IPv6 guest): no route 0 → net 0, prohibited 1, 5 and 6 → 13, address 3 → host 1,
    /// port 4 → 3; others → host 1.
    static func icmpv4UnreachableCode(fromICMPv6 code: UInt8) -> UInt8 {
        switch code {
        case 0: return 0
        case 1, 5, 6: return 13
        case 4: return 3
        default: return 1
        }
    }
}
