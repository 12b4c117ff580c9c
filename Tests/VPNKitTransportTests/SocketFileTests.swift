import Foundation
import NIOCore
import NIOPosix
import Testing
import VPNKitTestSupport
import VPNKitTransport

#if canImport(Glibc)
import Glibc
#endif

/// The socket files of the qemu stream, vmnet and datagram transports: made with their mode (no
/// chmod after, whatever the umask), and removed on close only while they are still ours.
@Suite("Socket files: created with their mode, removed only while ours")
struct SocketFileTests {
    enum Kind: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case qemu, vmnet, dgram
        var testDescription: String { rawValue }
    }

    /// Binds a socket of `kind` at `path`; returns what closes it.
    static func bind(_ kind: Kind, at path: String, options: SocketTransportOptions = .init()) throws -> @Sendable () -> Void {
        switch kind {
        case .qemu:
            let listener = try waitFor(socketTestLoop.flatSubmit {
                QemuStreamListener.bind(path: path, options: options, on: socketTestLoop) { _ in }
            })
            return { _ = try? onLoop { listener.value.close() } }
        case .vmnet:
            let listener = try waitFor(socketTestLoop.flatSubmit {
                VmnetListener.bind(path: path, options: options, on: socketTestLoop) { _ in }
            })
            return { _ = try? onLoop { listener.value.close() } }
        case .dgram:
            let transport = try waitFor(DatagramFrameTransport.bind(path: path, options: options, on: socketTestLoop))
            return { _ = try? onLoop { transport.value.close() } }
        }
    }

    /// The permission bits of `path`, and whether it is a socket; nil when there is nothing.
    static func mode(of path: String) -> (bits: UInt32, isSocket: Bool)? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return (info.st_mode & 0o7777, info.st_mode & S_IFMT == S_IFSOCK)
    }

    /// The process's umask, read without changing it.
    static func umaskNow() -> String? {
        readProcFile("/proc/self/status")?.split(separator: "\n").first { $0.hasPrefix("Umask:") }.map(String.init)
    }

    @Test("the file appears with its mode (0600 by default, 0660 when asked): one IN_CREATE, never an IN_ATTRIB; the umask is left alone",
          arguments: Kind.allCases)
    func createdWithItsMode(kind: Kind) throws {
        let umaskBefore = Self.umaskNow()
        // The tests run with umask 022, under which a plain bind makes 0755.
        for wanted: UInt32 in [0o600, 0o660] {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let path = directory.file("link")
            let watch = try DirectoryWatch(directory.path)
            let close = try Self.bind(kind, at: path, options: SocketTransportOptions(socketFileMode: wanted))
            let mode = Self.mode(of: path)
            #expect(mode?.isSocket == true)
            #expect(mode?.bits == wanted, "mode \(String(mode?.bits ?? 0, radix: 8)), wanted \(String(wanted, radix: 8))")
            // A chmod after the bind would show as an attribute change of the name.
            #expect(watch.events().map(\.description) == ["link:create"])
            close()
            #expect(Self.mode(of: path) == nil, "closing removes our own file")
        }
        #expect(Self.umaskNow() == umaskBefore && umaskBefore != nil, "\(String(describing: umaskBefore))")
    }

    @Test("closing leaves alone a file that replaced ours (a regular file, or another program's socket)", arguments: Kind.allCases)
    func closeLeavesAReplacement(kind: Kind) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("link")
        let close = try Self.bind(kind, at: path)
        unlink(path)
        #expect(FileManagerHelpers.write("someone else's", to: path))
        close()
        #expect(FileManagerHelpers.read(path) == "someone else's")

        let path2 = directory.file("link2")
        let close2 = try Self.bind(kind, at: path2)
        unlink(path2)
        let other = try RawSocket.listen(path2)
        defer { other.close() }
        close2()
        #expect(Self.mode(of: path2)?.isSocket == true, "the other socket stays")
        let client = try RawSocket.connect(path2)
        client.close()
    }

    @Test("binding again after a pause: never over a file that replaced ours; once that is gone, bound again with its mode")
    func rebindAfterPauseChecksTheFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("link")
        let events = try onLoop { NIOLoopBoundBox.makeBoxSendingValue([String](), eventLoop: socketTestLoop) }
        let server = try waitFor(socketTestLoop.flatSubmit {
            UnixStreamServer.bind(path: path, options: .init(), pause: .milliseconds(100), on: socketTestLoop) { _ in }
                .map { server in
                    server.value.report = { event in
                        switch event {
                        case .acceptFailed: events.value.append("acceptFailed")
                        case .paused: events.value.append("paused")
                        case .resumed: events.value.append("resumed")
                        case .resumeFailed: events.value.append("resumeFailed")
                        }
                    }
                    return server
                }
        })
        defer { _ = try? onLoop { server.value.close() } }
        unlink(path)
        #expect(FileManagerHelpers.write("someone else's", to: path))
        try onLoop { server.value.channel?.pipeline.fireErrorCaught(IOError(errnoCode: EMFILE, reason: "accept")) }
        try waitUntil("the bind after the pause fails") { try onLoop { events.value } == ["paused", "resumeFailed"] }
        Thread.sleep(forTimeInterval: 0.3)  // a few more tries
        #expect(FileManagerHelpers.read(path) == "someone else's")
        #expect(try onLoop { server.value.channel == nil })

        unlink(path)
        try waitUntil("bound again") { try onLoop { events.value } == ["paused", "resumeFailed", "resumed"] }
        let mode = Self.mode(of: path)
        #expect(mode?.isSocket == true && mode?.bits == 0o600)
        let client = try RawSocket.connect(path)
        client.close()
        try onLoop { server.value.close() }
        #expect(Self.mode(of: path) == nil)
    }
}
