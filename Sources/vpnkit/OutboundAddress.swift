// `--outbound-addr` and `--outbound-addr6`: an address, or an interface whose address of that family
// the NAT's host sockets are bound to.

import ArgumentParser
import VPNKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum OutboundAddress {
    /// Checks --outbound-addr and --outbound-addr6: each must be an address of its family or an
    /// interface that has one.
    static func validate(_ v4: String?, _ v6: String?) throws {
        if let v4, resolve(v4, ipv6: false) == nil {
            throw ValidationError("--outbound-addr \(v4) is neither an IPv4 address nor an interface with one")
        }
        if let v6, resolve(v6, ipv6: true) == nil {
            throw ValidationError("--outbound-addr6 \(v6) is neither an IPv6 address nor an interface with one")
        }
    }

    /// `text` as an IPv4 (or, with `ipv6`, IPv6) address, or the first address of that family of
    /// the interface named `text`; nil when it is neither.
    static func resolve(_ text: String, ipv6: Bool) -> IPAddress? {
        if let address = IPAddress(text) {
            switch address {
            case .v4: return ipv6 ? nil : address
            case .v6: return ipv6 ? address : nil
            }
        }
        return interfaceAddress(text, ipv6: ipv6)
    }

    /// The first non-link-local address of `family` on interface `name` (getifaddrs(3)).
    static func interfaceAddress(_ name: String, ipv6: Bool) -> IPAddress? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(list) }
        var entry: UnsafeMutablePointer<ifaddrs>? = first
        while let current = entry {
            defer { entry = current.pointee.ifa_next }
            guard let address = current.pointee.ifa_addr, String(cString: current.pointee.ifa_name) == name else { continue }
            if !ipv6, address.pointee.sa_family == sa_family_t(AF_INET) {
                let value = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) }
                return .v4(IPv4Address(rawValue: value))
            }
            if ipv6, address.pointee.sa_family == sa_family_t(AF_INET6) {
                let bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                    withUnsafeBytes(of: pointer.pointee.sin6_addr) { Array($0) }
                }
                let high = bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                let low = bytes[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                let candidate = IPv6Address(high: high, low: low)
                if !candidate.isLinkLocal { return .v6(candidate) }
            }
        }
        return nil
    }
}
