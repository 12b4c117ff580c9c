import NIOCore
import Logging
import NIOPosix
import VPNKitBase
import VPNKitStack
import VPNKitTransport
import VPNKitRuntime
#if os(Linux)
import VPNKitReactor
#endif

// Published ports: host listeners whose connections and datagrams the NAT opens into the guest
// from the host alias of the family it reaches the guest over (or from a non-loopback client's own
// address: NAT+ClientAddress.swift).

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

final class PortPublisher {
    weak var nat: NAT?
    /// The port, with the one host address this publisher listens on.
    let port: PublishedPort
    /// The identity of the publication this listener belongs to (a port published without a host
    /// address has two listeners under one id).
    let id: PublishedPortID
    /// The port as it was asked for (without a host address when both loopbacks were meant).
    let requested: PublishedPort
    let guestAddresses: () -> GuestAddresses
    /// UDP on SwiftNIO's loop: the host socket.
    var channel: (any Channel)?
    /// UDP: one stack socket per host client, so the guest's replies find their way back.
    var udpClients: [HostEndpoint: (socket: UDPSocket, lastActivity: NIODeadline)] = [:]
    var nextUDPPort: UInt16 = 49152
    let eventLoop: any EventLoop
    /// TCP on SwiftNIO's loop: the listener, which pauses when accept(2) runs out of descriptors.
    private var listener: PausingListener?
    #if os(Linux)
    /// On the reactor: the TCP listener (which pauses as `PausingListener` does) or the UDP socket.
    var reactorListener: ReactorListener?
    var reactorDatagram: ReactorDatagram?
    #endif
    /// TCP: host connections whose guest side had not answered when last looked at, oldest first
    /// (at most `maximumConnections`: each is a flow in the NAT's table).
    private var connecting: [TCPFlow] = []
    /// How long a TCP listener stays closed after accept(2) ran out of descriptors.
    static let relistenDelay = TimeAmount.seconds(1)

    init(nat: NAT, port: PublishedPort, id: PublishedPortID, requested: PublishedPort, guestAddresses: @escaping () -> GuestAddresses) {
        self.nat = nat
        self.eventLoop = nat.eventLoop
        self.port = port
        self.id = id
        self.requested = requested
        self.guestAddresses = guestAddresses
    }

    /// The host address listened on (`port` always has one here).
    var hostAddress: IPAddress { port.hostAddress ?? .v4(.loopback) }

    /// The port the listener is bound to (the one asked for, or the kernel's choice for 0); nil
    /// while it is not bound.
    var boundPort: UInt16? {
        #if os(Linux)
        if let reactorListener { return reactorListener.isClosed ? nil : reactorListener.port }
        if let reactorDatagram { return reactorDatagram.isClosed ? nil : reactorDatagram.localPort }
        #endif
        let channel = port.transport == .tcp ? listener?.channel : self.channel
        return channel?.localAddress?.port.map { UInt16(truncatingIfNeeded: $0) }
    }

    /// The guest address for this listener's connections and datagrams, and the host alias they
    /// come from; nil when the guest has no address (or the stack none of that family).
    func target(nat: NAT) -> (guest: IPAddress, source: IPAddress)? {
        guard let guest = guestAddresses().address(forHostFamily: hostAddress.family), let source = nat.publishedSource(to: guest)
        else { return nil }
        return (guest, source)
    }

    func start() -> EventLoopFuture<Void> {
        guard let nat else { return eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
        #if os(Linux)
        if let reactor = eventLoop as? Reactor { return start(on: reactor, nat: nat) }
        #endif
        let loop = eventLoop
        let boundSelf = NIOLoopBound(self, eventLoop: loop)
        guard let address = SocketAddress.ip(hostAddress, port: port.hostPort) else {
            return eventLoop.makeFailedFuture(ChannelError.badInterfaceAddressFamily)
        }
        switch port.transport {
        case .tcp:
            let configuration = nat.configuration
            let listener = PausingListener(on: loop, pause: Self.relistenDelay, bind: {
                ServerBootstrap(group: loop)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            // The same settings as the NAT's own host sockets (keepalive, a receive
                            // buffer that starts small). TCP_NODELAY is already on: ServerBootstrap
                            // sets it on the listener, and accepted sockets inherit it.
                            try configuration.configureHostTCPChannel(channel)
                            guard let flow = boundSelf.value.accepted(channel) else {
                                channel.close(promise: nil)
                                return
                            }
                            try channel.pipeline.syncOperations.addHandler(HostTCPHandler(flow: flow))
                        }
                    }
                    .bind(to: address)
            }, report: { event in boundSelf.value.listenerEvent(event) })
            self.listener = listener
            return listener.start()
        case .udp:
            return DatagramBootstrap(group: loop)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(PublishedUDPHandler(publisher: boundSelf.value))
                    }
                }
                .bind(to: address)
                .assumeIsolated()
                .map { channel in boundSelf.value.channel = channel }
                .nonisolated()
        }
    }

    /// What the TCP listener reports: a failed accept, and the pauses when accept(2) ran out of
    /// descriptors (see `PausingListener`), each counted as a refused connection.
    func listenerEvent(_ event: PausingListener.Event) {
        guard let nat else { return }
        switch event {
        case .resumed:
            nat.logger.info("published \(port): \(event)")
        case .resumeFailed:
            nat.logger.notice("published \(port): \(event)")
        case .acceptFailed, .paused:
            nat.counters.publishedRefused &+= 1
            nat.logger.log(.notice, key: "published port: listener", limiter: &nat.logLimiter, now: .now(), "published \(port): \(event)")
        }
    }

    /// A host connection to a published TCP port: open the guest side (the SYN goes out when the
    /// driver call ends).
    func accepted(_ channel: any Channel) -> TCPFlow? {
        guard let nat else { return nil }
        return nat.driver.perform { _, now in
            accepted(from: HostEndpoint(channel.remoteAddress), nat: nat, now: now) { NIOHostStream(channel: channel, flow: $0) }
        }
    }

    /// The guest side of a host connection from `client`, its flow in the NAT's table; nil when it
    /// is refused (no guest address, the connection limit). `host` makes the flow's host socket.
    func accepted(from client: HostEndpoint?, nat: NAT, now: NIODeadline, host: (TCPFlow) -> any HostStream) -> TCPFlow? {
        guard let target = target(nat: nat, client: client), nat.tcpFlows.count < nat.configuration.maximumConnections else {
            nat.counters.publishedRefused &+= 1
            nat.logger.log(.notice, key: "published port: refused", limiter: &nat.logLimiter, now: now,
                           "published \(port): no guest address known, or the connection limit is reached")
            return nil
        }
        // From the client's own address when it is shown to the guest (see NAT+ClientAddress.swift).
        let guest = target.guest
        guard let socket = nat.connectPublished(target, guestPort: port.guestPort, now: now) else {
            nat.counters.publishedRefused &+= 1
            return nil
        }
        let request = TCPConnectionRequest(guestAddress: guest, guestPort: port.guestPort, destination: socket.localAddress, destinationPort: socket.localPort)
        let flow = TCPFlow(nat: nat, request: request, now: now, published: port)
        flow.host = host(flow)
        flow.attach(socket)
        nat.tcpFlows[request] = flow
        connecting.append(flow)
        nat.counters.publishedConnections &+= 1
        nat.logger.debug("published \(port): host connection → \(guest.description(port: port.guestPort))")
        return flow
    }

    /// Datagrams from host clients to a published UDP port, read in one wakeup: into the guest in
    /// one driver call.
    func received(_ envelopes: [AddressedEnvelope<ByteBuffer>]) {
        guard let nat else { return }
        let channel = self.channel
        nat.driver.perform { _, now in
            for envelope in envelopes {
                guard let client = HostEndpoint(envelope.remoteAddress) else { continue }
                received(envelope.data, from: client, nat: nat, now: now) {
                    { message in channel?.writeAndFlush(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: message.payload), promise: nil) }
                }
            }
        }
    }

    /// A datagram from a host client to a published UDP port: into the guest, from a stack socket
    /// that belongs to that client (made on its first datagram, with what `reply` makes as where the
    /// guest's answers go: made only then, not per datagram).
    func received(_ payload: ByteBuffer, from client: HostEndpoint, nat: NAT, now: NIODeadline, reply: () -> (UDPMessage) -> Void) {
        guard let target = target(nat: nat, client: client) else {
            nat.counters.publishedRefused &+= 1
            return
        }
        let guest = target.guest
        var entry = udpClients[client]
        if let existing = entry, existing.socket.address != target.alias, existing.socket.address != target.client?.address {
            // The guest's family changed since this client's socket was bound.
            existing.socket.close()
            entry = nil
        }
        if entry == nil {
            // From the client's own address when it is shown to the guest (see NAT+ClientAddress.swift).
            if let socket = bindUDPSocket(for: target, nat: nat, deliver: reply()) { entry = (socket, now) }
        }
        guard var entry else { return }
        entry.lastActivity = now
        udpClients[client] = entry
        nat.counters.publishedDatagrams &+= 1
        try? entry.socket.send(payload, to: guest, port: port.guestPort, now: now)
    }

    /// Once a second: forgets idle UDP clients, and resets host connections the guest has not
    /// answered within `connectTimeout` (without this the host client would wait through every SYN
    /// retransmission, minutes, even after it gave up itself: its close is not read until the guest
    /// side is open).
    func sweep(now: NIODeadline, configuration: NATConfiguration) {
        for (client, entry) in udpClients where now - entry.lastActivity >= configuration.udpIdleTimeout {
            entry.socket.close()
            udpClients[client] = nil
        }
        connecting.removeAll { flow in
            if flow.finished || flow.guestEstablished { return true }
            guard now - flow.opened >= configuration.connectTimeout else { return false }
            flow.guestConnectTimedOut(now: now)
            return true
        }
    }

    func close() {
        listener?.close()
        listener = nil
        channel?.close(promise: nil)
        #if os(Linux)
        reactorListener?.close()
        reactorDatagram?.close()
        #endif
        for entry in udpClients.values { entry.socket.close() }
        udpClients.removeAll()
        connecting.removeAll()
    }
}

final class PublishedUDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let publisher: PortPublisher
    /// This wakeup's datagrams, handed over together when it ends.
    private var arrived: [AddressedEnvelope<ByteBuffer>] = []

    init(publisher: PortPublisher) { self.publisher = publisher }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        arrived.append(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        deliverArrived()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed read does not end with `channelReadComplete`.
        deliverArrived()
        context.fireErrorCaught(error)
    }

    private func deliverArrived() {
        guard !arrived.isEmpty else { return }
        publisher.received(arrived)
        arrived.removeAll(keepingCapacity: true)
    }
}
