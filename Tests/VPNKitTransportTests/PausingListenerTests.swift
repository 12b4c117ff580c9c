import Foundation
import NIOCore
import NIOPosix
import Testing
import VPNKitTransport

#if canImport(Glibc)
import Glibc
#endif

/// `PausingListener` on a unix socket path (the same path every time it binds), with accept
/// failures fired into the server channel's pipeline as SwiftNIO fires a failed accept(2).
@Suite("Socket: a listener out of descriptors pauses")
struct PausingListenerTests {
    final class Harness: Sendable {
        let directory: TemporaryDirectory
        let path: String
        let events: NIOLoopBoundBox<[String]>
        let binds: NIOLoopBoundBox<Int>
        let listener: NIOLoopBound<PausingListener>

        init(pause: TimeAmount = .milliseconds(200)) throws {
            let directory = try TemporaryDirectory()
            let path = directory.file("listener.sock")
            let events = NIOLoopBoundBox.makeBoxSendingValue([String](), eventLoop: socketTestLoop)
            let binds = NIOLoopBoundBox.makeBoxSendingValue(0, eventLoop: socketTestLoop)
            self.directory = directory
            self.path = path
            self.events = events
            self.binds = binds
            listener = try onLoop {
                NIOLoopBound(PausingListener(on: socketTestLoop, pause: pause, bind: {
                    binds.value += 1
                    // autoRead off: connections stay in the listen queue, as when accept(2) fails.
                    return ServerBootstrap(group: socketTestLoop)
                        .serverChannelOption(.autoRead, value: false)
                        .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
                }, report: { event in
                    switch event {
                    case .acceptFailed: events.value.append("acceptFailed")
                    case .paused: events.value.append("paused")
                    case .resumed: events.value.append("resumed")
                    case .resumeFailed: events.value.append("resumeFailed")
                    }
                }), eventLoop: socketTestLoop)
            }
            _ = try waitFor(socketTestLoop.flatSubmit { self.listener.value.start() })
        }

        /// Fires `errno` into the listening channel as a failed accept.
        func failAccept(_ errno: Int32) throws {
            try onLoop {
                self.listener.value.channel?.pipeline.fireErrorCaught(IOError(errnoCode: errno, reason: "accept"))
            }
        }

        func isListening() throws -> Bool { try onLoop { self.listener.value.channel != nil } }
        func recorded() throws -> [String] { try onLoop { self.events.value } }
        func bindCount() throws -> Int { try onLoop { self.binds.value } }

        func close() {
            _ = try? onLoop { self.listener.value.close() }
            directory.remove()
        }
    }

    @Test("EMFILE: the listener closes, a client waiting in its queue is refused, and the path is bound again after the pause")
    func pausesAndResumes() throws {
        let harness = try Harness()
        defer { harness.close() }
        // Queued, never accepted (the server channel does not read).
        let waiting = try RawSocket.connect(harness.path)
        defer { waiting.close() }
        try harness.failAccept(EMFILE)
        #expect(try harness.isListening() == false)
        #expect(try harness.recorded() == ["paused"])
        // Closing the listener refused the waiting client: end of stream or a reset, at once.
        var ready = pollfd(fd: waiting.fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&ready, 1, 2000) == 1)
        var byte: UInt8 = 0
        let n = recv(waiting.fd, &byte, 1, 0)
        #expect(n == 0 || (n < 0 && errno == ECONNRESET), "recv: \(n), errno \(errno)")
        // A second failure while paused changes nothing.
        try harness.failAccept(EMFILE)
        #expect(try harness.recorded() == ["paused"])
        try waitUntil("bound again") { try harness.isListening() }
        #expect(try harness.recorded() == ["paused", "resumed"])
        #expect(try harness.bindCount() == 2)
        // The new listener takes connections at the same path.
        let again = try RawSocket.connect(harness.path)
        again.close()
    }

    @Test("ENFILE, ENOBUFS and ENOMEM pause too; ECONNABORTED is only reported and the listener stays")
    func whichErrorsPause() throws {
        for errno in [ENFILE, ENOBUFS, ENOMEM] {
            let harness = try Harness()
            defer { harness.close() }
            try harness.failAccept(errno)
            #expect(try harness.isListening() == false, "errno \(errno)")
            #expect(try harness.recorded() == ["paused"], "errno \(errno)")
        }
        let harness = try Harness()
        defer { harness.close() }
        try harness.failAccept(ECONNABORTED)
        #expect(try harness.isListening())
        #expect(try harness.recorded() == ["acceptFailed"])
        #expect(try harness.bindCount() == 1)
    }

    @Test("closed while paused: it never binds again")
    func closedWhilePaused() throws {
        let harness = try Harness(pause: .milliseconds(100))
        defer { harness.close() }
        try harness.failAccept(EMFILE)
        try onLoop { harness.listener.value.close() }
        Thread.sleep(forTimeInterval: 0.4)
        #expect(try harness.bindCount() == 1)
        #expect(try harness.isListening() == false)
        #expect(try harness.recorded() == ["paused"])
    }

    @Test("a bind that fails after the pause is reported once and retried until it works")
    func resumeRetries() throws {
        let harness = try Harness(pause: .milliseconds(100))
        defer { harness.close() }
        // Something that is not a socket at the path makes the bind fail until it is gone. It is put
        // there before the pause starts (the listening socket does not need its path), so that no
        // rebind can come first on a slow machine.
        let blocker = harness.directory.file("listener.sock")
        unlink(blocker)
        #expect(FileManager.default.createFile(atPath: blocker, contents: Data("x".utf8)))
        try harness.failAccept(EMFILE)
        try waitUntil("three binds") { try harness.bindCount() >= 4 }
        #expect(try harness.recorded() == ["paused", "resumeFailed"])
        unlink(blocker)
        try waitUntil("bound again") { try harness.isListening() }
        #expect(try harness.recorded() == ["paused", "resumeFailed", "resumed"])
    }
}
