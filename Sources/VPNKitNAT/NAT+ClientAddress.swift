// Published ports that show the guest who really connected: a host client from another machine
// reaches the guest from its own address and port (`NATConfiguration.preservesClientAddress`), not
// from the host alias. The stack writes the guest-side SYN (and the datagrams) itself, so it can
// give them any source; the guest answers through its default route, the gateway, and the stack
// matches the answers to the connection (or the client's UDP socket) by its addresses and ports.
// Loopback clients, and clients the stack may not speak for (see `NetworkStack.canSpeak`), still
// come from the host alias.

import NIOCore
#if os(Linux)
import VPNKitSystem
#endif
import VPNKitBase
import VPNKitStack
import VPNKitRuntime

/// A host client's address and port, as its socket reports them (an IPv4 client of a dual-stack
/// listener has an IPv4-mapped IPv6 address here): the key of a published UDP port's clients.
struct HostEndpoint: Hashable {
    var address: IPAddress
    var port: UInt16

    init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// SwiftNIO's address of a host client; nil for a Unix socket address or one without a port.
    init?(_ remote: SocketAddress?) {
        guard let remote, let address = IPAddress(remote), let port = remote.port, let port16 = UInt16(exactly: port) else { return nil }
        self.init(address: address, port: port16)
    }

    #if os(Linux)
    /// The reactor's address of a host client; nil for one of another family.
    init?(_ remote: SocketAddressStorage) {
        guard let (address, port) = remote.endpoint else { return nil }
        self.init(address: address, port: port)
    }
    #endif
}

/// Where a published port's connection or datagram goes in the guest, and whom it comes from.
struct PublishedTarget {
    /// The guest's address.
    var guest: IPAddress
    /// The host alias of the guest's family (else the gateway's address): the source when the client
    /// is not shown.
    var alias: IPAddress
    /// The host client's own address and port, when the guest is to see them.
    var client: (address: IPAddress, port: UInt16)?
}

extension NAT {
    /// A host client's address and port as the guest would see them: an IPv4-mapped IPv6 address
    /// (an IPv4 client of a dual-stack listener) becomes the IPv4 address it holds. Nil for a Unix
    /// socket address or one without a port.
    static func clientEndpoint(_ remote: HostEndpoint?) -> (address: IPAddress, port: UInt16)? {
        guard let remote else { return nil }
        if case .v6(let v6) = remote.address, let v4 = v6.ipv4Mapped { return (.v4(v4), remote.port) }
        return (remote.address, remote.port)
    }

    /// Whether a published port's host client at `client` is shown to the guest at `guest` as
    /// itself: `preservesClientAddress` is on, the client is not a loopback address or a host alias,
    /// and the stack may speak for it toward the guest (same family, beyond the guest's link, an
    /// address the NAT would forward to: see `NetworkStack.canSpeak(for:toward:)`).
    func showsClient(_ client: IPAddress, to guest: IPAddress) -> Bool {
        configuration.preservesClientAddress && !client.isLoopback && !isHostAlias(client) && stack.canSpeak(for: client, toward: guest)
    }

    /// Opens the guest side of a published port's connection: from the client's own address and
    /// port when `target` shows the client and that four-tuple is free, else (or when the stack
    /// refuses) from the alias on an ephemeral port.
    func connectPublished(_ target: PublishedTarget, guestPort: UInt16, now: NIODeadline) -> TCPSocket? {
        if let client = target.client {
            let request = TCPConnectionRequest(guestAddress: target.guest, guestPort: guestPort, destination: client.address, destinationPort: client.port)
            if tcpFlows[request] == nil,
                let socket = try? stack.connectTCP(to: target.guest, port: guestPort, onBehalfOf: client.address, peerPort: client.port, now: now)
            {
                counters.publishedClientAddresses &+= 1
                return socket
            }
        }
        return try? stack.connectTCP(to: target.guest, port: guestPort, from: target.alias, now: now)
    }
}

extension PortPublisher {
    /// The guest address and the source for a connection or datagram from the host client at
    /// `remote`. A client shown as itself picks the guest address of its own family (an IPv4 client
    /// of a dual-stack listener reaches the guest over IPv4); any other goes by the listener's
    /// family, from the alias, as `target(nat:)` does. Nil when the guest has no address.
    func target(nat: NAT, client remote: HostEndpoint?) -> PublishedTarget? {
        if let client = NAT.clientEndpoint(remote), nat.configuration.preservesClientAddress, !client.address.isLoopback,
            let guest = guestAddresses().address(forHostFamily: client.address.family), nat.showsClient(client.address, to: guest),
            let alias = nat.publishedSource(to: guest)
        {
            return PublishedTarget(guest: guest, alias: alias, client: client)
        }
        guard let (guest, alias) = target(nat: nat) else { return nil }
        return PublishedTarget(guest: guest, alias: alias, client: nil)
    }

    /// A stack socket for a published UDP port's host client: bound to the client's own address and
    /// port when `target` shows the client (the guest's replies to it come back here), else to the
    /// alias on the next free port from 49152. `deliver` gets what the guest sends to it. A datagram
    /// to the client's address and port from anywhere but the published guest port is none of this
    /// socket's business: it goes to the NAT as any guest datagram to an outside address does.
    func bindUDPSocket(for target: PublishedTarget, nat: NAT, deliver: @escaping (UDPMessage) -> Void) -> UDPSocket? {
        if let client = target.client {
            let guestPort = port.guestPort
            let handler: (UDPMessage) -> Void = { [weak self, weak nat] message in
                guard let self, let nat else { return }
                let guest = self.guestAddresses().address(forHostFamily: message.source.family)
                if message.sourcePort == guestPort, message.source == guest {
                    deliver(message)
                } else {
                    nat.forwardUDP(message, now: message.receivedAt)
                }
            }
            if let socket = try? nat.stack.bindUDP(port: client.port, onBehalfOf: client.address, toward: target.guest, handler: handler) {
                nat.counters.publishedClientAddresses &+= 1
                return socket
            }
        }
        for _ in 0..<16384 {
            let candidate = nextUDPPort
            nextUDPPort = nextUDPPort >= 65535 ? 49152 : nextUDPPort + 1
            if let socket = try? nat.stack.bindUDP(port: candidate, address: target.alias, handler: deliver) { return socket }
        }
        return nil
    }
}
