// A NAT flow holds and is held by its two sockets while it runs (the guest socket and the host
// stream keep their delegate until they close, instead of weak references): these tests check that
// an ended flow is let go, on both engines, including when the daemon's side of the guest
// connection stays in TIME-WAIT.

import NIOCore
import NIOPosix
import Testing
import VPNKitBase
@testable import VPNKitNAT
import VPNKitRuntime
import VPNKitStack

/// Weak references to flows, touched on the loop only.
private final class FlowWatch: @unchecked Sendable {
    struct Ref { weak var flow: TCPFlow? }
    var refs: [Ref] = []
}

/// A host server that greets each client with "x" and closes at once (so the daemon's side of the
/// guest connection closes first and ends in TIME-WAIT).
private final class GreetAndClose: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(ByteBuffer(string: "x"))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

@Suite("NAT flows are let go once they end")
struct NATFlowLifetimeTests {
    @Test("20 connections the host closes first: each flow is freed once both ends are done, though the daemon's side waits in TIME-WAIT", arguments: Engine.allCases)
    func endedFlowsAreFreed(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        let server = try await ServerBootstrap(group: world.group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(GreetAndClose()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = UInt16(server.localAddress!.port!)
        let watch = FlowWatch()
        let gateway = world.gateway
        for _ in 0..<20 {
            let connection = try await StackDriver.connect(to: .v4(hostAlias), port: port, on: world.guest)
            let greeting = try await connection.read()
            #expect(greeting.map { String(buffer: $0) } == "x")
            try await world.loop.submit {
                for flow in NATWorld.nat(of: gateway).tcpFlows.values { watch.refs.append(FlowWatch.Ref(flow: flow)) }
            }.get()
            // The host's end, then ours.
            #expect(try await connection.read() == nil)
            await connection.shutdown()
        }
        var freed = false
        for _ in 0..<500 where !freed {
            freed = try await world.loop.submit {
                NATWorld.nat(of: gateway).openTCPFlows == 0 && watch.refs.allSatisfy { $0.flow == nil }
            }.get()
            if !freed { try await Task.sleep(for: .milliseconds(10)) }
        }
        let counts = try await world.loop.submit {
            (watched: watch.refs.count, alive: watch.refs.filter { $0.flow != nil }.count, open: NATWorld.nat(of: gateway).openTCPFlows)
        }.get()
        #expect(counts.watched >= 20)
        #expect(freed, "flows still alive: \(counts.alive) of \(counts.watched); open: \(counts.open)")
        // The daemon's side of each guest connection closed first: it is in TIME-WAIT still.
        let timeWait = try await world.loop.submit { gateway.value.stack.tcpConnectionCount }.get()
        #expect(timeWait > 0)
        try await server.close()
        try await world.shutdown()
    }
}
