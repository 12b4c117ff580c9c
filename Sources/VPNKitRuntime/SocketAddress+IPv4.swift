// Host socket addresses to and from the stack's addresses, for the glue that carries guest traffic
// over host sockets (the NAT, the DNS forwarder).

package import NIOCore
package import VPNKitBase

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension IPv4Address {
    package static let loopback = IPv4Address(rawValue: 0x7F00_0001)

    package init?(_ address: SocketAddress) {
        guard case .v4(let v4) = address else { return nil }
        self.init(rawValue: UInt32(bigEndian: v4.address.sin_addr.s_addr))
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
}
