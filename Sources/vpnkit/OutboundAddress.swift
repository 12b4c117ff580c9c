// `--outbound-addr` and `--outbound-addr6`: an address, or an interface whose address of that family
// the NAT's host sockets are bound to.

import ArgumentParser
import NIOCore
import NIOPosix
import VPNKit
import VPNKitRuntime

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

    /// The first address of the family on interface `name` (for IPv6, the first that is not
    /// link-local), from SwiftNIO's list of the host's interfaces.
    static func interfaceAddress(_ name: String, ipv6: Bool) -> IPAddress? {
        guard let devices = try? System.enumerateDevices() else { return nil }
        for device in devices where device.name == name {
            switch device.address.flatMap(IPAddress.init) {
            case .v4(let address)? where !ipv6: return .v4(address)
            case .v6(let address)? where ipv6 && !address.isLinkLocal: return .v6(address)
            default: continue
            }
        }
        return nil
    }
}
