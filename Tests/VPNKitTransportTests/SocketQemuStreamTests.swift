import Foundation
import NIOCore
import NIOPosix
import Testing
import VPNKitTransport

#if canImport(Glibc)
import Glibc
#endif

/// Frame sizes every round trip covers: empty, tiny, around the Ethernet minimum, a full frame, a
/// jumbo frame and the largest IP datagram plus an Ethernet header.
let roundTripSizes = [0, 1, 2, 3, 13, 14, 59, 60, 61, 1514, 9000, 65535 + 14]

/// qemu `-netdev stream`: 4-byte big-endian length, then the frame.
@Suite("Socket: qemu stream transport")
struct SocketQemuStreamTests {
    /// A listener at a fresh path whose connections are recorded; call `close` at the end.
    final class ListenerHarness: Sendable {
        let directory: TemporaryDirectory
        let path: String
        let recorder: Recorder
        let transport: NIOLoopBoundBox<QemuStreamTransport?>
        let listener: NIOLoopBound<QemuStreamListener>

        init(options: SocketTransportOptions = .init()) throws {
            let directory = try TemporaryDirectory()
            let path = directory.file("qemu.sock")
            let recorder = Recorder()
            let transport = NIOLoopBoundBox.makeEmptyBox(valueType: QemuStreamTransport.self, eventLoop: socketTestLoop)
            self.directory = directory
            self.path = path
            self.recorder = recorder
            self.transport = transport
            listener = try waitFor(socketTestLoop.flatSubmit {
                QemuStreamListener.bind(path: path, options: options, on: socketTestLoop) { accepted in
                    transport.value = accepted
                    recorder.attach(accepted)
                }
            })
        }

        /// Waits until the listener has handed over a connection.
        func waitForConnection() throws {
            try waitUntil("connection handed over") { try onLoop { self.transport.value != nil } }
        }

        func statistics() throws -> TransportStatistics {
            try onLoop { self.transport.value!.statistics }
        }

        func close() {
            _ = try? onLoop {
                self.transport.value?.close()
                self.listener.value.close()
            }
            directory.remove()
        }
    }

    @Test func listenerRoundTripsFramesOfEverySizeBothWays() throws {
        let harness = try ListenerHarness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try harness.waitForConnection()
        let frames = roundTripSizes.enumerated().map { pattern($0.element, seed: $0.offset) }

        // Guest to us: all frames in one write, back to back.
        try client.write(qemuStreamBytes(frames))
        try waitUntil("all frames received") { harness.recorder.frames.count >= frames.count }
        #expect(harness.recorder.frames == frames)

        // Us to the guest: one send per frame, all in one event-loop tick.
        let accepted = try onLoop { frames.map { harness.transport.value!.send(buffer($0)) } }
        #expect(accepted.allSatisfy { $0 })
        for frame in frames {
            #expect(try client.readQemuFrame() == frame)
        }

        let total = UInt64(frames.reduce(0) { $0 + $1.count })
        let statistics = try harness.statistics()
        #expect(statistics.framesReceived == UInt64(frames.count))
        #expect(statistics.bytesReceived == total)
        #expect(statistics.framesSent == UInt64(frames.count))
        #expect(statistics.bytesSent == total)
        #expect(statistics.sendDrops == 0)
        #expect(statistics.receiveErrors == 0)
        #expect(harness.recorder.closes.isEmpty)
    }

    @Test func manyBackToBackFramesStayApartBothWays() throws {
        let harness = try ListenerHarness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try harness.waitForConnection()
        let frames = (0..<1000).map { pattern(40 + $0 % 300, seed: $0) }

        try client.write(qemuStreamBytes(frames))
        try waitUntil("1000 frames received") { harness.recorder.frames.count >= frames.count }
        #expect(harness.recorder.frames == frames)

        try onLoop { for frame in frames { harness.transport.value!.send(buffer(frame)) } }
        for (index, frame) in frames.enumerated() {
            let received = try client.readQemuFrame()
            #expect(received == frame, "frame \(index)")
            if received != frame { break }
        }
        #expect(client.staysQuiet(for: 0.05), "nothing after the last frame")
        #expect(try harness.statistics().framesSent == 1000)
    }

    @Test func peerEOFIsACleanClose() throws {
        let harness = try ListenerHarness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try harness.waitForConnection()
        try client.write(qemuStreamBytes([pattern(60, seed: 1)]))
        try waitUntil("frame received") { harness.recorder.frames.count == 1 }
        client.close()
        try waitUntil("close reported") { !harness.recorder.closes.isEmpty }
        #expect(harness.recorder.closes == [.clean])
        // After the end, send drops and counts.
        let sent = try onLoop { harness.transport.value!.send(buffer(pattern(60, seed: 2))) }
        #expect(!sent)
        #expect(try harness.statistics().sendDrops == 1)
    }

    @Test func frameOverTheMaximumClosesTheConnectionWithAFramingError() throws {
        let harness = try ListenerHarness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try harness.waitForConnection()
        // The largest allowed frame (the default maximum, 65550 bytes) passes…
        let largest = pattern(65550, seed: 3)
        try client.write(qemuStreamBytes([largest]))
        try waitUntil("largest frame received") { harness.recorder.frames.count == 1 }
        #expect(harness.recorder.frames == [largest])
        // …one byte more is refused as soon as its length arrives (no body follows).
        try client.write([0, 1, 0, 15])  // 65551
        let rest = try client.readToEnd()
        #expect(rest.isEmpty)
        try waitUntil("close reported") { !harness.recorder.closes.isEmpty }
        #expect(harness.recorder.closes == [.framing])
        let statistics = try harness.statistics()
        #expect(statistics.receiveErrors == 1)
        #expect(statistics.framesReceived == 1)
    }

    @Test func configuredMaximumAppliesToBothDirections() throws {
        let harness = try ListenerHarness(options: SocketTransportOptions(maxFrameSize: 1514))
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try harness.waitForConnection()
        let results = try onLoop {
            [harness.transport.value!.send(buffer(pattern(1514, seed: 1))),
             harness.transport.value!.send(buffer(pattern(1515, seed: 2)))]
        }
        #expect(results == [true, false])
        #expect(try client.readQemuFrame() == pattern(1514, seed: 1))
        try client.write(qemuStreamBytes([pattern(1515, seed: 3)]))
        _ = try client.readToEnd()
        try waitUntil("close reported") { !harness.recorder.closes.isEmpty }
        #expect(harness.recorder.closes == [.framing])
        let statistics = try harness.statistics()
        #expect(statistics.sendDrops == 1)
        #expect(statistics.receiveErrors == 1)
        #expect(statistics.framesReceived == 0)
    }

    @Test func endOfStreamInsideAFrameIsAFramingError() throws {
        let harness = try ListenerHarness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try harness.waitForConnection()
        try client.write(qemuStreamBytes([pattern(100, seed: 1)]) + [0, 0, 0, 100] + pattern(50, seed: 2))
        try waitUntil("first frame received") { harness.recorder.frames.count == 1 }
        client.close()
        try waitUntil("close reported") { !harness.recorder.closes.isEmpty }
        #expect(harness.recorder.closes == [.framing])
        #expect(harness.recorder.frames.count == 1)
        #expect(try harness.statistics().receiveErrors == 1)
    }

    @Test func sendingToAPeerThatDoesNotReadDropsBeyondTheBudget() throws {
        let budget = 64 << 10
        let harness = try ListenerHarness(options: SocketTransportOptions(maxPendingBytes: budget))
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try harness.waitForConnection()

        let count = 800
        let frames = (0..<count).map { pattern(1514, seed: $0) }
        let accepted = try onLoop { frames.map { harness.transport.value!.send(buffer($0)) } }
        let sent = accepted.filter { $0 }.count
        // 1.2 MB do not fit in the budget plus the socket buffers: some are dropped, and only after
        // the budget was used.
        #expect(sent < count)
        #expect(sent * 1518 >= budget)
        // Nothing is accepted after the first drop while the peer still does not read.
        #expect(accepted.firstIndex(of: false).map { index in !accepted[index...].contains(true) } ?? false)
        let statistics = try harness.statistics()
        #expect(statistics.framesSent == UInt64(sent))
        #expect(statistics.sendDrops == UInt64(count - sent))

        // Everything accepted arrives, whole and in order.
        for index in 0..<sent {
            let frame = try client.readQemuFrame()
            #expect(frame == frames[index])
            if frame != frames[index] { break }
        }
        #expect(client.staysQuiet(for: 0.05))
    }

    @Test func closeIsIdempotentAndSilentAndEndsTheConnection() throws {
        let harness = try ListenerHarness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try harness.waitForConnection()
        let frame = pattern(60, seed: 9)
        let sent = try onLoop {
            let transport = harness.transport.value!
            transport.send(buffer(frame))
            transport.close()
            transport.close()
            return transport.send(buffer(frame))
        }
        #expect(!sent)
        // The frame sent before close still goes out; then the stream ends.
        #expect(try client.readToEnd() == qemuStreamBytes([frame]))
        #expect(harness.recorder.closes.isEmpty)
    }

    @Test func listenerAcceptsOneConnectionAfterAnotherAndRemovesItsSocketOnClose() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("qemu.sock")
        // A stale socket file from an earlier run is replaced.
        RawSocket.leaveStaleSocket(at: path)
        let recorder = Recorder()
        let transports = try onLoop { NIOLoopBoundBox([QemuStreamTransport](), eventLoop: socketTestLoop) }
        let listener = try waitFor(socketTestLoop.flatSubmit {
            QemuStreamListener.bind(path: path, on: socketTestLoop) { transport in
                transports.value.append(transport)
                recorder.attach(transport)
            }
        })
        for round in 0..<3 {
            let client = try RawSocket.connect(path)
            try client.write(qemuStreamBytes([pattern(64, seed: round)]))
            try waitUntil("frame from client \(round)") { recorder.frames.count == round + 1 }
            try onLoop { _ = transports.value[round].send(buffer(pattern(70, seed: round))) }
            #expect(try client.readQemuFrame() == pattern(70, seed: round))
            client.close()
            try waitUntil("close of client \(round)") { recorder.closes.count == round + 1 }
        }
        #expect(recorder.frames == (0..<3).map { pattern(64, seed: $0) })
        #expect(recorder.closes == [.clean, .clean, .clean])
        try onLoop { listener.value.close() }
        #expect(access(path, F_OK) != 0, "socket file removed")
        #expect(throws: (any Error).self) { try RawSocket.connect(path) }
    }

    @Test func listenerRefusesToReplaceAFileThatIsNotASocket() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("not-a-socket")
        #expect(FileManagerHelpers.write("keep me", to: path))
        #expect(throws: (any Error).self) {
            _ = try waitFor(socketTestLoop.flatSubmit {
                QemuStreamListener.bind(path: path, on: socketTestLoop) { _ in }
            })
        }
        #expect(FileManagerHelpers.read(path) == "keep me")
    }

    @Test func connectRoleRoundTripsFramesAndSeesEOF() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("qemu-server.sock")
        let server = try RawSocket.listen(path)
        let recorder = Recorder()
        let bound = try waitFor(QemuStreamTransport.connect(path: path, on: socketTestLoop))
        let peer = try server.accept()
        let frames = roundTripSizes.enumerated().map { pattern($0.element, seed: $0.offset + 100) }

        // Frames that arrive before onFrame is set wait in the socket; none is lost.
        try peer.write(qemuStreamBytes(frames))
        usleep(20_000)
        try onLoop { recorder.attach(bound.value) }
        try waitUntil("all frames received") { recorder.frames.count >= frames.count }
        #expect(recorder.frames == frames)

        try onLoop { for frame in frames { bound.value.send(buffer(frame)) } }
        for frame in frames {
            #expect(try peer.readQemuFrame() == frame)
        }
        let statistics = try onLoop { bound.value.statistics }
        #expect(statistics.framesReceived == UInt64(frames.count))
        #expect(statistics.framesSent == UInt64(frames.count))
        #expect(statistics.bytesSent == statistics.bytesReceived)

        peer.close()
        try waitUntil("close reported") { !recorder.closes.isEmpty }
        #expect(recorder.closes == [.clean])
        try onLoop { bound.value.close() }
    }

    @Test func framesAndEOFBeforeOnFrameIsSetAreDeliveredThenReported() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("qemu-server.sock")
        let server = try RawSocket.listen(path)
        let bound = try waitFor(QemuStreamTransport.connect(path: path, on: socketTestLoop))
        let peer = try server.accept()
        let frames = [pattern(60, seed: 1), pattern(1514, seed: 2)]
        try peer.write(qemuStreamBytes(frames))
        peer.close()
        usleep(20_000)
        let recorder = Recorder()
        try onLoop { recorder.attach(bound.value) }
        try waitUntil("close reported") { !recorder.closes.isEmpty }
        #expect(recorder.frames == frames)
        #expect(recorder.closes == [.clean])
    }

    @Test func connectToNothingFails() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        #expect(throws: (any Error).self) {
            _ = try waitFor(QemuStreamTransport.connect(path: directory.file("absent.sock"), on: socketTestLoop))
        }
    }
}

enum FileManagerHelpers {
    static func write(_ text: String, to path: String) -> Bool {
        FileManager.default.createFile(atPath: path, contents: Array(text.utf8).withUnsafeBytes { Data($0) })
    }
    static func read(_ path: String) -> String? {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
    }
}

extension RawSocket {
    /// Leaves a socket file at `path` that nobody listens on (as a crashed process would).
    static func leaveStaleSocket(at path: String) {
        let socket = try? RawSocket.listen(path)
        socket?.close()
    }
}
