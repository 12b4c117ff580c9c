import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import VPNKit

/// What `--stats` serves: every counter of the stack's `StackReport` (by group, under the names
/// the exit summary and the swift-metrics export use), and the flow table.
struct StatsSnapshot: Codable {
    var stack: [String: UInt64]
    var link: [String: UInt64]
    var nat: [String: UInt64]?
    var dns: [String: UInt64]?
    var dhcp: DHCPStats?
    var `switch`: SwitchStats?
    var flows: FlowStats
    var flowTable: [NATFlowSnapshot]
    /// The published ports' host listeners in their text form (`tcp:[::1]:8080:80`).
    var published: [String]
    /// Every counter and gauge as Prometheus names them (`GROUP_NAME`), in report order.
    private var flattened: [Metric]

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

    struct Metric: Codable {
        var name: String
        var value: UInt64
        var isGauge: Bool
    }

    init(_ report: StackReport) {
        func counters(_ group: String) -> [String: UInt64]? {
            report[group: group].map { Dictionary(uniqueKeysWithValues: $0.counters.map { ($0.name, $0.value) }) }
        }
        func gauge(_ group: String, _ name: String) -> UInt64 {
            report[group: group]?.gauges.first { $0.name == name }?.value ?? 0
        }
        stack = counters("stack") ?? [:]
        link = counters("link") ?? [:]
        nat = counters("nat")
        dns = counters("dns")
        dhcp = counters("dhcp").map { DHCPStats(leases: Int(gauge("dhcp", "leases")), bound: Int(gauge("dhcp", "bound")), counters: $0) }
        self.switch = counters("switch").map { SwitchStats(ports: Int(gauge("switch", "ports")), macs: Int(gauge("switch", "macs")), counters: $0) }
        flows = FlowStats(
            tcpOpen: Int(gauge("nat", "tcp_flows")), udpOpen: Int(gauge("nat", "udp_flows")), tcpTotal: nat?["tcp_connects_started"] ?? 0,
            udpTotal: nat?["udp_flows_opened"] ?? 0, icmpEchoTotal: nat?["icmp_echo_requests"] ?? 0)
        flowTable = report.flows
        published = report.published.map(\.description)
        flattened = report.flattened.map { Metric(name: $0.name, value: $0.value, isGauge: $0.isGauge) }
    }

    enum CodingKeys: String, CodingKey {
        case stack, link, nat, dns, dhcp, `switch`, flows, flowTable, published
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        stack = try c.decode([String: UInt64].self, forKey: .stack)
        link = try c.decodeIfPresent([String: UInt64].self, forKey: .link) ?? [:]
        nat = try c.decodeIfPresent([String: UInt64].self, forKey: .nat)
        dns = try c.decodeIfPresent([String: UInt64].self, forKey: .dns)
        dhcp = try c.decodeIfPresent(DHCPStats.self, forKey: .dhcp)
        self.switch = try c.decodeIfPresent(SwitchStats.self, forKey: .switch)
        flows = try c.decode(FlowStats.self, forKey: .flows)
        flowTable = try c.decode([NATFlowSnapshot].self, forKey: .flowTable)
        published = try c.decodeIfPresent([String].self, forKey: .published) ?? []
        flattened = []
    }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return (try? String(decoding: encoder.encode(self), as: UTF8.self)) ?? "{}"
    }

    /// Prometheus text exposition format: `vpnkit_GROUP_NAME_total` for counters, `vpnkit_GROUP_NAME`
    /// for gauges.
    func prometheus() -> String {
        var out = ""
        for metric in flattened {
            let name = metric.isGauge ? "vpnkit_\(metric.name)" : "vpnkit_\(metric.name)_total"
            out += "# TYPE \(name) \(metric.isGauge ? "gauge" : "counter")\n\(name) \(metric.value)\n"
        }
        return out
    }
}

/// Serves `StatsSnapshot` on a unix socket: a client sends one line — `json` (or nothing but a
/// newline), `prometheus`, or an HTTP GET — and gets the answer, then EOF. An HTTP GET of `/stats`,
/// `/metrics`, `/flows` or `/forwards` is answered by the control API's routes (`ControlRoutes`),
/// so the two sockets' read-only answers come from one place; `GET /` and any other path answer
/// the stats JSON, as before. Nothing on this socket changes anything.
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

    static func start(path: String, routes: ControlRoutes, logger: Logger) async throws -> StatsServer {
        let stack = routes.stack
        let loop = LocalSocketServer.loop(for: stack)
        let server = try await loop.flatSubmit {
            // A stale socket file at `path` is replaced; any other kind of file makes this fail.
            LocalSocketServer.bind(path: path, label: "the stats socket", logger: logger, on: loop) { channel in
                try channel.pipeline.syncOperations.addHandler(StatsHandler(routes: routes))
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
    /// A client that has not sent its request line by then is disconnected.
    static let requestTimeout = RequestDeadline.timeout
    /// The read-only paths an HTTP GET is answered from by the control API's routes.
    static let routedPaths: Set<String> = ["/stats", "/metrics", "/flows", "/forwards"]
    let routes: ControlRoutes
    var stack: UserspaceStack { routes.stack }
    var request = ""
    var answered = false
    private var deadline = RequestDeadline()

    init(routes: ControlRoutes) { self.routes = routes }

    func handlerAdded(context: ChannelHandlerContext) { deadline.start(context) }

    func handlerRemoved(context: ChannelHandlerContext) { deadline.cancel() }

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
        deadline.cancel()
        let command = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if command.hasPrefix("GET ") {
            let words = command.split(separator: " ")
            let target = words.count > 1 ? String(words[1]) : "/"
            let path = String(target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
            let uri = Self.routedPaths.contains(path) ? path : "/stats"
            let routes = self.routes
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            Task {
                let response = await routes.handle(method: "GET", uri: uri, body: ByteBuffer())
                loop.execute { StatsHandler.writeHTTP(response, context: bound.value) }
            }
            return
        }
        let prometheus = command == "prometheus"
        guard stack.eventLoop === context.eventLoop else {
            // The stack runs on another loop (the reactor): its report comes through a hop.
            let stack = self.stack
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            Task {
                let report = try? await stack.report()
                loop.execute {
                    guard let report else { return bound.value.close(promise: nil) }
                    StatsHandler.writeSnapshot(StatsSnapshot(report), prometheus: prometheus, context: bound.value)
                }
            }
            return
        }
        Self.writeSnapshot(StatsSnapshot(stack.reportOnLoop()), prometheus: prometheus, context: context)
    }

    /// The line protocol's answer (JSON, or Prometheus text), then EOF.
    static func writeSnapshot(_ snapshot: StatsSnapshot, prometheus: Bool, context: ChannelHandlerContext) {
        let body = prometheus ? snapshot.prometheus() : snapshot.json() + "\n"
        context.writeAndFlush(NIOAny(ByteBuffer(string: body))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// An HTTP/1.0 answer, then EOF (this socket reads one line; it has no HTTP parser of its own).
    static func writeHTTP(_ response: ControlResponse, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        let reason = HTTPResponseStatus(statusCode: response.status).reasonPhrase
        let body = response.wireBody
        let text = "HTTP/1.0 \(response.status) \(reason)\r\nContent-Type: \(response.contentType)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        context.writeAndFlush(NIOAny(ByteBuffer(string: text))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
