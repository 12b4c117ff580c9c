public import NIOCore
import Logging
import NIOPosix
public import VPNKitBase

// Publishing, listing and unpublishing host ports. Each publication has an identity
// (`PublishedPortID`); a port published without a host address is one publication with two
// listeners, 127.0.0.1 and ::1.
//
// Unpublishing closes the publication's host listeners (and, for UDP, its per-client stack
// sockets: their answers could no longer leave through the closed host socket). TCP connections
// already accepted through it are flows of their own and keep running until either side closes
// them, as a connection accepted by a listening socket outlives the listener.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension NAT {
    /// Starts forwarding `port` into the guest at the address `guestAddress()` names when a
    /// connection or datagram arrives (nil: refused), whatever the host listener's family. Fails
    /// when the host port cannot be bound (see `publish(_:guestAddresses:)` for a port without a
    /// host address).
    public func publish(_ port: PublishedPort, guestAddress: @escaping () -> IPAddress?) -> EventLoopFuture<Void> {
        publish(port, guestAddresses: { guestAddress().map(GuestAddresses.init) ?? GuestAddresses() })
    }

    /// Starts forwarding `port` into the guest: a connection or datagram that reaches a host
    /// listener goes to `guestAddresses().address(forHostFamily:)` of the listener's family (nil:
    /// refused), from the host alias of the guest address's family. Without a host address the port
    /// is published on 127.0.0.1 and ::1; ::1 is left out, with a notice, when the host has no IPv6
    /// (EADDRNOTAVAIL, EAFNOSUPPORT). Fails when a host port cannot be bound otherwise.
    public func publish(_ port: PublishedPort, guestAddresses: @escaping () -> GuestAddresses) -> EventLoopFuture<Void> {
        publishWithID(port, guestAddresses: guestAddresses).map { _ in }
    }

    /// `publish(_:guestAddresses:)`, answering with the publication's identity for
    /// `unpublish(_:)` and `forwards`. Nothing stays published when it fails.
    public func publishWithID(_ port: PublishedPort, guestAddresses: @escaping () -> GuestAddresses) -> EventLoopFuture<PublishedPortID> {
        let id = PublishedPortID(rawValue: nextPublishedPortID)
        nextPublishedPortID &+= 1
        guard port.hostAddress == nil else {
            return start(PortPublisher(nat: self, port: port, id: id, requested: port, guestAddresses: guestAddresses)).map { id }
        }
        var first = port
        first.hostAddress = .v4(.loopback)
        let v4 = PortPublisher(nat: self, port: first, id: id, requested: port, guestAddresses: guestAddresses)
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let boundV4 = NIOLoopBound(v4, eventLoop: eventLoop)
        return start(v4).assumeIsolated().flatMap { () -> EventLoopFuture<PublishedPortID> in
            let nat = bound.value
            var second = port
            second.hostAddress = .v6(.loopback)
            second.hostPort = boundV4.value.boundPort ?? port.hostPort
            let v6 = PortPublisher(nat: nat, port: second, id: id, requested: port, guestAddresses: guestAddresses)
            return nat.start(v6).assumeIsolated().map { id }.flatMapError { error in
                let nat = bound.value
                if Self.meansNoIPv6(error) {
                    nat.logger.notice("published \(port): ::1 cannot be bound (\(error)); IPv4 only")
                    return nat.eventLoop.makeSucceededFuture(id)
                }
                nat.stopPublisher(boundV4.value)
                return nat.eventLoop.makeFailedFuture(error)
            }.nonisolated()
        }.nonisolated()
    }

    /// Stops the publication `id`: its host listeners close (both loopbacks' for a port published
    /// without a host address), so new host connections are refused and datagrams no longer
    /// forwarded. TCP connections already accepted keep running until either side closes them.
    /// - Throws: `PublishedPortError.unknownID` when no publication has that id (never published,
    ///   or already unpublished); nothing changes then.
    public func unpublish(_ id: PublishedPortID) throws(PublishedPortError) {
        let matching = publishers.filter { $0.id == id }
        guard !matching.isEmpty else { throw .unknownID(id) }
        for publisher in matching { stopPublisher(publisher) }
        logger.info("unpublished \(matching[0].requested) (id \(id))")
    }

    /// The publications, in the order they were made: each with its id, the port as asked for and
    /// the host addresses and ports its listeners are bound to.
    public var forwards: [PublishedForward] {
        var order: [PublishedPortID] = []
        var byID: [PublishedPortID: PublishedForward] = [:]
        for publisher in publishers {
            guard let boundPort = publisher.boundPort else { continue }
            var listener = publisher.port
            listener.hostPort = boundPort
            if byID[publisher.id] == nil {
                order.append(publisher.id)
                byID[publisher.id] = PublishedForward(id: publisher.id, port: publisher.requested, listeners: [])
            }
            byID[publisher.id]?.listeners.append(listener)
        }
        return order.compactMap { byID[$0] }
    }

    /// The host listeners of published ports, each with the address and port it is bound to.
    public var publishedPorts: [PublishedPort] {
        publishers.compactMap { publisher in
            guard let port = publisher.boundPort else { return nil }
            var published = publisher.port
            published.hostPort = port
            return published
        }
    }

    /// Whether a failed bind means the host has no IPv6: ::1 is not configured (EADDRNOTAVAIL) or
    /// the family is not supported (EAFNOSUPPORT).
    static func meansNoIPv6(_ error: any Error) -> Bool {
        guard let io = error as? IOError else { return false }
        return io.errnoCode == EADDRNOTAVAIL || io.errnoCode == EAFNOSUPPORT
    }

    /// Binds one publisher; on failure it is forgotten again.
    private func start(_ publisher: PortPublisher) -> EventLoopFuture<Void> {
        publishers.append(publisher)
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let boundPublisher = NIOLoopBound(publisher, eventLoop: eventLoop)
        return publisher.start().assumeIsolated().flatMapErrorThrowing { error in
            bound.value.stopPublisher(boundPublisher.value)
            throw error
        }.nonisolated()
    }

    private func stopPublisher(_ publisher: PortPublisher) {
        publisher.close()
        publishers.removeAll { $0 === publisher }
    }

    /// The guest-side source of a published port's connection or datagram to `guest`: the host
    /// alias of its family, else the gateway's address of that family (nil when the stack has none).
    func publishedSource(to guest: IPAddress) -> IPAddress? {
        switch guest {
        case .v4:
            if case .v4? = configuration.hostAlias { return configuration.hostAlias }
            return .v4(stack.configuration.gateway)
        case .v6:
            if case .v6(let alias)? = configuration.hostAlias6, stack.owns(.v6(alias)) { return .v6(alias) }
            return stack.configuration.ipv6.map { .v6($0.gateway) }
        }
    }
}
