import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import VPNKit

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Print a running daemon's counters and flow table (from its --stats socket).",
        discussion: "Example: vpnkit stats /run/vpnkit.stats"
    )

    @Argument(help: "The unix socket given to `vpnkit run --stats`.")
    var path: String

    @Flag(help: "Print the JSON as served.")
    var json = false

    @Flag(help: "Print Prometheus text exposition format.")
    var prometheus = false

    func run() async throws {
        let text: String
        do {
            text = try await Self.fetch(path: path, request: prometheus ? "prometheus" : "json")
        } catch {
            throw ValidationError("cannot read stats from \(path): \(error)")
        }
        if json || prometheus {
            print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
            return
        }
        guard let snapshot = try? JSONDecoder().decode(StatsSnapshot.self, from: Data(text.utf8)) else {
            throw ValidationError("the daemon's answer is not stats JSON")
        }
        print(Self.table(snapshot))
    }

    static func fetch(path: String, request: String) async throws -> String {
        let group = MultiThreadedEventLoopGroup.singleton
        let collected = group.next().makePromise(of: String.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(promise: collected))
                }
            }
            .connect(unixDomainSocketPath: path).get()
        try await channel.writeAndFlush(ByteBuffer(string: request + "\n")).get()
        return try await collected.futureResult.get()
    }

    static func table(_ s: StatsSnapshot) -> String {
        var lines: [String] = []
        func row(_ name: String, _ value: any CustomStringConvertible) {
            lines.append(name.padding(toLength: 40, withPad: " ", startingAt: 0) + " " + value.description)
        }
        lines.append("FLOWS")
        row("tcp open", s.flows.tcpOpen)
        row("udp open", s.flows.udpOpen)
        row("tcp total", s.flows.tcpTotal)
        row("udp total", s.flows.udpTotal)
        row("icmp echo total", s.flows.icmpEchoTotal)
        if let dhcp = s.dhcp {
            row("dhcp leases", dhcp.leases)
            row("dhcp bound", dhcp.bound)
        }
        lines.append("\nSTACK")
        for (name, value) in s.stack.sorted(by: { $0.key < $1.key }) where value != 0 { row(name, value) }
        if let nat = s.nat {
            lines.append("\nNAT")
            for (name, value) in nat.sorted(by: { $0.key < $1.key }) where value != 0 { row(name, value) }
        }
        if let dns = s.dns {
            lines.append("\nDNS")
            for (name, value) in dns.sorted(by: { $0.key < $1.key }) where value != 0 { row(name, value) }
        }
        if !s.published.isEmpty {
            lines.append("\nPUBLISHED")
            for port in s.published { lines.append(port) }
        }
        if !s.flowTable.isEmpty {
            lines.append("")
            lines += flowTable(s.flowTable)
        }
        return lines.joined(separator: "\n")
    }
}

extension StatsCommand {
    /// The flow table's lines, a heading first, the oldest flow next (`vpnkit stats` and `vpnkit flows`).
    static func flowTable(_ flows: [NATFlowSnapshot]) -> [String] {
        var lines = ["PROTO GUEST                                  REMOTE                                 STATE          TO HOST      TO GUEST   AGE"]
        for f in flows.sorted(by: { $0.ageSeconds > $1.ageSeconds }) {
            lines.append(
                [f.protocol.padding(toLength: 5, withPad: " ", startingAt: 0), f.guest.padding(toLength: 38, withPad: " ", startingAt: 0),
                 f.remote.padding(toLength: 38, withPad: " ", startingAt: 0), f.state.padding(toLength: 14, withPad: " ", startingAt: 0),
                 String(f.bytesToHost).padding(toLength: 12, withPad: " ", startingAt: 0), String(f.bytesToGuest).padding(toLength: 10, withPad: " ", startingAt: 0),
                 String(format: "%.0fs", f.ageSeconds)].joined(separator: " "))
        }
        return lines
    }
}

private final class Collector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<String>
    var text = ""

    init(promise: EventLoopPromise<String>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        text += buffer.readString(length: buffer.readableBytes) ?? ""
    }

    func channelInactive(context: ChannelHandlerContext) { promise.succeed(text) }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
