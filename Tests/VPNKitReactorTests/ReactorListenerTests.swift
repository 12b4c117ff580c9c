#if os(Linux)
import Foundation
import Glibc
import NIOCore
import Testing
import VPNKitBase
@testable import VPNKitReactor
import VPNKitSystem

/// Records a listener's accepted peers and events, on the reactor's thread.
final class ListenerRecorder: ReactorListenerDelegate, @unchecked Sendable {
    var peers: [UInt16] = []
    var events: [String] = []

    func listenerAccepted(_ listener: ReactorListener, _ fd: CInt, peer: SocketAddressStorage) {
        peers.append(peer.endpoint?.port ?? 0)
        SystemCall.close(fd)
    }

    func listenerEvent(_ listener: ReactorListener, _ event: ReactorListener.Event) {
        switch event {
        case .acceptFailed: events.append("acceptFailed")
        case .paused: events.append("paused")
        case .resumed: events.append("resumed")
        case .resumeFailed: events.append("resumeFailed")
        }
    }
}

struct UncheckedListener: @unchecked Sendable {
    let listener: ReactorListener
    init(_ listener: ReactorListener) { self.listener = listener }
}

/// A blocking connect to 127.0.0.1:`port`: the client's socket, or the errno it failed with.
func blockingConnect(port: UInt16) -> Result<CInt, SystemError> {
    let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
    let address = SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: port)
    do {
        // Blocking socket: connect returns when it is done.
        _ = try SystemCall.connect(fd, to: address)
        return .success(fd)
    } catch {
        close(fd)
        return .failure(error)
    }
}

@Suite("The reactor's listener: bursts of accepts, and a pause instead of a spin when descriptors run out")
struct ReactorListenerTests {
    @Test("150 connections made at once are all accepted (more than two bursts), each with its peer's port; closing deregisters")
    func acceptsBursts() async throws {
        let reactor = try Reactor.start(name: "test-listen")
        let recorder = ListenerRecorder()
        let box = try await reactor.submit {
            let listener = try ReactorListener(on: reactor, address: SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: 0), backlog: 512)
            listener.delegate = recorder
            return UncheckedListener(listener)
        }.get()
        let port = try await reactor.submit { box.listener.port }.get()
        #expect(port != 0)
        var clients: [CInt] = []
        var clientPorts: Set<UInt16> = []
        for _ in 0..<150 {
            let fd = try blockingConnect(port: port).get()
            clients.append(fd)
            clientPorts.insert(try SystemCall.localAddress(fd).endpoint!.port)
        }
        #expect(try await eventually(on: reactor) { recorder.peers.count == 150 })
        let expected = clientPorts
        try await reactor.submit {
            #expect(Set(recorder.peers) == expected)
            #expect(recorder.events.isEmpty)
            #expect(reactor.registeredCount == 1)
            box.listener.close()
            #expect(reactor.registeredCount == 0)
        }.get()
        for fd in clients { close(fd) }
        // Closed: nothing listens on the port any more.
        #expect(blockingConnect(port: port).failureErrno == ECONNREFUSED)
        await reactor.shutdown()
    }

    @Test("out of descriptors: the listener closes (a connect is refused), then listens again on the same port after the pause and accepts; closed during a pause, it stays closed")
    func pausesAndResumes() async throws {
        let reactor = try Reactor.start(name: "test-pause")
        let recorder = ListenerRecorder()
        let box = try await reactor.submit {
            let listener = try ReactorListener(on: reactor, address: SocketAddressStorage(.v4(IPv4Address(127, 0, 0, 1)), port: 0), pause: .milliseconds(300))
            listener.delegate = recorder
            return UncheckedListener(listener)
        }.get()
        let port = try await reactor.submit { box.listener.port }.get()
        // Paused, and a connect refused while it is: both on the reactor's thread, so the pause
        // cannot end in between however late this test's task runs (a loopback connect to a closed
        // port is refused at once).
        let whilePaused = try await reactor.submit { () -> ([String], CInt?) in
            box.listener.pauseListening(SystemError("accept4", errno: EMFILE))
            return (recorder.events, blockingConnect(port: port).failureErrno)
        }.get()
        #expect(whilePaused.0 == ["paused"])
        #expect(whilePaused.1 == ECONNREFUSED)
        #expect(try await eventually(on: reactor) { recorder.events == ["paused", "resumed"] })
        let client = try blockingConnect(port: port).get()
        #expect(try await eventually(on: reactor) { recorder.peers.count == 1 })
        close(client)

        // Paused, then closed: the re-bind never happens.
        try await reactor.submit {
            box.listener.pauseListening(SystemError("accept4", errno: ENFILE))
            box.listener.close()
        }.get()
        try await Task.sleep(for: .milliseconds(600))
        #expect(try await reactor.submit { recorder.events }.get() == ["paused", "resumed", "paused"])
        #expect(try await reactor.submit { reactor.registeredCount }.get() == 0)
        #expect(blockingConnect(port: port).failureErrno == ECONNREFUSED)
        await reactor.shutdown()
    }
}

extension Result where Failure == SystemError {
    /// The errno of a failure; nil for a success.
    var failureErrno: CInt? {
        if case .failure(let error) = self { return error.errno }
        if case .success(let fd) = self as? Result<CInt, SystemError> { close(fd) }
        return nil
    }
}
#endif
