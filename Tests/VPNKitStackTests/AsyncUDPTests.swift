import NIOCore
import NIOPosix
import Testing
import VPNKitBase
import VPNKitStack
import VPNKitTransport
import VPNKitRuntime

@Suite("UDP from Swift concurrency")
struct AsyncUDPTests {
    @Test("AsyncUDPSocket: datagrams arrive as an AsyncSequence, sends hop to the stack's event loop")
    func asyncSocket() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        // The gateway stack runs under a StackDriver on the loop; a guest stack sits on the other end of
        // an in-memory link that a repeating task pumps with the loop's clock.
        let (driver, guestBox) = try await loop.submit { () -> (NIOLoopBound<StackDriver>, NIOLoopBound<GuestSide>) in
            let link = InMemoryLink(start: .now())
            let driver = StackDriver(stack: NetworkStack(), transport: link.a, eventLoop: loop)
            driver.start()
            var c = StackConfiguration(macAddress: guestMAC, subnet: subnet, gateway: guestIP)
            c.gratuitousARPOnStart = false
            let guest = GuestSide(stack: NetworkStack(configuration: c), link: link)
            link.b.onFrame = { [unowned guest] frame in guest.stack.receive(frame, now: .now()) }
            func pump() {
                loop.assumeIsolated().scheduleTask(in: .milliseconds(1)) {
                    for frame in guest.stack.takeOutput() { link.b.send(frame) }
                    link.deliver(until: .now())
                    driver.flush()
                    pump()
                }
            }
            pump()
            return (NIOLoopBound(driver, eventLoop: loop), NIOLoopBound(guest, eventLoop: loop))
        }.get()

        let socket = try await AsyncUDPSocket.bind(port: 7, on: driver)
        let replyTask = Task { () -> [ByteBuffer] in
            var received: [ByteBuffer] = []
            for await message in socket.messages {
                received.append(message.payload)
                try? await socket.send(message.payload, to: message.source, port: message.sourcePort)
                if received.count == 3 { break }
            }
            return received
        }
        // The guest sends three datagrams and collects the echoes.
        let echoes = try await loop.submit { () -> NIOLoopBound<EchoCollector> in
            let guest = guestBox.value
            let collector = EchoCollector()
            let socket = try guest.stack.bindUDP(port: 4000) { [unowned collector] in collector.messages.append($0.payload) }
            collector.socket = socket
            for text in ["one", "two", "three"] {
                try guest.stack.sendUDP(ByteBuffer(string: text), from: .v4(guestIP), port: 4000, to: .v4(gatewayIP), port: 7, now: .now())
            }
            return NIOLoopBound(collector, eventLoop: loop)
        }.get()
        let received = await replyTask.value
        #expect(received.map { String(buffer: $0) } == ["one", "two", "three"])
        var got: [String] = []
        for _ in 0..<200 {
            got = try await loop.submit { echoes.value.messages.map { String(buffer: $0) } }.get()
            if got.count == 3 { break }
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(got == ["one", "two", "three"])
        await socket.close()
        try await loop.submit { driver.value.stop() }.get()
        try await group.shutdownGracefully()
    }
}

final class GuestSide {
    let stack: NetworkStack
    let link: InMemoryLink
    init(stack: NetworkStack, link: InMemoryLink) {
        self.stack = stack
        self.link = link
    }
}

final class EchoCollector {
    var messages: [ByteBuffer] = []
    var socket: UDPSocket?
}
