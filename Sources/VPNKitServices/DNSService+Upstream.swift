import Logging
import NIOCore
import NIOPosix
import VPNKitBase
import VPNKitDNS
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if os(Linux)
import VPNKitReactor
import VPNKitSystem
#endif

/// What the DNS service's forwarding did with host sockets, beyond the resolver's own counters.
public struct DNSUpstreamCounters: Sendable, Hashable {
    /// UDP sockets opened, one per forwarded try, each on a port chosen at random.
    public var udpSocketsOpened: UInt64 = 0
    /// Random ports that were taken, so another was tried (the third failure falls back to a port
    /// the kernel picks).
    public var udpPortRetries: UInt64 = 0
    /// UDP tries that could not be sent: no socket could be bound at all.
    public var udpBindFailures: UInt64 = 0
    /// Datagrams that came to a try's socket from another address or port than its upstream, or
    /// with another transaction id: dropped before the resolver sees them.
    public var udpForeignDatagrams: UInt64 = 0
    /// Upstream TCP connections opened.
    public var tcpConnectionsOpened: UInt64 = 0
    /// Upstream TCP connections closed because a try on them timed out (the retry opens another).
    public var tcpClosedOnTimeout: UInt64 = 0
    /// Upstream TCP connections closed after `upstreamTCPIdleTimeout` with nothing outstanding.
    public var tcpClosedIdle: UInt64 = 0
    /// TCP tries not sent: `maximumUpstreamTCPConnections` were open, none to that upstream and
    /// none idle (the try times out and is retried).
    public var tcpLimitDrops: UInt64 = 0

    /// All zero.
    public init() {}
}

/// The host socket of one forwarded UDP try: bound to a random port, used for that try only.
final class UpstreamUDPTry {
    let transactionID: UInt16
    let upstream: DNSUpstream
    let address: SocketAddress
    let query: ByteBuffer
    var channel: (any Channel)?
    #if os(Linux)
    /// The socket on the daemon's reactor (instead of `channel`), and whom its answers go to.
    var datagram: ReactorDatagram?
    weak var service: DNSService?
    #endif
    var closed = false

    init(transactionID: UInt16, upstream: DNSUpstream, address: SocketAddress, query: ByteBuffer) {
        self.transactionID = transactionID
        self.upstream = upstream
        self.address = address
        self.query = query
    }

    func close() {
        closed = true
        channel?.close(promise: nil)
        channel = nil
        #if os(Linux)
        datagram?.close()
        datagram = nil
        #endif
    }
}

/// One TCP connection to an upstream, carrying pipelined queries; reused until it idles out, a try
/// on it times out, or the upstream closes it.
final class UpstreamTCPConnection {
    let upstream: DNSUpstream
    var channel: (any Channel)?
    #if os(Linux)
    /// The connection on the daemon's reactor (instead of `channel`), and whom its answers go to.
    var stream: ReactorStream?
    var streamOpen = false
    var framer = DNSTCPFramer()
    weak var service: DNSService?
    #endif
    /// Framed queries written once the connection is up.
    var waiting: [ByteBuffer] = []
    /// Transaction ids of the tries it carries.
    var outstanding: Set<UInt16> = []
    /// Since when nothing has been outstanding (nil while something is).
    var idleSince: NIODeadline?
    var closed = false

    init(upstream: DNSUpstream) { self.upstream = upstream }

    func send(_ framed: ByteBuffer) {
        #if os(Linux)
        if let stream, streamOpen {
            stream.write(framed)
            stream.flush()
            return
        }
        #endif
        if let channel {
            channel.writeAndFlush(framed, promise: nil)
        } else {
            waiting.append(framed)
        }
    }

    func close() {
        closed = true
        waiting = []
        channel?.close(promise: nil)
        channel = nil
        #if os(Linux)
        stream?.close()
        stream = nil
        #endif
    }
}

extension DNSService {
    // MARK: - UDP: a socket per try

    func forwardOverUDP(_ query: ByteBuffer, to upstream: DNSUpstream) {
        guard let id = query.getInteger(at: query.readerIndex, as: UInt16.self),
            let address = try? SocketAddress(ipAddress: upstream.address.description, port: Int(upstream.port))
        else { return }
        let attempt = UpstreamUDPTry(transactionID: id, upstream: upstream, address: address, query: query)
        udpTries[id] = attempt
        bind(attempt, triesLeft: 3)
    }

    /// Binds `attempt`'s socket (of the upstream's family, on every address) to a port drawn from the secure generator (1024-65535); a taken
    /// port is replaced by another draw, and after `triesLeft` draws the kernel picks.
    private func bind(_ attempt: UpstreamUDPTry, triesLeft: Int) {
        guard let driver, !attempt.closed else { return }
        #if os(Linux)
        if let reactor = driver.eventLoop as? Reactor { return bindOnReactor(reactor, attempt) }
        #endif
        var generator = SystemRandomNumberGenerator()
        let port = triesLeft > 0 ? Int.random(in: 1024...65535, using: &generator) : 0
        let bound = NIOLoopBound((self, attempt), eventLoop: driver.eventLoop)
        DatagramBootstrap(group: driver.eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let (service, attempt) = bound.value
                    try channel.pipeline.syncOperations.addHandler(UpstreamUDPHandler(service: service, attempt: attempt))
                }
            }
            .bind(host: attempt.upstream.address.family == .v6 ? "::" : "0.0.0.0", port: port)
            .assumeIsolated()
            .whenComplete { result in
                let (service, attempt) = bound.value
                switch result {
                case .success(let channel):
                    guard !attempt.closed, !service.closed else {
                        channel.close(promise: nil)
                        return
                    }
                    service.upstreamCounters.udpSocketsOpened &+= 1
                    attempt.channel = channel
                    channel.writeAndFlush(AddressedEnvelope(remoteAddress: attempt.address, data: attempt.query), promise: nil)
                case .failure(let error):
                    guard !attempt.closed, !service.closed else { return }
                    if triesLeft > 0 {
                        service.upstreamCounters.udpPortRetries &+= 1
                        service.bind(attempt, triesLeft: triesLeft - 1)
                    } else {
                        service.upstreamCounters.udpBindFailures &+= 1
                        service.logger.warning("cannot open a DNS upstream socket: \(error)")
                    }
                }
            }
    }

    #if os(Linux)
    /// `bind` on the daemon's reactor: the same random ports, retries and counters, with a
    /// `ReactorDatagram` instead of a channel.
    private func bindOnReactor(_ reactor: Reactor, _ attempt: UpstreamUDPTry) {
        let v6 = attempt.upstream.address.family == .v6
        var generator = SystemRandomNumberGenerator()
        for draw in 0...3 {
            let port = draw < 3 ? UInt16.random(in: 1024...65535, using: &generator) : 0
            let fd: CInt
            do {
                fd = try SystemCall.socket(family: v6 ? AF_INET6 : AF_INET, type: CInt(SOCK_DGRAM.rawValue))
                if v6 { try SystemCall.setOption(fd, level: CInt(IPPROTO_IPV6), name: IPV6_V6ONLY, value: 1) }
            } catch {
                upstreamCounters.udpBindFailures &+= 1
                logger.warning("cannot open a DNS upstream socket: \(error)")
                return
            }
            let any: IPAddress = v6 ? .v6(IPv6Address(high: 0, low: 0)) : .v4(IPv4Address(rawValue: 0))
            do {
                try SystemCall.bind(fd, to: SocketAddressStorage(any, port: port))
            } catch {
                SystemCall.close(fd)
                if draw < 3 {
                    upstreamCounters.udpPortRetries &+= 1
                    continue
                }
                upstreamCounters.udpBindFailures &+= 1
                logger.warning("cannot open a DNS upstream socket: \(error)")
                return
            }
            do {
                let socket = try ReactorDatagram(adopting: fd, on: reactor)
                socket.delegate = attempt
                attempt.service = self
                attempt.datagram = socket
                upstreamCounters.udpSocketsOpened &+= 1
                // A full socket buffer or a refused send: the try times out and the next goes out.
                _ = try? socket.send(attempt.query, to: SocketAddressStorage(attempt.upstream.address, port: attempt.upstream.port))
            } catch {
                upstreamCounters.udpBindFailures &+= 1
                logger.warning("cannot open a DNS upstream socket: \(error)")
            }
            return
        }
    }
    #endif

    /// A datagram on `attempt`'s socket: only its upstream's answer under its id goes on.
    func upstreamUDPResponse(_ data: ByteBuffer, from address: SocketAddress, attempt: UpstreamUDPTry) {
        guard let source = IPAddress(address), let port = address.port, let port16 = UInt16(exactly: port) else {
            upstreamCounters.udpForeignDatagrams &+= 1
            return
        }
        upstreamUDPResponse(data, source: source, port: port16, attempt: attempt)
    }

    /// A datagram from `source`:`port` on `attempt`'s socket: only its upstream's answer under its id goes on.
    func upstreamUDPResponse(_ data: ByteBuffer, source: IPAddress, port: UInt16, attempt: UpstreamUDPTry) {
        guard !attempt.closed, udpTries[attempt.transactionID] === attempt else { return }
        guard source == attempt.upstream.address, port == attempt.upstream.port,
            data.getInteger(at: data.readerIndex, as: UInt16.self) == attempt.transactionID
        else {
            upstreamCounters.udpForeignDatagrams &+= 1
            return
        }
        let now = NIODeadline.now()
        perform(resolver.handleUpstreamResponse(data, from: attempt.upstream, now: now), now: now)
        driver?.flush()
    }

    // MARK: - TCP: a bounded pool of reused connections

    /// A query that came over TCP goes upstream over TCP, on the upstream's connection (opened
    /// when there is none and the pool has room).
    func forwardOverTCP(_ query: ByteBuffer, to upstream: DNSUpstream, now: NIODeadline) {
        guard let id = query.getInteger(at: query.readerIndex, as: UInt16.self), let framed = try? DNSTCPFramer.frame(query) else { return }
        if let connection = upstreamConnections[upstream] {
            connection.outstanding.insert(id)
            connection.idleSince = nil
            connection.send(framed)
            return
        }
        if upstreamConnections.count >= configuration.maximumUpstreamTCPConnections {
            // Make room by closing the connection idle the longest, if any is idle.
            let idle = upstreamConnections.values.filter { $0.outstanding.isEmpty }.min { ($0.idleSince ?? now) < ($1.idleSince ?? now) }
            guard let idle else {
                upstreamCounters.tcpLimitDrops &+= 1
                return
            }
            upstreamCounters.tcpClosedIdle &+= 1
            drop(idle)
        }
        guard let driver, let address = try? SocketAddress(ipAddress: upstream.address.description, port: Int(upstream.port)) else { return }
        let connection = UpstreamTCPConnection(upstream: upstream)
        connection.outstanding.insert(id)
        connection.send(framed)
        upstreamConnections[upstream] = connection
        upstreamCounters.tcpConnectionsOpened &+= 1
        #if os(Linux)
        if let reactor = driver.eventLoop as? Reactor {
            do {
                let stream = try ReactorStream.connect(
                    on: reactor, to: SocketAddressStorage(upstream.address, port: upstream.port), timeout: configuration.resolver.perTryTimeout)
                stream.delegate = connection
                connection.stream = stream
                connection.service = self
            } catch {
                // Its tries time out and are retried (on a new connection).
                drop(connection)
            }
            return
        }
        #endif
        let bound = NIOLoopBound((self, connection), eventLoop: driver.eventLoop)
        ClientBootstrap(group: driver.eventLoop)
            .connectTimeout(configuration.resolver.perTryTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let (service, connection) = bound.value
                    try channel.pipeline.syncOperations.addHandler(UpstreamTCPHandler(service: service, connection: connection))
                }
            }
            .connect(to: address)
            .assumeIsolated()
            .whenComplete { result in
                let (service, connection) = bound.value
                switch result {
                case .success(let channel):
                    guard !connection.closed, !service.closed else {
                        channel.close(promise: nil)
                        return
                    }
                    connection.channel = channel
                    for framed in connection.waiting { channel.write(framed, promise: nil) }
                    connection.waiting = []
                    channel.flush()
                case .failure:
                    // Its tries time out and are retried (on a new connection).
                    service.drop(connection)
                }
            }
    }

    /// A message on `connection`: an answer to one of the tries it carries goes to the resolver.
    func upstreamTCPResponse(_ message: ByteBuffer, on connection: UpstreamTCPConnection) {
        guard !connection.closed, let id = message.getInteger(at: message.readerIndex, as: UInt16.self),
            connection.outstanding.contains(id)
        else { return }
        let now = NIODeadline.now()
        perform(resolver.handleUpstreamResponse(message, from: connection.upstream, now: now), now: now)
        driver?.flush()
    }

    /// Closes `connection` and takes it out of the pool.
    func drop(_ connection: UpstreamTCPConnection) {
        connection.close()
        if upstreamConnections[connection.upstream] === connection { upstreamConnections[connection.upstream] = nil }
    }

    // MARK: - Tries that ended

    /// Releases what carried `ended`: a UDP try's socket is closed; a TCP try leaves its
    /// connection, which is closed when the try timed out (the upstream is not answering on it)
    /// and starts idling when it carries nothing more.
    func tryEnded(_ ended: DNSEndedTry, now: NIODeadline) {
        guard ended.overTCP else {
            udpTries.removeValue(forKey: ended.transactionID)?.close()
            return
        }
        guard let connection = upstreamConnections.values.first(where: { $0.outstanding.contains(ended.transactionID) }) else { return }
        connection.outstanding.remove(ended.transactionID)
        if ended.reason == .timedOut {
            upstreamCounters.tcpClosedOnTimeout &+= 1
            drop(connection)
        } else if connection.outstanding.isEmpty {
            connection.idleSince = now
        }
    }

    /// When the first idle upstream connection is due to close.
    var idleDeadline: NIODeadline? {
        upstreamConnections.values.compactMap { $0.idleSince.map { $0 + configuration.upstreamTCPIdleTimeout } }.min()
    }

    func closeIdleConnections(now: NIODeadline) {
        for connection in upstreamConnections.values {
            guard let since = connection.idleSince, since + configuration.upstreamTCPIdleTimeout <= now else { continue }
            upstreamCounters.tcpClosedIdle &+= 1
            drop(connection)
        }
    }
}

#if os(Linux)
/// A UDP try's socket on the reactor: answers to the service, errors ignored (as `UpstreamUDPHandler`
/// ignores them: the try times out and the next goes out).
extension UpstreamUDPTry: ReactorDatagramDelegate {
    func datagramsArrived(_ socket: ReactorDatagram, _ forEach: ((ByteBuffer, IPAddress, UInt16) -> Void) -> Void) {
        forEach { data, source, port in
            guard let service else { return }
            service.upstreamUDPResponse(data, source: source, port: port, attempt: self)
        }
    }

    func datagramError(_ socket: ReactorDatagram, _ error: SystemError) {}
}

/// An upstream TCP connection on the reactor: queries out once connected, framed answers in, read
/// continuously; any end or failure drops the connection (its tries time out and are retried).
extension UpstreamTCPConnection: ReactorStreamDelegate {
    func streamConnected(_ stream: ReactorStream) {
        streamOpen = true
        for framed in waiting { stream.write(framed) }
        waiting = []
        stream.flush()
        stream.read()
    }

    func streamConnectFailed(_ stream: ReactorStream, _ error: SystemError) { service?.drop(self) }

    func streamRead(_ stream: ReactorStream, _ data: ByteBuffer) {
        guard let messages = try? framer.messages(appending: data) else {
            service?.drop(self)
            return
        }
        for message in messages { service?.upstreamTCPResponse(message, on: self) }
    }

    func streamReadComplete(_ stream: ReactorStream) { stream.read() }
    func streamEnded(_ stream: ReactorStream) { service?.drop(self) }
    func streamWritable(_ stream: ReactorStream) {}
    func streamWrote(_ stream: ReactorStream, pieces: Int) {}
    func streamFailed(_ stream: ReactorStream, _ error: SystemError) { service?.drop(self) }
}
#endif

final class UpstreamUDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let service: DNSService
    let attempt: UpstreamUDPTry

    init(service: DNSService, attempt: UpstreamUDPTry) {
        self.service = service
        self.attempt = attempt
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        service.upstreamUDPResponse(envelope.data, from: envelope.remoteAddress, attempt: attempt)
    }

    /// ICMP errors (port unreachable) surface here: the try times out and the next goes out.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}

final class UpstreamTCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let service: DNSService
    let connection: UpstreamTCPConnection
    var framer = DNSTCPFramer()

    init(service: DNSService, connection: UpstreamTCPConnection) {
        self.service = service
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let messages = try? framer.messages(appending: unwrapInboundIn(data)) else {
            service.drop(connection)
            return
        }
        for message in messages { service.upstreamTCPResponse(message, on: connection) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        service.drop(connection)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        service.drop(connection)
    }
}
