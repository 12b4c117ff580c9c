#if os(Linux)
import Foundation
import Glibc
import NIOCore
import Synchronization
import Testing
import VPNKitBase
import VPNKitReactor
import VPNKitSystem

/// A loopback TCP server on a thread of its own, with blocking sockets: echoes what it reads and
/// closes after the client's EOF (or resets, with `reset`).
final class BlockingEchoServer: @unchecked Sendable {
    let fd: CInt
    let port: UInt16
    let received = Mutex(0)

    init() throws {
        fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        var address = SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: 0)
        try SystemCall.bind(fd, to: address)
        try SystemCall.listen(fd, backlog: 16)
        address = try SystemCall.localAddress(fd)
        port = address.endpoint!.port
    }

    /// Serves one client, then returns.
    func serveOne() {
        let fd = self.fd
        Thread.detachNewThread { [self] in
            let client = accept(fd, nil, nil)
            guard client >= 0 else { return }
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(client, &buffer, buffer.count)
                if n <= 0 { break }
                received.withLock { $0 += n }
                var offset = 0
                while offset < n {
                    let w = buffer.withUnsafeBytes { write(client, $0.baseAddress! + offset, n - offset) }
                    if w <= 0 { break }
                    offset += w
                }
            }
            close(client)
        }
    }

    deinit { close(fd) }
}

/// Records a stream's events, on the reactor's thread; read from the test through `snapshot`.
final class StreamRecorder: ReactorStreamDelegate, @unchecked Sendable {
    var connected = false
    var connectError: SystemError?
    var data = ByteBuffer()
    var ended = false
    var failed: SystemError?
    var piecesWritten = 0
    var keepReading = true

    func streamConnected(_ stream: ReactorStream) { connected = true }
    func streamConnectFailed(_ stream: ReactorStream, _ error: SystemError) { connectError = error }
    func streamRead(_ stream: ReactorStream, _ data: ByteBuffer) { self.data.writeImmutableBuffer(data) }
    func streamReadComplete(_ stream: ReactorStream) { if keepReading { stream.read() } }
    func streamEnded(_ stream: ReactorStream) { ended = true }
    func streamWritable(_ stream: ReactorStream) {}
    func streamWrote(_ stream: ReactorStream, pieces: Int) { piecesWritten += pieces }
    func streamFailed(_ stream: ReactorStream, _ error: SystemError) { failed = error }
}

/// Waits (polling the reactor) until `condition` holds on its thread, or about 10 s pass.
func eventually(on reactor: Reactor, _ condition: @escaping @Sendable () -> Bool) async throws -> Bool {
    for _ in 0..<1000 {
        if try await reactor.submit(condition).get() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return false
}

@Suite("The reactor: an epoll loop that is a SwiftNIO EventLoop")
struct ReactorTests {
    @Test("tasks from other threads run on the loop, in order; submit returns the value")
    func tasks() async throws {
        let reactor = try Reactor.start(name: "test-tasks")
        #expect(!reactor.inEventLoop)
        let order = Mutex<[Int]>([])
        for index in 0..<100 {
            reactor.execute {
                precondition(reactor.inEventLoop)
                order.withLock { $0.append(index) }
            }
        }
        let value = try await reactor.submit { reactor.inEventLoop ? 42 : 0 }.get()
        #expect(value == 42)
        #expect(order.withLock { $0 } == Array(0..<100))
        await reactor.shutdown()
    }

    @Test("scheduled tasks fire at their deadline, not before, in deadline order; a cancelled one never fires")
    func scheduled() async throws {
        let reactor = try Reactor.start(name: "test-timers")
        let fired = Mutex<[(Int, NIODeadline)]>([])
        let start = NIODeadline.now()
        let delays = [30, 10, 20]
        for (index, delay) in delays.enumerated() {
            _ = reactor.scheduleTask(in: .milliseconds(Int64(delay))) { fired.withLock { $0.append((index, .now())) } }
        }
        let cancelled = reactor.scheduleTask(in: .milliseconds(15)) { fired.withLock { $0.append((99, .now())) } }
        cancelled.cancel()
        try await Task.sleep(for: .milliseconds(200))
        let result = fired.withLock { $0 }
        #expect(result.map(\.0) == [1, 2, 0])
        for (index, at) in result {
            #expect(at - start >= .milliseconds(Int64(delays[index])))
        }
        await reactor.shutdown()
    }

    @Test("a ReactorTimer armed again fires once, at its latest deadline")
    func rearm() async throws {
        let reactor = try Reactor.start(name: "test-rearm")
        let count = Mutex(0)
        let firedAt = Mutex<NIODeadline?>(nil)
        let start = NIODeadline.now()
        try await reactor.submit {
            let timer = ReactorTimer(reactor: reactor) {
                count.withLock { $0 += 1 }
                firedAt.withLock { $0 = .now() }
            }
            timer.arm(at: start + .milliseconds(10))
            // Kept alive by the loop's heap entry until it fires.
            timer.arm(at: start + .milliseconds(60))
        }.get()
        try await Task.sleep(for: .milliseconds(250))
        #expect(count.withLock { $0 } == 1)
        #expect(try #require(firedAt.withLock { $0 }) - start >= .milliseconds(60))
        await reactor.shutdown()
    }

    @Test("a stream connects, writes 4 MiB in 1,000 pieces, reads the echo back byte for byte, and half-closes")
    func streamEcho() async throws {
        let reactor = try Reactor.start(name: "test-stream")
        let server = try BlockingEchoServer()
        server.serveOne()
        let recorder = StreamRecorder()
        let box = try await reactor.submit {
            let stream = try ReactorStream.connect(
                on: reactor, to: SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: server.port), timeout: .seconds(5))
            stream.delegate = recorder
            return UncheckedStream(stream)
        }.get()
        #expect(try await eventually(on: reactor) { recorder.connected })
        var sent = ByteBuffer()
        for index in 0..<(4 << 20) { sent.writeInteger(UInt8(truncatingIfNeeded: index &* 31 &+ index >> 9)) }
        let payload = sent
        try await reactor.submit {
            box.stream.read()
            var rest = payload
            let piece = rest.readableBytes / 1000 + 1
            while rest.readableBytes > 0 { box.stream.write(rest.readSlice(length: min(piece, rest.readableBytes))!) }
            box.stream.flush()
            box.stream.shutdownOutput()
        }.get()
        #expect(try await eventually(on: reactor) { recorder.ended })
        try await reactor.submit {
            #expect(recorder.data == payload)
            #expect(recorder.piecesWritten == 1000)
            #expect(recorder.failed == nil)
            #expect(box.stream.queuedBytes == 0)
            box.stream.close()
            #expect(reactor.registeredCount == 0)
        }.get()
        await reactor.shutdown()
    }

    @Test("a connect to a closed port reports ECONNREFUSED; a reset close reaches the peer as RST")
    func refusedAndReset() async throws {
        let reactor = try Reactor.start(name: "test-refused")
        // A port nothing listens on: bound, then closed.
        let probe = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        try SystemCall.bind(probe, to: SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: 0))
        let closedPort = try SystemCall.localAddress(probe).endpoint!.port
        close(probe)
        let recorder = StreamRecorder()
        _ = try await reactor.submit {
            let stream = try ReactorStream.connect(on: reactor, to: SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: closedPort), timeout: .seconds(5))
            stream.delegate = recorder
            return UncheckedStream(stream)
        }.get()
        #expect(try await eventually(on: reactor) { recorder.connectError != nil })
        #expect(try await reactor.submit { recorder.connectError?.errno }.get() == ECONNREFUSED)
        #expect(try await reactor.submit { reactor.registeredCount }.get() == 0)

        // Reset: the peer's read fails with ECONNRESET.
        let listener = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        try SystemCall.bind(listener, to: SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: 0))
        try SystemCall.listen(listener, backlog: 4)
        let port = try SystemCall.localAddress(listener).endpoint!.port
        let second = StreamRecorder()
        let box = try await reactor.submit {
            let stream = try ReactorStream.connect(on: reactor, to: SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: port), timeout: .seconds(5))
            stream.delegate = second
            return UncheckedStream(stream)
        }.get()
        let peer = accept(listener, nil, nil)
        #expect(try await eventually(on: reactor) { second.connected })
        try await reactor.submit { box.stream.close(reset: true) }.get()
        var byte: UInt8 = 0
        let n = read(peer, &byte, 1)
        #expect(n < 0 && errno == ECONNRESET)
        close(peer)
        close(listener)
        await reactor.shutdown()
    }

    @Test("a datagram socket drains a burst larger than one wakeup reads, with each sender's address")
    func datagrams() async throws {
        let reactor = try Reactor.start(name: "test-dgram")
        final class Inbox: ReactorDatagramDelegate, @unchecked Sendable {
            var payloads: [UInt32] = []
            var sources: Set<UInt16> = []
            func datagramsArrived(_ socket: ReactorDatagram, _ forEach: ((ByteBuffer, IPAddress, UInt16) -> Void) -> Void) {
                forEach { data, address, port in
                    precondition(address == .v4(IPv4Address(127, 0, 0, 1)))
                    payloads.append(data.getInteger(at: data.readerIndex, as: UInt32.self) ?? .max)
                    sources.insert(port)
                }
            }
            func datagramError(_ socket: ReactorDatagram, _ error: SystemError) {}
        }
        let inbox = Inbox()
        let receiverFD = try SystemCall.socket(family: AF_INET, type: CInt(SOCK_DGRAM.rawValue))
        try SystemCall.setOption(receiverFD, level: SOL_SOCKET, name: SO_RCVBUF, value: 1 << 20)
        try SystemCall.bind(receiverFD, to: SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: 0))
        let receiverPort = try SystemCall.localAddress(receiverFD).endpoint!.port
        let box = try await reactor.submit {
            let socket = try ReactorDatagram(adopting: receiverFD, on: reactor)
            socket.delegate = inbox
            return UncheckedDatagram(socket)
        }.get()
        // Two senders, 100 datagrams each: more than three wakeups' worth.
        let destination = SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: receiverPort)
        var senderPorts: Set<UInt16> = []
        for sender in 0..<2 {
            let fd = try SystemCall.socket(family: AF_INET, type: CInt(SOCK_DGRAM.rawValue))
            try SystemCall.bind(fd, to: SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: 0))
            senderPorts.insert(try SystemCall.localAddress(fd).endpoint!.port)
            for index in 0..<100 {
                var payload = ByteBuffer()
                payload.writeInteger(UInt32(sender * 1000 + index))
                #expect(try SystemCall.send(fd, payload, to: destination))
            }
            close(fd)
        }
        #expect(try await eventually(on: reactor) { inbox.payloads.count == 200 })
        let expectedSources = senderPorts
        let expectedPayloads = Set((0..<100).map { UInt32($0) }).union((0..<100).map { UInt32(1000 + $0) })
        try await reactor.submit {
            let payloads = Set(inbox.payloads)
            #expect(payloads == expectedPayloads)
            #expect(inbox.sources == expectedSources)
            box.socket.close()
            #expect(reactor.registeredCount == 0)
        }.get()
        await reactor.shutdown()
    }
}

struct UncheckedStream: @unchecked Sendable {
    let stream: ReactorStream
    init(_ stream: ReactorStream) { self.stream = stream }
}

struct UncheckedDatagram: @unchecked Sendable {
    let socket: ReactorDatagram
    init(_ socket: ReactorDatagram) { self.socket = socket }
}
#endif
