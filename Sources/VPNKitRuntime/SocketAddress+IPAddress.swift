// Host socket addresses to and from the stack's addresses, for the glue that carries guest traffic
// over host sockets (the NAT, the DNS forwarder). Both families: NIO's `SocketAddress` holds either.

package import NIOCore
package import VPNKitBase

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension IPv4Address {
    /// The IPv4 address of an AF_INET socket address; nil for any other.
    package init?(_ address: SocketAddress) {
        guard case .v4(let v4) = address else { return nil }
        self.init(rawValue: UInt32(bigEndian: v4.address.sin_addr.s_addr))
    }
}

extension IPv6Address {
    /// The IPv6 address of an AF_INET6 socket address (its scope and flow label dropped); nil for
    /// any other.
    package init?(_ address: SocketAddress) {
        guard case .v6(let v6) = address else { return nil }
        let octets = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        self.init(octets: octets)
    }
}

extension IPAddress {
    /// The address of an AF_INET or AF_INET6 socket address, as it is (an IPv4-mapped IPv6 address
    /// stays IPv6); nil for a Unix domain socket address.
    package init?(_ address: SocketAddress) {
        if let v4 = IPv4Address(address) {
            self = .v4(v4)
        } else if let v6 = IPv6Address(address) {
            self = .v6(v6)
        } else {
            return nil
        }
    }
}

extension SocketAddress {
    /// Built from the binary address (once per datagram sent: no text formatted or parsed).
    package static func v4(_ address: VPNKitBase.IPv4Address, port: UInt16) -> SocketAddress? {
        var raw = sockaddr_in()
        raw.sin_family = sa_family_t(AF_INET)
        raw.sin_port = port.bigEndian
        raw.sin_addr.s_addr = address.rawValue.bigEndian
        return SocketAddress(raw, host: "")
    }

    /// Built from the binary address, as `v4(_:port:)` is (scope and flow label zero).
    package static func v6(_ address: VPNKitBase.IPv6Address, port: UInt16) -> SocketAddress? {
        var raw = sockaddr_in6()
        raw.sin6_family = sa_family_t(AF_INET6)
        raw.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &raw.sin6_addr) { bytes in
            for (index, octet) in address.octets.enumerated() where index < bytes.count { bytes[index] = octet }
        }
        return SocketAddress(raw, host: "")
    }

    /// The socket address of either family for `address` and `port`.
    package static func ip(_ address: VPNKitBase.IPAddress, port: UInt16) -> SocketAddress? {
        switch address {
        case .v4(let address): return .v4(address, port: port)
        case .v6(let address): return .v6(address, port: port)
        }
    }
}
