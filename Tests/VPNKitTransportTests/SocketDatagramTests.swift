import NIOCore
import NIOPosix
import Testing
import VPNKitTransport

#if canImport(Glibc)
import Glibc
#endif

/// One bare frame per unix datagram (vfkit, qemu `-netdev dgram`).
@Suite("Socket: unix datagram transport")
struct SocketDatagramTests {
    /// A transport bound at host.sock in a fresh directory, and a guest socket at guest.sock.
    final class Harness: Sendable {
        let directory: TemporaryDirectory
        let hostPath: String
        let guestPath: String
        let recorder = Recorder()
        let transport: NIOLoopBound<DatagramFrameTransport>

        init(fixedPeer: Bool = false, options: SocketTransportOptions = .init()) throws {
            let directory = try TemporaryDirectory()
            self.directory = directory
            hostPath = directory.file("host.sock")
            guestPath = directory.file("guest.sock")
            transport = try waitFor(DatagramFrameTransport.bind(
                path: hostPath, peer: fixedPeer ? guestPath : nil, options: options, on: socketTestLoop))
            let recorder = recorder, transport = transport
            try onLoop { recorder.attach(transport.value) }
        }

        func statistics() throws -> TransportStatistics { try onLoop { self.transport.value.statistics } }
        func peerPath() throws -> String? { try onLoop { self.transport.value.peer?.pathname } }
        func send(_ frames: [[UInt8]]) throws -> [Bool] {
            try onLoop { frames.map { self.transport.value.send(buffer($0)) } }
        }

        func close() {
            _ = try? onLoop { self.transport.value.close() }
            directory.remove()
        }
    }

    @Test func roundTripsFramesOfEverySizeAndLearnsThePeerFromTheFirstDatagram() throws {
        let harness = try Harness()
        defer { harness.close() }
        let guest = try RawSocket.datagram(boundAt: harness.guestPath)
        let frames = roundTripSizes.enumerated().map { pattern($0.element, seed: $0.offset) }

        // Until a datagram has arrived there is nobody to send to.
        #expect(try harness.send([pattern(60, seed: 0)]) == [false])
        #expect(try harness.peerPath() == nil)

        for frame in frames { try guest.send(datagram: frame, to: harness.hostPath) }
        try waitUntil("all frames received") { harness.recorder.frames.count >= frames.count }
        #expect(harness.recorder.frames == frames)
        #expect(try harness.peerPath() == harness.guestPath)

        #expect(try harness.send(frames).allSatisfy { $0 })
        for frame in frames {
            let (bytes, source) = try guest.receiveDatagram()
            #expect(bytes == frame)
            #expect(source == harness.hostPath)
        }

        let total = UInt64(frames.reduce(0) { $0 + $1.count })
        let statistics = try harness.statistics()
        #expect(statistics.framesReceived == UInt64(frames.count))
        #expect(statistics.bytesReceived == total)
        #expect(statistics.framesSent == UInt64(frames.count))
        #expect(statistics.bytesSent == total)
        #expect(statistics.sendDrops == 1)
        #expect(statistics.receiveErrors == 0)
    }

    @Test func manyBackToBackDatagramsArriveAsTheSameNumberOfFrames() throws {
        let harness = try Harness()
        defer { harness.close() }
        let guest = try RawSocket.datagram(boundAt: harness.guestPath)
        let frames = (0..<300).map { pattern(60 + $0 % 200, seed: $0) }
        for frame in frames { try guest.send(datagram: frame, to: harness.hostPath) }
        try waitUntil("300 frames received") { harness.recorder.frames.count >= frames.count }
        #expect(harness.recorder.frames == frames)

        // Sending back 300 in one tick: each is its own datagram. The guest's socket takes only a
        // few at a time (net.unix.max_dgram_qlen); the rest wait in order and follow as it reads.
        let accepted = try harness.send(frames)
        #expect(accepted.allSatisfy { $0 })
        var received: [[UInt8]] = []
        while received.count < frames.count, let (bytes, _) = try? guest.receiveDatagram(timeout: 1) {
            received.append(bytes)
        }
        #expect(received == frames)
        #expect(guest.staysQuiet(for: 0.05))
        let statistics = try harness.statistics()
        #expect(statistics.framesSent == 300)
        #expect(statistics.sendDrops == 0)
        #expect(try onLoop { harness.transport.value.socketErrors } == 0)
    }

    @Test func aPeerThatDoesNotReadGetsFramesUpToTheBudgetThenDrops() throws {
        let budget = 16 << 10
        let harness = try Harness(options: SocketTransportOptions(maxPendingBytes: budget))
        defer { harness.close() }
        let guest = try RawSocket.datagram(boundAt: harness.guestPath)
        try guest.send(datagram: pattern(60, seed: 0), to: harness.hostPath)
        try waitUntil("peer learned") { harness.recorder.frames.count == 1 }

        let frames = (0..<200).map { pattern(1000, seed: $0) }
        let accepted = try harness.send(frames)
        let sent = accepted.filter { $0 }.count
        #expect(sent < frames.count)
        #expect(sent >= budget / 1000, "at least the budget's worth is kept")
        #expect(accepted.firstIndex(of: false).map { !accepted[$0...].contains(true) } ?? false)
        let statistics = try harness.statistics()
        #expect(statistics.framesSent == UInt64(sent))
        #expect(statistics.sendDrops == UInt64(frames.count - sent))

        // What was accepted arrives, in order, once the guest reads.
        for index in 0..<sent {
            let (bytes, _) = try guest.receiveDatagram()
            #expect(bytes == frames[index])
            if bytes != frames[index] { break }
        }
        #expect(guest.staysQuiet(for: 0.05))
    }

    @Test func datagramsFromASecondSenderAreIgnoredAndCounted() throws {
        let harness = try Harness()
        defer { harness.close() }
        let guest = try RawSocket.datagram(boundAt: harness.guestPath)
        let intruder = try RawSocket.datagram(boundAt: harness.directory.file("other.sock"))
        try guest.send(datagram: pattern(60, seed: 1), to: harness.hostPath)
        try waitUntil("first frame") { harness.recorder.frames.count == 1 }
        for seed in 0..<3 { try intruder.send(datagram: pattern(60, seed: 10 + seed), to: harness.hostPath) }
        try waitUntil("three receive errors") { try harness.statistics().receiveErrors == 3 }
        try guest.send(datagram: pattern(60, seed: 2), to: harness.hostPath)
        try waitUntil("second frame") { harness.recorder.frames.count == 2 }
        #expect(harness.recorder.frames == [pattern(60, seed: 1), pattern(60, seed: 2)])
        #expect(try harness.peerPath() == harness.guestPath)
        #expect(try harness.statistics().framesReceived == 2)
        // Replies go to the peer only.
        #expect(try harness.send([pattern(61, seed: 3)]) == [true])
        #expect(try guest.receiveDatagram().bytes == pattern(61, seed: 3))
        #expect(intruder.staysQuiet(for: 0.05))
    }

    @Test func aFixedPeerIsUsedFromTheStartAndOthersAreRefused() throws {
        let harness = try Harness(fixedPeer: true)
        defer { harness.close() }
        let guest = try RawSocket.datagram(boundAt: harness.guestPath)
        let intruder = try RawSocket.datagram(boundAt: harness.directory.file("other.sock"))
        // We can send before anything arrived.
        #expect(try harness.send([pattern(100, seed: 1)]) == [true])
        #expect(try guest.receiveDatagram().bytes == pattern(100, seed: 1))
        // The first datagram, from someone else, does not become the peer.
        try intruder.send(datagram: pattern(60, seed: 2), to: harness.hostPath)
        try waitUntil("receive error") { try harness.statistics().receiveErrors == 1 }
        try guest.send(datagram: pattern(60, seed: 3), to: harness.hostPath)
        try waitUntil("frame") { harness.recorder.frames.count == 1 }
        #expect(harness.recorder.frames == [pattern(60, seed: 3)])
    }

    @Test func aDatagramOverTheMaximumIsAReceiveErrorAndTheLinkStaysUp() throws {
        let harness = try Harness()
        defer { harness.close() }
        let guest = try RawSocket.datagram(boundAt: harness.guestPath)
        try guest.send(datagram: pattern(65550, seed: 1), to: harness.hostPath)  // the default maximum
        try guest.send(datagram: pattern(65551, seed: 2), to: harness.hostPath)  // one over
        try guest.send(datagram: pattern(60, seed: 3), to: harness.hostPath)
        try waitUntil("two frames") { harness.recorder.frames.count == 2 }
        #expect(harness.recorder.frames == [pattern(65550, seed: 1), pattern(60, seed: 3)])
        let statistics = try harness.statistics()
        #expect(statistics.receiveErrors == 1)
        #expect(statistics.framesReceived == 2)
        #expect(harness.recorder.closes.isEmpty)
        // Over the maximum is refused when sending, too.
        #expect(try harness.send([pattern(65551, seed: 4), pattern(65550, seed: 5)]) == [false, true])
        #expect(try guest.receiveDatagram().bytes == pattern(65550, seed: 5))
    }

    @Test func anOversizedFirstDatagramDoesNotChooseThePeer() throws {
        let harness = try Harness(options: SocketTransportOptions(maxFrameSize: 1514))
        defer { harness.close() }
        let intruder = try RawSocket.datagram(boundAt: harness.directory.file("other.sock"))
        let guest = try RawSocket.datagram(boundAt: harness.guestPath)
        try intruder.send(datagram: pattern(1515, seed: 1), to: harness.hostPath)
        try waitUntil("receive error") { try harness.statistics().receiveErrors == 1 }
        #expect(try harness.peerPath() == nil)
        try guest.send(datagram: pattern(1514, seed: 2), to: harness.hostPath)
        try waitUntil("frame") { harness.recorder.frames.count == 1 }
        #expect(try harness.peerPath() == harness.guestPath)
    }

    @Test func closeRemovesTheSocketFileAndAStaleOneIsReplacedOnBind() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("host.sock")
        RawSocket.leaveStaleSocket(at: path)
        #expect(access(path, F_OK) == 0)
        let transport = try waitFor(DatagramFrameTransport.bind(path: path, on: socketTestLoop))
        let guest = try RawSocket.datagram(boundAt: directory.file("guest.sock"))
        try guest.send(datagram: pattern(60, seed: 1), to: path)  // reaches the new socket
        let recorder = Recorder()
        try onLoop { recorder.attach(transport.value) }
        try waitUntil("frame") { recorder.frames.count == 1 }
        let sentAfterClose = try onLoop {
            transport.value.close()
            transport.value.close()
            return transport.value.send(buffer(pattern(60, seed: 2)))
        }
        #expect(!sentAfterClose)
        #expect(access(path, F_OK) != 0, "socket file removed")
        #expect(recorder.closes.isEmpty)
    }
}

extension SocketDatagramTests {
    /// A known limitation, pinned so that it stays visible: SwiftNIO 2.101 cannot turn an unnamed
    /// source address into a SocketAddress and closes the channel. The transport must report that
    /// through onClose (documented on DatagramFrameTransport), not crash or go silent.
    @Test func aDatagramFromAnUnboundSocketEndsTheTransportWithAnError() throws {
        let harness = try Harness()
        defer { harness.close() }
        let unnamed = try RawSocket.unboundDatagram()
        try unnamed.send(datagram: pattern(60, seed: 1), to: harness.hostPath)
        try waitUntil("close reported") { !harness.recorder.closes.isEmpty }
        #expect(harness.recorder.closes.count == 1)
        #expect(harness.recorder.closes.first != .clean)
        #expect(harness.recorder.frames.isEmpty)
        #expect(try harness.send([pattern(60, seed: 2)]) == [false])
    }
}

extension RawSocket {
    static func unboundDatagram() throws -> RawSocket {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketCallFailed(call: "socket", errno: errno) }
        return RawSocket(unownedFD: fd)
    }
}
