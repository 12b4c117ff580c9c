import NIOCore
import VPNKitBase
import VPNKitDHCP
import VPNKitTransport
import VPNKitServices
import VPNKitStack

/// vmnet clients by UUID, as vpnkit keeps them: a UUID seen before gets the same MAC and the same
/// IPv4 address again (so rootlesskit's two connections, or a VM that reconnects, land on one
/// identity), and a preferred address is honoured when it is in the pool and free, refused
/// otherwise. Each client's address is reserved for its MAC in the DHCP server, so the DHCP answer
/// the client asks for next names the same address. Confined to the event loop.
final class VmnetRegistry: @unchecked Sendable {  // created before the loop runs, then used only on it
    private(set) var clients: [VmnetUUID: (mac: MACAddress, address: IPv4Address)] = [:]
    /// The addresses handed out: the stack's subnet from its third address to the last before the
    /// broadcast address until a DHCP server runs, then the server's pool.
    private(set) var poolStart = IPv4Address(0, 0, 0, 0)
    private(set) var poolEnd = IPv4Address(0, 0, 0, 0)
    private(set) var excluded: Set<IPv4Address> = []
    /// Set once the DHCP server runs; its pool is used from then on, and reservations made before
    /// are applied to it.
    var dhcp: DHCPService? {
        didSet {
            guard let dhcp else { return }
            let c = dhcp.server.configuration
            (poolStart, poolEnd, excluded) = (c.poolStart, c.poolEnd, c.excluded)
            for client in clients.values { dhcp.reserve(client.address, for: client.mac) }
        }
    }

    /// Takes the pool from the stack's subnet, excluding the stack's own addresses.
    func usePool(of configuration: StackConfiguration) {
        guard dhcp == nil else { return }
        let subnet = configuration.subnet
        poolStart = subnet.address(at: 3) ?? subnet.network
        poolEnd = IPv4Address(rawValue: subnet.broadcast.rawValue &- 1)
        excluded = Set(configuration.addresses)
    }

    func admit(_ uuid: VmnetUUID, preferred: IPv4Address?, now: NIODeadline) -> Result<MACAddress, VmnetRefusal> {
        if let known = clients[uuid] {
            if let preferred, preferred != known.address {
                return .failure(VmnetRefusal("UUID \(uuid) already has IP \(known.address), not the \(preferred) requested"))
            }
            return .success(known.mac)
        }
        var mac = uuid.derivedMACAddress
        let macs = Set(clients.values.map(\.mac))
        while macs.contains(mac) { mac = MACAddress(rawValue: (mac.rawValue & ~0xFF_FFFF) | ((mac.rawValue &+ 1) & 0xFF_FFFF)) }
        let used = Set(clients.values.map(\.address))
        func isFree(_ address: IPv4Address) -> Bool {
            !used.contains(address) && !excluded.contains(address)
                && !(dhcp?.server.isHeld(address, byOtherThan: mac, now: now) ?? false)
        }
        let address: IPv4Address
        if let preferred {
            guard preferred >= poolStart && preferred <= poolEnd else {
                return .failure(VmnetRefusal("Preferred IP address \(preferred) out of range \(poolStart)–\(poolEnd)"))
            }
            guard isFree(preferred) else { return .failure(VmnetRefusal("Preferred IP address \(preferred) already used")) }
            address = preferred
        } else {
            var candidate = poolStart
            while candidate <= poolEnd && !isFree(candidate) { candidate = IPv4Address(rawValue: candidate.rawValue &+ 1) }
            guard candidate <= poolEnd else { return .failure(VmnetRefusal("No IP addresses available")) }
            address = candidate
        }
        clients[uuid] = (mac, address)
        dhcp?.reserve(address, for: mac)
        return .success(mac)
    }
}
