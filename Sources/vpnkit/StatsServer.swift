import Foundation
import Logging
import NIOCore
import NIOPosix
import VPNKitNAT
import VPNKitStack
import VPNKitTransport

/// What `--stats` serves: every counter, and the flow table.
struct StatsSnapshot: Codable {
    var stack: [String: UInt64]
    var nat: NATCounters?
    var dns: [String: UInt64]?
    var dhcp: DHCPStats?
    var `switch`: SwitchStats?
    var flows: FlowStats
    var flowTable: [NATFlowSnapshot]

    struct DHCPStats: Codable {
        var leases: Int
        var bound: Int
        var counters: [String: UInt64]
    }

    struct SwitchStats: Codable {
        var ports: Int
        var macs: Int
        var counters: [String: UInt64]
    }

    struct FlowStats: Codable {
        var tcpOpen: Int
        var udpOpen: Int
        var tcpTotal: UInt64
        var udpTotal: UInt64
        var icmpEchoTotal: UInt64
    }

    init(driver: StackDriver, now: NIODeadline) {
        var stack: [String: UInt64] = [:]
        let counters = driver.stack.statistics
        for counter in StackCounter.allCases { stack[counter.description] = counters[counter] }
        self.stack = stack
        let nat = driver.nat
        self.nat = nat?.counters
        self.dns = driver.dns.map { dns in
            let upstream = namedCounters(dns.upstreamCounters).map { (name: "upstream_" + $0.name, value: $0.value) }
            return Dictionary(uniqueKeysWithValues: (namedCounters(dns.counters) + upstream).map { ($0.name, $0.value) })
        }
        if let dhcp = driver.dhcp {
            let leases = dhcp.leases(now: now)
            let c = dhcp.counters
            self.dhcp = DHCPStats(
                leases: leases.count, bound: leases.filter { $0.state == .bound }.count,
                counters: [
                    "discovers": c.discovers, "offers": c.offers, "requests": c.requests, "acks": c.acks, "naks": c.naks,
                    "declines": c.declines, "releases": c.releases, "informs": c.informs, "pool_exhausted": c.poolExhausted,
                    "malformed": c.malformed, "ignored": c.ignored, "refused_not_from_holder": c.refusedNotFromHolder,
                ])
        }
        if let link = driver.guestSwitch {
            self.switch = SwitchStats(
                ports: link.portCount, macs: link.addressCount,
                counters: Dictionary(uniqueKeysWithValues: namedCounters(link.counters).map { ($0.name, $0.value) }))
        }
        self.flows = FlowStats(
            tcpOpen: nat?.openTCPFlows ?? 0, udpOpen: nat?.openUDPFlows ?? 0, tcpTotal: nat?.counters.tcpConnectsStarted ?? 0,
            udpTotal: nat?.counters.udpFlowsOpened ?? 0, icmpEchoTotal: nat?.counters.icmpEchoRequests ?? 0)
        self.flowTable = nat?.flows(now: now) ?? []
    }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return (try? String(decoding: encoder.encode(self), as: UTF8.self)) ?? "{}"
    }

    /// Prometheus text exposition format.
    func prometheus() -> String {
        var out = ""
        func metric(_ name: String, _ value: UInt64, type: String = "counter") {
            out += "# TYPE vpnkit_\(name) \(type)\nvpnkit_\(name) \(value)\n"
        }
        for (name, value) in stack.sorted(by: { $0.key < $1.key }) { metric("stack_\(name)_total", value) }
        if let nat {
            for counter in namedCounters(nat) { metric("nat_\(counter.name)_total", counter.value) }
        }
        for (name, value) in (dns ?? [:]).sorted(by: { $0.key < $1.key }) { metric("dns_\(name)_total", value) }
        if let dhcp {
            metric("dhcp_leases", UInt64(dhcp.leases), type: "gauge")
            for (name, value) in dhcp.counters.sorted(by: { $0.key < $1.key }) { metric("dhcp_\(name)_total", value) }
        }
        if let link = self.switch {
            metric("switch_ports", UInt64(link.ports), type: "gauge")
            metric("switch_macs", UInt64(link.macs), type: "gauge")
            for (name, value) in link.counters.sorted(by: { $0.key < $1.key }) { metric("switch_\(name)_total", value) }
        }
        metric("tcp_flows_open", UInt64(flows.tcpOpen), type: "gauge")
        metric("udp_flows_open", UInt64(flows.udpOpen), type: "gauge")
        return out
    }
}

/// The `UInt64` fields of a counters struct, by snake_case name, in declaration order.
func namedCounters(_ counters: Any) -> [(name: String, value: UInt64)] { CounterNames.fields(of: counters) }

/// Serves `StatsSnapshot` on a unix socket: a client sends one line — `json` (or nothing but a
/// newline), `prometheus`, or an HTTP `GET /metrics` / `GET /` — and gets the answer, then EOF.
/// The socket file is its owner's only (mode 0600) from the moment it appears: the counters and the
/// flow table say who the guest talks to. The listener is the one the VM's socket uses
/// (`UnixStreamServer`): out of descriptors it pauses for a second instead of spinning, binds again
/// only over its own file, and on close removes the file only if it is still its own.
final class StatsServer: Sendable {
    let server: NIOLoopBound<UnixStreamServer>
    let path: String

    init(server: NIOLoopBound<UnixStreamServer>, path: String) {
        self.server = server
        self.path = path
    }

    static func start(path: String, driver: NIOLoopBound<StackDriver>, on loop: any EventLoop, logger: Logger) async throws -> StatsServer {
        let server = try await loop.flatSubmit {
            // A stale socket file at `path` is replaced; any other kind of file makes this fail.
            UnixStreamServer.bind(path: path, options: SocketTransportOptions(socketFileMode: 0o600), childAutoRead: true, on: loop) { channel in
                try channel.pipeline.syncOperations.addHandler(StatsHandler(driver: driver))
            }.map { server in
                let log = RateLimitedLogger(logger)
                server.value.report = { event in logListenerEvent(event, listener: "the stats socket \(path)", log: log) }
                return server
            }
        }.get()
        return StatsServer(server: server, path: path)
    }

    func close() {
        let server = self.server
        server.eventLoop.execute { server.value.close() }
    }
}

final class StatsHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    /// A client that has not sent its request line by then is disconnected, so that silent clients
    /// cannot hold descriptors (which the NAT's host sockets need) for ever.
    static let requestTimeout = TimeAmount.seconds(5)
    let driver: NIOLoopBound<StackDriver>
    var request = ""
    var answered = false
    private var deadline: Scheduled<Void>?

    init(driver: NIOLoopBound<StackDriver>) { self.driver = driver }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: Self.requestTimeout) {
            bound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        request += buffer.readString(length: buffer.readableBytes) ?? ""
        if request.count > 4096 {
            context.close(promise: nil)
            return
        }
        guard !answered, let line = request.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first,
            request.contains("\n")
        else { return }
        answered = true
        deadline?.cancel()
        deadline = nil
        let snapshot = StatsSnapshot(driver: driver.value, now: .now())
        let command = line.trimmingCharacters(in: .whitespacesAndNewlines)
        var body: String
        var contentType = "application/json"
        if command.hasPrefix("GET ") {
            if command.hasPrefix("GET /metrics") {
                body = snapshot.prometheus()
                contentType = "text/plain; version=0.0.4"
            } else {
                body = snapshot.json()
            }
            body = "HTTP/1.0 200 OK\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        } else if command == "prometheus" {
            body = snapshot.prometheus()
        } else {
            body = snapshot.json() + "\n"
        }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: body))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// Logs what a pausing listener reports (the guest's socket, the stats socket). A failed accept can
/// come once per connection, so those lines are rate-limited; pauses come at most once a second.
func logListenerEvent(_ event: PausingListener.Event, listener: String, log: RateLimitedLogger) {
    switch event {
    case .resumed: log.logger.info("\(listener): \(event)")
    case .acceptFailed: log.log(.notice, key: "\(listener): accept failed", "\(listener): \(event)")
    case .paused, .resumeFailed: log.logger.notice("\(listener): \(event)")
    }
}
