import Foundation
public import Logging
public import NIOCore
import NIOPosix
public import VPNKitBase
public import VPNKitDNS
public import VPNKitStack
public import VPNKitRuntime

/// Settings of the gateway's DNS service.
public struct DNSServiceConfiguration: Sendable {
    /// Names answered by the gateway itself (gateway.internal, host.internal, --host-record), each with
    /// its addresses of either family (A and AAAA answers); default none.
    public var records: [String: [IPAddress]] = [:]
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
    /// A hosts file whose names are answered too, after `records`, IPv4 and IPv6 (loopback, link-local
    /// and multicast entries are skipped: see `isServedHostsAddress(_:)`); default
    /// /etc/hosts, nil for none. Read once, at start.
    public var hostsPath: String? = "/etc/hosts"
    /// The resolver's own settings (timeouts, attempts, pending bound); records and upstreams are
    /// filled in from the fields above. Each pending query forwarded over UDP holds one host
    /// socket, so `resolver.maximumPendingQueries` also bounds those.
    public var resolver = DNSResolverConfiguration()
    /// Host TCP connections to upstreams open at once, for queries the guest sent over TCP; default
    /// 8. One connection per upstream carries every query to it (pipelined, RFC 7766); a query that
    /// finds the limit reached and no connection to its upstream is not sent, and its try times out.
    public var maximumUpstreamTCPConnections = 8
    /// How long an upstream TCP connection with nothing outstanding stays open for reuse; default 10 s.
    public var upstreamTCPIdleTimeout: TimeAmount = .seconds(10)
    /// The IPv4 address the service answers on (UDP; TCP listens on every owned address); nil, the
    /// default, is the gateway. Another address is added to the stack's own (slirp4netns's 10.0.2.3).
    public var address: IPv4Address?
    /// The IPv6 address the service answers on when the stack has IPv6; nil is the IPv6 gateway.
    /// Another address in the prefix is added to the stack's own (slirp4netns's fd00::3).
    public var address6: IPv6Address?

    /// Host descriptors the service may hold at once: a socket per pending UDP query and the TCP
    /// connections (for the daemon's open-file budget).
    public var maximumHostDescriptors: Int { resolver.maximumPendingQueries + maximumUpstreamTCPConnections }

    /// Creates the default configuration: no records, upstreams from /etc/resolv.conf, names from /etc/hosts.
    public init() {}
}

/// DNS on the gateway, UDP and TCP port 53: built-in names, the hosts file, then forwarding to the
/// upstreams (of either family) through host sockets. UDP is bound on the gateway address, and on the
/// IPv6 gateway address too when the stack has IPv6; TCP listens on every address the stack owns, of
/// both families. Both exist only on the guest link, so it answers nobody but the guest.
///
/// Forwarding resists off-path forgery as dnsmasq and unbound do: every try goes out under a
/// transaction id from the secure generator, over UDP from a fresh socket bound to a port chosen at
/// random, closed when the try ends; an answer counts only when it comes to that socket from the
/// upstream's address and port with the try's id and question. Queries the guest sent over TCP go
/// over a bounded pool of reused upstream connections (see `DNSServiceConfiguration`).
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
    /// The socket on the IPv6 gateway address, when the stack has IPv6.
    var udpSocket6: UDPSocket?
    /// The host socket of each UDP try in flight, by its transaction id.
    var udpTries: [UInt16: UpstreamUDPTry] = [:]
    /// Upstream TCP connections, one per upstream at most.
    var upstreamConnections: [DNSUpstream: UpstreamTCPConnection] = [:]
    /// What forwarding did, beyond the resolver's own counters.
    public internal(set) var upstreamCounters = DNSUpstreamCounters()
    var closed = false
    var tcpClients: [UInt64: TCPClient] = [:]
    var nextClientID: UInt64 = 1
    var resolvConfStamp: String?
    var lastResolvConfCheck: NIODeadline = .uptimeNanoseconds(0)

    struct TCPClient {
        var socket: TCPSocket
        var framer = DNSTCPFramer()
    }

    /// Binds UDP port 53 on the gateway address (and on the IPv6 gateway address when the stack has
    /// IPv6), or on the configuration's `address` and `address6`, and listens on TCP port 53, registers with the stack's
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
            // Loopback entries (localhost) mean the host itself, link-local ones the host's link:
            // nothing the guest can reach.
            resolverConfiguration.addHosts(parseHostsFile(text).filter { isServedHostsAddress($0.address) })
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
        let gateway = configuration.address ?? stack.configuration.gateway
        stack.addAddress(gateway)  // a no-op for the gateway itself, or an address already owned
        udpSocket = try stack.bindUDP(port: 53, address: .v4(gateway)) { [weak self] message in
            self?.udpQuery(message)
        }
        if let ipv6 = stack.configuration.ipv6 {
            let gateway6 = configuration.address6 ?? ipv6.gateway
            _ = stack.addIPv6Address(gateway6)
            do {
                udpSocket6 = try stack.bindUDP(port: 53, address: .v6(gateway6)) { [weak self] message in
                    self?.udpQuery(message)
                }
            } catch {
                udpSocket?.close()
                throw error
            }
        }
        try stack.listenTCP(port: 53) { [weak self] socket in
            self?.accepted(socket)
        }
        stack.registerTimerClient(self)
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
            let now = NIODeadline.now()
            for ended in self.resolver.takeEndedTries() { self.tryEnded(ended, now: now) }
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
                    // From the service's address of the client's family (the one it asked).
                    let stack = driver.stack
                    let source: IPAddress
                    switch client.address {
                    case .v4: source = .v4(configuration.address ?? stack.configuration.gateway)
                    case .v6:
                        guard let gateway6 = configuration.address6 ?? stack.configuration.ipv6?.gateway else { continue }
                        source = .v6(gateway6)
                    }
                    try? stack.sendUDP(message, from: source, port: 53, to: client.address, port: client.port, now: now)
                }
            case .forward(let query, let upstream, let overTCP):
                if overTCP {
                    forwardOverTCP(query, to: upstream, now: now)
                } else {
                    forwardOverUDP(query, to: upstream)
                }
            }
        }
        for ended in resolver.takeEndedTries() { tryEnded(ended, now: now) }
    }

    // MARK: - Timers

    /// When the resolver next has a query to retry or give up on, or an idle upstream connection
    /// is to be closed.
    public var nextDeadline: NIODeadline? {
        guard let idle = idleDeadline else { return resolverDeadline }
        guard let resolverDeadline else { return idle }
        return min(idle, resolverDeadline)
    }

    /// Retries the upstream queries that timed out by `now`, or answers SERVFAIL to those out of
    /// attempts; closes upstream connections idle for `upstreamTCPIdleTimeout`.
    public func poll(now: NIODeadline) {
        perform(resolver.poll(now: now), now: now)
        closeIdleConnections(now: now)
    }

    /// Closes the service when its driver stops.
    public func driverDidStop() { close() }

    /// Unbinds UDP port 53 (both families), stops listening on TCP port 53, closes every upstream socket and
    /// connection and aborts the guest's TCP connections.
    public func close() {
        closed = true
        udpSocket?.close()
        udpSocket6?.close()
        driver?.stack.stopListeningTCP(port: 53)
        for attempt in udpTries.values { attempt.close() }
        udpTries.removeAll()
        for connection in upstreamConnections.values { connection.close() }
        upstreamConnections.removeAll()
        for client in tcpClients.values { client.socket.abort(now: .now()) }
        tcpClients.removeAll()
    }
}
