import NIOCore
import NIOPosix
import Testing
import VPNKitTestSupport
import VPNKitBase
import VPNKitStack
import VPNKitTCP
import VPNKitTransport
import VPNKitRuntime

@Suite("TCP from Swift concurrency")
struct AsyncTCPTests {
    @Test("listen → connections as an AsyncSequence; connect; read and write with backpressure; shutdown gives EOF")
    func asyncEcho() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        // Two stacks on one loop, each under its own driver, joined by an in-memory link that a
        // repeating task pumps.
        let (server, client) = try await loop.submit { () -> (NIOLoopBound<StackDriver>, NIOLoopBound<StackDriver>) in
            let link = InMemoryLink(start: .now())
            var c = StackConfiguration(macAddress: guestMAC, subnet: subnet, gateway: guestIP)
            c.gratuitousARPOnStart = false
            let a = StackDriver(stack: NetworkStack(), transport: link.a, eventLoop: loop)
            let b = StackDriver(stack: NetworkStack(configuration: c), transport: link.b, eventLoop: loop)
            a.start()
            b.start()
            link.pump(on: loop) {
                a.flush()
                b.flush()
            }
            return (NIOLoopBound(a, eventLoop: loop), NIOLoopBound(b, eventLoop: loop))
        }.get()

        let connections = try await StackDriver.listen(port: 7, on: server)
        let echo = Task {
            for await connection in connections {
                while let data = try await connection.read() { try await connection.write(data) }
                await connection.shutdown()
                return
            }
        }
        let connection = try await StackDriver.connect(to: .v4(gatewayIP), port: 7, on: client)
        let data = pattern(3 << 20)
        async let sent: Void = {
            var rest = data
            while rest.readableBytes > 0 {
                let piece = rest.readSlice(length: min(100_000, rest.readableBytes))!
                try await connection.write(piece)
            }
            await connection.shutdown()
        }()
        var received = ByteBuffer()
        while var chunk = try await connection.read() { received.writeBuffer(&chunk) }
        try await sent
        try await echo.value
        #expect(received == data)
        try await group.shutdownGracefully()
    }
}
