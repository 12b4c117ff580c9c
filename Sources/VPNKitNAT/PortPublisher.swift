public import NIOCore
import Logging
import NIOPosix
public import VPNKitBase
import VPNKitStack
import VPNKitTransport
import VPNKitRuntime

/// A host port forwarded into the guest: `tcp:127.0.0.1:8080:80` listens on the host's
/// 127.0.0.1:8080 and opens a connection to the guest's port 80 through the stack, from the host
/// alias (no helper inside the guest). The host side may listen on IPv6 (`tcp:[::1]:8080:80`); the
/// guest side is reached over IPv4.
public struct PublishedPort: Sendable, Hashable, CustomStringConvertible {
    /// The protocol of a published port: `tcp` or `udp`, as written in the text form.
    public enum Transport: String, Sendable { case tcp, udp }
    /// TCP or UDP.
    public var transport: Transport
    /// The host address to listen on, of either family; default 127.0.0.1, reachable from the host
    /// only.
    public var hostAddress: IPAddress
    /// The host port to listen on.
    public var hostPort: UInt16
    /// The guest port that connections and datagrams go to.
    public var guestPort: UInt16

    /// Creates a published port. Unlike the text form, it accepts port 0.
    public init(transport: Transport, hostAddress: IPAddress = .v4(.loopback), hostPort: UInt16, guestPort: UInt16) {
        self.transport = transport
        self.hostAddress = hostAddress
        self.hostPort = hostPort
        self.guestPort = guestPort
    }

    /// Parses `tcp|udp:[HOSTIP:]HOSTPORT:GUESTPORT`, where HOSTIP is a dotted quad or an IPv6
    /// address in brackets (`tcp:[::1]:8080:80`); the host address defaults to 127.0.0.1.
    public init?(_ text: String) {
        guard let colon = text.firstIndex(of: ":"), let transport = Transport(rawValue: text[..<colon].lowercased()) else { return nil }
        var rest = text[text.index(after: colon)...]
        var host = IPAddress.v4(.loopback)
        let bracketed = rest.first == "["
        if bracketed {
            guard let close = rest.firstIndex(of: "]"), let address = IPv6Address(rest[rest.index(after: rest.startIndex)..<close])
            else { return nil }
            host = .v6(address)
            rest = rest[rest.index(after: close)...]
            guard rest.first == ":" else { return nil }
            rest = rest.dropFirst()
        }
        var parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        if !bracketed, parts.count == 3 {
            guard let address = IPv4Address(parts[0]) else { return nil }
            host = .v4(address)
            parts.removeFirst()
        }
        guard parts.count == 2, let hostPort = UInt16(parts[0]), hostPort != 0, let guestPort = UInt16(parts[1]), guestPort != 0
        else { return nil }
        self.init(transport: transport, hostAddress: host, hostPort: hostPort, guestPort: guestPort)
    }

    /// The text form, such as `tcp:127.0.0.1:8080:80` or `tcp:[::1]:8080:80`, which `init(_:)`
    /// parses back.
    public var description: String {
        switch hostAddress {
        case .v4(let address): return "\(transport.rawValue):\(address):\(hostPort):\(guestPort)"
        case .v6(let address): return "\(transport.rawValue):[\(address)]:\(hostPort):\(guestPort)"
        }
    }
}

extension NAT {
    /// Starts forwarding `port` into the guest at the address `guestAddress()` names when a
    /// connection or datagram arrives (nil: refused). Fails when the host port cannot be bound.
    public func publish(_ port: PublishedPort, guestAddress: @escaping () -> IPAddress?) -> EventLoopFuture<Void> {
        let publisher = PortPublisher(nat: self, port: port, guestAddress: guestAddress)
        publishers.append(publisher)
        return publisher.start()
    }
}

final class PortPublisher {
    weak var nat: NAT?
    let port: PublishedPort
    let guestAddress: () -> IPAddress?
    var channel: (any Channel)?
    /// UDP: one stack socket per host client, so the guest's replies find their way back.
    var udpClients: [SocketAddress: (socket: UDPSocket, lastActivity: NIODeadline)] = [:]
    var nextUDPPort: UInt16 = 49152
    let eventLoop: any EventLoop
    /// TCP: the listener, which pauses when accept(2) runs out of descriptors.
    private var listener: PausingListener?
    /// TCP: host connections whose guest side had not answered when last looked at, oldest first
    /// (at most `maximumConnections`: each is a flow in the NAT's table).
    private var connecting: [TCPFlow] = []
    /// How long a TCP listener stays closed after accept(2) ran out of descriptors.
    static let relistenDelay = TimeAmount.seconds(1)

    init(nat: NAT, port: PublishedPort, guestAddress: @escaping () -> IPAddress?) {
        self.nat = nat
        self.eventLoop = nat.eventLoop
        self.port = port
        self.guestAddress = guestAddress
    }

    func start() -> EventLoopFuture<Void> {
        guard let nat else { return eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
        let loop = eventLoop
        let boundSelf = NIOLoopBound(self, eventLoop: loop)
        let host = port.hostAddress.description
        let hostPort = Int(port.hostPort)
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
                    .bind(host: host, port: hostPort)
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
                .bind(host: host, port: hostPort)
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
        return nat.driver.perform { _, now in accepted(channel, nat: nat, now: now) }
    }

    private func accepted(_ channel: any Channel, nat: NAT, now: NIODeadline) -> TCPFlow? {
        guard let guest = guestAddress(), nat.tcpFlows.count < nat.configuration.maximumConnections else {
            nat.counters.publishedRefused &+= 1
            nat.logger.log(.notice, key: "published port: refused", limiter: &nat.logLimiter, now: now,
                           "published \(port): no guest address known, or the connection limit is reached")
            return nil
        }
        let source = nat.configuration.hostAlias ?? .v4(nat.stack.configuration.gateway)
        guard let socket = try? nat.stack.connectTCP(to: guest, port: port.guestPort, from: source, now: now) else {
            nat.counters.publishedRefused &+= 1
            return nil
        }
        let request = TCPConnectionRequest(guestAddress: guest, guestPort: port.guestPort, destination: source, destinationPort: socket.localPort)
        let flow = TCPFlow(nat: nat, request: request, now: now, published: port)
        flow.channel = channel
        flow.attach(socket)
        nat.tcpFlows[request] = flow
        connecting.append(flow)
        nat.counters.publishedConnections &+= 1
        nat.logger.debug("published \(port): host connection → \(guest):\(port.guestPort)")
        return flow
    }

    /// Datagrams from host clients to a published UDP port, read in one wakeup: into the guest in
    /// one driver call.
    func received(_ envelopes: [AddressedEnvelope<ByteBuffer>]) {
        guard let nat else { return }
        nat.driver.perform { _, now in
            for envelope in envelopes { received(envelope, nat: nat, now: now) }
        }
    }

    /// A datagram from a host client to a published UDP port: into the guest, from a stack socket
    /// that belongs to that client.
    private func received(_ envelope: AddressedEnvelope<ByteBuffer>, nat: NAT, now: NIODeadline) {
        guard let guest = guestAddress() else { return }
        let client = envelope.remoteAddress
        var entry = udpClients[client]
        if entry == nil {
            let source = nat.configuration.hostAlias ?? .v4(nat.stack.configuration.gateway)
            let channel = self.channel
            for _ in 0..<16384 {
                let candidate = nextUDPPort
                nextUDPPort = nextUDPPort >= 65535 ? 49152 : nextUDPPort + 1
                if let socket = try? nat.stack.bindUDP(port: candidate, address: source, handler: { message in
                    channel?.writeAndFlush(AddressedEnvelope(remoteAddress: client, data: message.payload), promise: nil)
                }) {
                    entry = (socket, now)
                    break
                }
            }
        }
        guard var entry else { return }
        entry.lastActivity = now
        udpClients[client] = entry
        nat.counters.publishedDatagrams &+= 1
        try? entry.socket.send(envelope.data, to: guest, port: port.guestPort, now: now)
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
