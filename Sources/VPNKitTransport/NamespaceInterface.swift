// Configuring an interface inside a network namespace without tools or host privileges: what
// slirp4netns's --configure and a rootless `vpnkit run -- CMD` need. Linux only.

#if os(Linux)

import CVPNKitLinux
public import VPNKitBase

#if canImport(Glibc)
import Glibc
#endif

/// An interface's IPv4 settings inside a network namespace, applied with ioctls by a short-lived
/// child that enters the namespace (and the user namespace owning it, when given) — see
/// `TAPTransport.open(namespace:userNamespace:device:mtu:offloads:receiveSteering:on:)`.
public struct NamespaceInterface: Sendable {
    /// The device (tap0).
    public var device: String
    /// The MTU to set; nil leaves it.
    public var mtu: Int?
    /// The address and its prefix length; nil sets none.
    public var address: (IPv4Address, Int)?
    /// The default route's gateway; nil adds no route.
    public var gateway: IPv4Address?
    /// Bring the namespace's loopback up too (a new namespace's is down).
    public var loopbackUp = true
    /// The device's MAC address to set; nil leaves the kernel's random one.
    public var macAddress: MACAddress?

    /// Settings for `device`; nothing is changed but the device (and lo) brought up unless set.
    public init(device: String, mtu: Int? = nil, address: (IPv4Address, Int)? = nil, gateway: IPv4Address? = nil) {
        self.device = device
        self.mtu = mtu
        self.address = address
        self.gateway = gateway
    }

    /// Applies the settings inside the network namespace at `namespace` (a path, or a name under
    /// /var/run/netns), entering `userNamespace` first when it is given and not ours.
    /// - Throws: `TransportError.systemCall` naming the step that failed.
    public func apply(namespace: String, userNamespace: String?) throws {
        let path = namespace.contains("/") ? namespace : "/var/run/netns/" + namespace
        var step: UnsafePointer<CChar>?
        let result = device.withCString { name -> Int32 in
            var setup = vpnkit_interface_setup()
            setup.device = name
            setup.mtu = UInt32(mtu ?? 0)
            setup.address = address?.0.rawValue ?? 0
            setup.prefix_length = UInt32(address?.1 ?? 0)
            setup.gateway = gateway?.rawValue ?? 0
            setup.loopback_up = loopbackUp ? 1 : 0
            if let macAddress {
                setup.set_mac = 1
                let raw = macAddress.rawValue
                setup.mac = (
                    UInt8(truncatingIfNeeded: raw >> 40), UInt8(truncatingIfNeeded: raw >> 32), UInt8(truncatingIfNeeded: raw >> 24),
                    UInt8(truncatingIfNeeded: raw >> 16), UInt8(truncatingIfNeeded: raw >> 8), UInt8(truncatingIfNeeded: raw))
            }
            return vpnkit_configure_interface(userNamespace, path, &setup, &step)
        }
        guard result == 0 else {
            let err = errno
            throw TransportError.systemCall("\(step.map { String(cString: $0) } ?? "configure") (\(device) in \(path))", errno: err)
        }
    }
}

#endif  // os(Linux)
