import Foundation
public import Logging
public import NIOCore
import NIOPosix
public import VPNKitBase
public import VPNKitDNS
public import VPNKitStack

/// Settings of the gateway's DNS service.
public struct DNSServiceConfiguration: Sendable {
    /// Names answered by the gateway itself (gateway.internal, host.internal, --host-record); default none.
    public var records: [String: IPv4Address] = [:]
    /// Upstream servers, tried in order; default empty, which means the nameservers of `resolvConfPath`.
    public var upstreams: [DNSUpstream] = []
    /// Whether to take the upstreams from `resolvConfPath` (re-read when it changes) when `upstreams` is
    /// empty; default true. When false and `upstreams` is empty, nothing is forwarded.
    public var followResolvConf = true
    /// The resolv.conf whose nameservers are the upstreams; default /etc/resolv.conf. A missing file
    /// gives no upstreams.
    public var resolvConfPath = "/etc/resolv.conf"
    /// The port of resolv.conf's nameservers (53; the file has no syntax for another).
    public var resolvConfPort: UInt16 = 53
    /// How often, at most, resolv.conf is checked for changes; default 5 s. Checks happen only when
    /// queries arrive.
    public var resolvConfCheckInterval: TimeAmount = .seconds(5)
    /// A hosts file whose names are answered too, after `records` (loopback entries are skipped); default
    /// /etc/hosts, nil for none. Read once, at start.
    public var hostsPath: String? = "/etc/hosts"
    /// The resolver's own settings (timeouts, attempts, pending bound); records and upstreams are
    /// filled in from the fields above.
    public var resolver = DNSResolverConfiguration()

    /// Creates the default configuration: no records, upstreams from /etc/resolv.conf, names from /etc/hosts.
    public init() {}
}

/// DNS on the gateway, UDP and TCP port 53: built-in names, the hosts file, then forwarding to the
/// upstreams through host sockets. UDP is bound on the gateway address and TCP listens on every address
/// the stack owns; both exist only on the guest link, so it answers nobody but the guest.
public final class DNSService: StackTimerClient, StackDriverAttachment {
    let configuration: DNSServiceConfiguration
    weak var driver: StackDriver?
    let logger: Logger
    var resolver: DNSResolver {
        // The stack asks for `nextDeadline` on every flush; the resolver's answer only changes when
        // the resolver does.
        didSet { resolverDeadline = resolver.nextDeadline }
    }
    private var resolverDeadline: NIODeadline?
    var udpSocket: UDPSocket?
    var upstreamChannel: (any Channel)?
    var pendingUpstreamSends: [(ByteBuffer, DNSUpstream)] = []
    var tcpClients: [UInt64: TCPClient] = [:]
    var nextClientID: UInt64 = 1
    var resolvConfStamp: String?
    var lastResolvConfCheck: NIODeadline = .uptimeNanoseconds(0)

    struct TCPClient {
        var socket: TCPSocket
        var framer = DNSTCPFramer()
    }

    /// Binds UDP port 53 on the gateway address and listens on TCP port 53, registers with the stack's
    /// timers, and opens the upstream UDP socket. Reads the hosts file and resolv.conf now. Call on the
    /// driver's event loop.
    ///
    /// Throws `StackError.addressInUse` when port 53 is taken. The service does not attach itself: add it
    /// to the driver's `attachments` so that it closes when the driver stops.
    public init(driver: StackDriver, configuration: DNSServiceConfiguration, logger: Logger = Logger(label: "vpnkit.dns")) throws(StackError) {
        self.driver = driver
        self.configuration = configuration
        self.logger = logger
        var resolverConfiguration = configuration.resolver
        resolverConfiguration.staticRecords = configuration.records
        if let path = configuration.hostsPath, let text = try? String(contentsOfFile: path, encoding: .utf8) {
            // Loopback entries (localhost) mean the host itself, not something the guest can reach.
            resolverConfiguration.addHosts(parseHostsFile(text).filter { !$0.address.isLoopback })
        }
        resolverConfiguration.upstreams = configuration.upstreams
        var stamp: String?
        if configuration.upstreams.isEmpty, configuration.followResolvConf {
            let text = Self.readResolvConf(configuration)
            resolverConfiguration.upstreams = Self.upstreams(fromResolvConf: text, configuration)
            stamp = text
        }
        self.resolver = DNSResolver(configuration: resolverConfiguration)
        self.resolvConfStamp = stamp
        let stack = driver.stack
        let gateway = stack.configuration.gateway
        udpSocket = try stack.bindUDP(port: 53, address: gateway) { [weak self] message in
            self?.udpQuery(message)
        }
        try stack.listenTCP(port: 53) { [weak self] socket in
            self?.accepted(socket)
        }
        stack.registerTimerClient(self)
        openUpstreamSocket(on: driver.eventLoop)
    }

    /// Counters of the resolver.
    public var counters: DNSResolverCounters { resolver.counters }

    static func readResolvConf(_ configuration: DNSServiceConfiguration) -> String {
        (try? String(contentsOfFile: configuration.resolvConfPath, encoding: .utf8)) ?? ""
    }

    static func upstreams(fromResolvConf text: String, _ configuration: DNSServiceConfiguration) -> [DNSUpstream] {
        parseResolvConf(text).map { DNSUpstream(address: $0.address, port: configuration.resolvConfPort) }
    }

    /// Re-reads resolv.conf (at most every `resolvConfCheckInterval`, when a query comes) and
    /// replaces the upstreams when it changed.
    func refreshUpstreams(now: NIODeadline) {
        guard configuration.upstreams.isEmpty, configuration.followResolvConf,
            now - lastResolvConfCheck >= configuration.resolvConfCheckInterval
        else { return }
        lastResolvConfCheck = now
        let text = Self.readResolvConf(configuration)
        guard text != resolvConfStamp else { return }
        resolvConfStamp = text
        let upstreams = Self.upstreams(fromResolvConf: text, configuration)
        logger.info("\(configuration.resolvConfPath) changed: upstreams now \(upstreams.map(\.description))")
        resolver.replaceUpstreams(upstreams)
    }

    // MARK: - Guest side

    func udpQuery(_ message: UDPMessage) {
        let now = message.receivedAt
        refreshUpstreams(now: now)
        let client = DNSClient(id: 0, address: message.source, port: message.sourcePort)
        perform(resolver.handleQuery(message.payload, from: client, overTCP: false, now: now), now: now)
    }

    func accepted(_ socket: TCPSocket) {
        let id = nextClientID
        nextClientID &+= 1
        tcpClients[id] = TCPClient(socket: socket)
        socket.onReadable = { [weak self] in self?.tcpReadable(id) }
        socket.onClosed = { [weak self] _ in
            guard let self else { return }
            self.tcpClients[id] = nil
            self.resolver.forget(client: DNSClient(id: id, address: socket.remoteAddress, port: socket.remotePort))
        }
    }

    func tcpReadable(_ id: UInt64) {
        guard var client = tcpClients[id] else { return }
        let now = NIODeadline.now()
        let socket = client.socket
        var messages: [ByteBuffer] = []
        while let data = socket.read(now: now) {
            do {
                messages += try client.framer.messages(appending: data)
            } catch {
                socket.abort(now: now)
                tcpClients[id] = nil
                return
            }
        }
        tcpClients[id] = client
        if socket.isReadClosed { socket.close(now: now) }
        let from = DNSClient(id: id, address: socket.remoteAddress, port: socket.remotePort)
        for message in messages { perform(resolver.handleQuery(message, from: from, overTCP: true, now: now), now: now) }
    }

    func perform(_ actions: [DNSAction], now: NIODeadline) {
        guard let driver else { return }
        for action in actions {
            switch action {
            case .answer(let message, let client, let overTCP):
                if overTCP {
                    guard let socket = tcpClients[client.id]?.socket, let framed = try? DNSTCPFramer.frame(message) else { continue }
                    socket.write(framed, now: now)
                } else {
                    try? driver.stack.sendUDP(message, from: driver.stack.configuration.gateway, port: 53, to: client.address, port: client.port, now: now)
                }
            case .forward(let query, let upstream, let overTCP):
                if overTCP {
                    forwardOverTCP(query, to: upstream)
                } else if let channel = upstreamChannel, let address = try? SocketAddress(ipAddress: upstream.address.description, port: Int(upstream.port)) {
                    channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: query), promise: nil)
                } else {
                    pendingUpstreamSends.append((query, upstream))
                }
            }
        }
    }

    // MARK: - Upstream side

    func openUpstreamSocket(on loop: any EventLoop) {
        let bound = NIOLoopBound(self, eventLoop: loop)
        DatagramBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(UpstreamUDPHandler(service: bound.value))
                }
            }
            .bind(host: "0.0.0.0", port: 0)
            .assumeIsolated()
            .whenComplete { result in
                let service = bound.value
                switch result {
                case .success(let channel):
                    service.upstreamChannel = channel
                    let queued = service.pendingUpstreamSends
                    service.pendingUpstreamSends = []
                    for (query, upstream) in queued {
                        guard let address = try? SocketAddress(ipAddress: upstream.address.description, port: Int(upstream.port)) else { continue }
                        channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: query), promise: nil)
                    }
                case .failure(let error):
                    service.logger.error("cannot open the DNS upstream socket: \(error)")
                }
            }
    }

    func upstreamResponse(_ data: ByteBuffer, from address: SocketAddress) {
        guard let source = IPv4Address(address), let port = address.port else { return }
        let upstream = DNSUpstream(address: source, port: UInt16(port))
        let now = NIODeadline.now()
        perform(resolver.handleUpstreamResponse(data, from: upstream, now: now), now: now)
        driver?.flush()
    }

    /// A query that came over TCP goes upstream over TCP: one connection per query.
    func forwardOverTCP(_ query: ByteBuffer, to upstream: DNSUpstream) {
        guard let driver, let framed = try? DNSTCPFramer.frame(query) else { return }
        let bound = NIOLoopBound(self, eventLoop: driver.eventLoop)
        ClientBootstrap(group: driver.eventLoop)
            .connectTimeout(.seconds(2))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(UpstreamTCPHandler(service: bound.value, upstream: upstream))
                }
            }
            .connect(host: upstream.address.description, port: Int(upstream.port))
            .assumeIsolated()
            .whenSuccess { channel in channel.writeAndFlush(framed, promise: nil) }
    }

    func upstreamTCPResponse(_ message: ByteBuffer, from upstream: DNSUpstream) {
        let now = NIODeadline.now()
        perform(resolver.handleUpstreamResponse(message, from: upstream, now: now), now: now)
        driver?.flush()
    }

    // MARK: - Timers

    /// When the resolver next has a query to retry or give up on.
    public var nextDeadline: NIODeadline? { resolverDeadline }

    /// Retries the upstream queries that timed out by `now`, or answers SERVFAIL to those out of attempts.
    public func poll(now: NIODeadline) {
        perform(resolver.poll(now: now), now: now)
    }

    /// Closes the service when its driver stops.
    public func driverDidStop() { close() }

    /// Unbinds UDP port 53, stops listening on TCP port 53, closes the upstream socket and aborts the
    /// guest's TCP connections. Upstream TCP queries under way are not cancelled.
    public func close() {
        udpSocket?.close()
        driver?.stack.stopListeningTCP(port: 53)
        upstreamChannel?.close(promise: nil)
        for client in tcpClients.values { client.socket.abort(now: .now()) }
        tcpClients.removeAll()
    }
}

final class UpstreamUDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let service: DNSService

    init(service: DNSService) { self.service = service }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        service.upstreamResponse(envelope.data, from: envelope.remoteAddress)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}

final class UpstreamTCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let service: DNSService
    let upstream: DNSUpstream
    var framer = DNSTCPFramer()

    init(service: DNSService, upstream: DNSUpstream) {
        self.service = service
        self.upstream = upstream
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let messages = try? framer.messages(appending: unwrapInboundIn(data)) else {
            context.close(promise: nil)
            return
        }
        for message in messages {
            service.upstreamTCPResponse(message, from: upstream)
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

