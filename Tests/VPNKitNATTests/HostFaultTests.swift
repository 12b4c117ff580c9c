import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing
import VPNKitBase
import VPNKitNAT
import VPNKitStack
import VPNKitTCP
import VPNKitTestSupport
import VPNKitRuntime

/// A misbehaving server on 127.0.0.1, on a thread of its own, for one connection.
final class FaultyHostServer: Sendable {
    enum Behaviour: Sendable {
        /// Sends this many bytes, then resets the connection (SO_LINGER 0).
        case resetAfter(Int)
        /// Accepts and never reads nor writes (its receive buffer fills, then the window closes).
        case stopReading
        /// Sends "bye", closes its write side, then reads everything the client sends.
        case closeWriteOnly
    }

    let port: UInt16
    private let listener: Int32
    /// Set by `stop()`: a server that holds its connection lets go.
    private let stopped = Atomic(false)
    /// What the server read (closeWriteOnly), complete once the client closed.
    let received = Mutex<[UInt8]>([])
    let finished = Mutex(false)

    init(_ behaviour: Behaviour) throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.listener = listener
        port = try bindLoopback(listener)
        guard listen(listener, 4) == 0 else { throw POSIXError(.EADDRINUSE) }
        let thread = Thread { [self] in self.serve(behaviour) }
        thread.start()
    }

    private func serve(_ behaviour: Behaviour) {
        let client = accept(listener, nil, nil)
        guard client >= 0 else { return }
        switch behaviour {
        case .resetAfter(let count):
            let chunk = [UInt8](repeating: 0x5A, count: count)
            var sent = 0
            while sent < count {
                let n = chunk.withUnsafeBytes { write(client, $0.baseAddress! + sent, count - sent) }
                guard n > 0 else { break }
                sent += n
            }
            usleep(200_000)
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            close(client)
        case .stopReading:
            // Hold the connection, unread, until the test is done (ten minutes at most: a starved CI
            // machine once took 290 s over this test, and a server that let go after two minutes
            // handed the guest an EOF instead of silence).
            for _ in 0..<6000 where !stopped.load(ordering: .relaxed) { usleep(100_000) }
            close(client)
        case .closeWriteOnly:
            _ = "bye".withCString { write(client, $0, 3) }
            shutdown(client, Int32(SHUT_WR))
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(client, &buffer, buffer.count)
                guard n > 0 else { break }
                received.withLock { $0 += buffer[0..<n] }
            }
            close(client)
        }
        finished.withLock { $0 = true }
    }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

@Suite("Faults on the host side: never silent loss, never unbounded buffering")
struct HostFaultTests {
    @Test("a host server that resets mid-transfer: the guest gets what was sent, then a reset", arguments: Engine.allCases)
    func resetMidTransfer(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        let server = try FaultyHostServer(.resetAfter(100_000))
        defer { server.stop() }
        let connection = try await StackDriver.connect(to: .v4(hostAlias), port: server.port, on: world.guest)
        var received = 0
        await #expect(throws: AsyncTCPError.connectionClosed(.reset)) {
            while let bytes = try await connection.read() { received += bytes.readableBytes }
        }
        #expect(received <= 100_000)
        let counters = try await world.nat { $0.counters }
        #expect(counters.tcpResetsFromHost == 1)
        #expect(try await world.nat { $0.openTCPFlows } == 0)
        try await world.shutdown()
    }

    @Test("a host server that stops reading: the guest's writes stall (window closed), and what waits in between stays under 2 MiB", arguments: Engine.allCases)
    func stopsReading(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        let server = try FaultyHostServer(.stopReading)
        defer { server.stop() }
        let connection = try await StackDriver.connect(to: .v4(hostAlias), port: server.port, on: world.guest)
        let written = Atomic<Int>(0)
        let writer = Task {
            let chunk = ByteBuffer(repeating: 0xA5, count: 65_536)
            for _ in 0..<(64 << 4) {  // 64 MiB: far more than every buffer on the way holds
                try await connection.write(chunk)
                written.add(chunk.readableBytes, ordering: .relaxed)
            }
        }
        // Let the pipe fill: the kernel's loopback buffers take some megabytes, then nothing moves.
        var previous = -1
        for _ in 0..<60 {
            try await Task.sleep(for: .milliseconds(250))
            let now = written.load(ordering: .relaxed)
            if now == previous { break }
            previous = now
        }
        let stalled = written.load(ordering: .relaxed)
        #expect(stalled < 64 << 20, "all 64 MiB were taken: nothing pushed back")
        let toHost = try await world.nat { $0.counters.tcpBytesToHost }
        // Accepted from the guest but not yet in the host's socket: the guest's send buffer, the
        // gateway stack's receive buffer, the NAT's queue (512 KiB) and one read: about 1.25 MiB.
        #expect(UInt64(stalled) - min(UInt64(stalled), toHost) <= 2 << 20, "written \(stalled), to host \(toHost)")
        writer.cancel()
        await connection.abort()
        try await world.shutdown()
    }

    @Test("a host server that closes its write side only: the guest reads to EOF and can still send", arguments: Engine.allCases)
    func closeWriteOnly(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        let server = try FaultyHostServer(.closeWriteOnly)
        defer { server.stop() }
        let connection = try await StackDriver.connect(to: .v4(hostAlias), port: server.port, on: world.guest)
        var received = ByteBuffer()
        while var bytes = try await connection.read() { received.writeBuffer(&bytes) }
        #expect(String(buffer: received) == "bye")
        try await connection.write(ByteBuffer(string: "still here"))
        await connection.shutdown()
        for _ in 0..<100 where !server.finished.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(50)) }
        #expect(String(decoding: server.received.withLock { $0 }, as: UTF8.self) == "still here")
        try await world.shutdown()
    }

    @Test("a host server that accepts and never answers: the connection stays open (no idle cut) until the guest gives up", arguments: Engine.allCases)
    func neverAnswers(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        let server = try FaultyHostServer(.stopReading)
        defer { server.stop() }
        let connection = try await StackDriver.connect(to: .v4(hostAlias), port: server.port, on: world.guest)
        // The guest's own timeout: a read that has nothing after a second.
        let reading = Task { try await connection.read() }
        try await Task.sleep(for: .seconds(1))
        #expect(try await world.nat { $0.openTCPFlows } == 1)
        await connection.abort()
        await #expect(throws: AsyncTCPError.self) { _ = try await reading.value }
        for _ in 0..<50 where try await world.nat({ $0.openTCPFlows }) != 0 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try await world.nat { $0.openTCPFlows } == 0)
        #expect(try await world.nat { $0.counters.tcpResetsFromGuest } == 1)
        try await world.shutdown()
    }
}
