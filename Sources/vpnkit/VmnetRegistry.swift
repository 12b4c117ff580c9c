import NIOCore
import VPNKitBase
import VPNKitDHCP
import VPNKitTransport

/// vmnet clients by UUID, as vpnkit keeps them: a UUID seen before gets the same MAC and the same
/// IPv4 address again (so rootlesskit's two connections, or a VM that reconnects, land on one
/// identity), and a preferred address is honoured when it is in the pool and free, refused
/// otherwise. Each client's address is reserved for its MAC in the DHCP server, so the DHCP answer
/// the client asks for next names the same address. Confined to the event loop.
final class VmnetRegistry: @unchecked Sendable {  // created before the loop runs, then used only on it
    private(set) var clients: [VmnetUUID: (mac: MACAddress, address: IPv4Address)] = [:]
    let poolStart: IPv4Address
    let poolEnd: IPv4Address
    let excluded: Set<IPv4Address>
    /// Set once the DHCP server runs; reservations made before are applied then.
    var dhcp: DHCPService? {
        didSet { for client in clients.values { dhcp?.reserve(client.address, for: client.mac) } }
    }

    init(poolStart: IPv4Address, poolEnd: IPv4Address, excluded: Set<IPv4Address>) {
        self.poolStart = poolStart
        self.poolEnd = poolEnd
        self.excluded = excluded
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
