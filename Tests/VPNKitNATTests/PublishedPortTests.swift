import Foundation
import NIOCore
import NIOPosix
import Testing
import VPNKitBase
import VPNKitNAT
import VPNKitStack
import VPNKitTCP
import VPNKitTestSupport
import VPNKitRuntime

/// A blocking TCP client on 127.0.0.1, for the host side of a published port.
final class BlockingClient {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`; reads give up after `timeout` seconds.
    init(port: UInt16, timeout: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = loopbackAddress(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
    }

    deinit { close(fd) }

    var localPort: UInt16 { VPNKitTestSupport.localPort(of: fd) }

    func send(_ text: String) {
        _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
    }

    /// What one read returns: bytes, end of stream (empty), or the errno it failed with. The read
    /// runs on a thread of its own, so while it waits it does not hold one of the few threads every
    /// test's async work shares.
    func receiveWaiting() async -> Result<[UInt8], POSIXError> {
        await timedReceive().result
    }

    /// `receiveWaiting()`, and how long the read itself took (timed on its thread: the task that
    /// awaits it may resume much later when other tests keep the shared threads busy).
    func timedReceive() async -> (result: Result<[UInt8], POSIXError>, took: Duration) {
        let fd = self.fd
        return await withCheckedContinuation { continuation in
            Thread {
                let started = ContinuousClock.now
                let result = Self.receive(fd)
                continuation.resume(returning: (result, ContinuousClock.now - started))
            }.start()
        }
    }

    private static func receive(_ fd: Int32) -> Result<[UInt8], POSIXError> {
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        guard count >= 0 else { return .failure(POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)) }
        return .success(Array(bytes[0..<count]))
    }
}

/// The kernel's timer column (`tr`) for the TCP socket on 127.0.0.1:`local` connected to
/// 127.0.0.1:`remote`, from /proc/net/tcp: 0 none, 1 retransmission, 2 keepalive (for an idle
/// established socket, armed only with SO_KEEPALIVE), 4 zero-window probe. Nil when not found.
func kernelTimer(local: UInt16, remote: UInt16) -> Int? {
    guard let table = readProcFile("/proc/net/tcp") else { return nil }
    let wanted = (String(format: "0100007F:%04X", local), String(format: "0100007F:%04X", remote))
    for line in table.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        guard fields.count > 5, fields[1] == wanted.0, fields[2] == wanted.1 else { continue }
        return Int(fields[5].split(separator: ":")[0], radix: 16)
    }
    return nil
}

extension NATWorld {
    /// Publishes 127.0.0.1:`hostPort` to `guest`:`guestPort` on the daemon's side.
    func publish(hostPort: UInt16, to guest: IPv4Address, guestPort: UInt16) async throws {
        let gateway = self.gateway
        try await loop.flatSubmit {
            Self.nat(of: gateway).publish(PublishedPort(transport: .tcp, hostAddress: .v4(.loopback), hostPort: hostPort, guestPort: guestPort)) { .v4(guest) }
        }.get()
    }
}

@Suite("Published TCP ports with an in-memory guest")
struct PublishedPortTests {
    @Test("a host client reaches the guest's server; its host socket is set up like the NAT's own (keepalive armed)", arguments: Engine.allCases)
    func hostSocketSettings(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        let connections = try await StackDriver.listen(port: 80, on: world.guest)
        let port = try freeTCPPort()
        try await world.publish(hostPort: port, to: guestIP, guestPort: 80)
        let client = try BlockingClient(port: port, timeout: 10)
        client.send("hello")
        var iterator = connections.makeAsyncIterator()
        let connection = try #require(await iterator.next())
        let request = try await connection.read()
        #expect(request.map { String(buffer: $0) } == "hello")
        try await connection.write(ByteBuffer(string: "world"))
        #expect(try await client.receiveWaiting().get() == Array("world".utf8))
        // The daemon's accepted socket, once nothing is in flight: SO_KEEPALIVE arms the keepalive
        // timer (2); without it the column stays 0.
        var timer: Int?
        for _ in 0..<100 {
            timer = kernelTimer(local: port, remote: client.localPort)
            if timer == 2 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(timer == 2, "the kernel's timer column for the daemon's accepted socket: \(String(describing: timer))")
        #expect(try await world.nat { $0.counters.publishedConnections } == 1)
        await connection.abort()
        try await world.shutdown()
    }

    @Test("a guest that never answers: the host client is reset after connectTimeout, counted, and the flow is gone", arguments: Engine.allCases)
    func guestDoesNotAnswer(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine) { $0.connectTimeout = .seconds(1) }
        let port = try freeTCPPort()
        // Nobody has this address on the link: ARP goes unanswered, the SYN is never sent.
        try await world.publish(hostPort: port, to: IPv4Address(192, 168, 65, 9), guestPort: 80)
        let client = try BlockingClient(port: port, timeout: 8)
        let (outcome, waited) = await client.timedReceive()
        // Reset, not left waiting: before the timeout it waited through the stack's SYN
        // retransmissions, minutes, and this read would give up after 8 s with EAGAIN. Not at once
        // either: the guest had connectTimeout to answer.
        #expect(outcome.failureCode == .ECONNRESET, "\(outcome) after \(waited)")
        #expect(waited >= .milliseconds(900), "\(waited)")
        let counters = try await world.nat { $0.counters }
        #expect(counters.publishedConnections == 1)
        #expect(counters.publishedTimedOut == 1)
        #expect(counters.tcpResetsFromGuest == 0)
        #expect(try await world.nat { $0.openTCPFlows } == 0)
        try await world.shutdown()
    }

    @Test("a guest that answers within connectTimeout is not cut off after it", arguments: Engine.allCases)
    func answeredInTimeStaysOpen(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine) { $0.connectTimeout = .seconds(2) }
        let connections = try await StackDriver.listen(port: 80, on: world.guest)
        let port = try freeTCPPort()
        try await world.publish(hostPort: port, to: guestIP, guestPort: 80)
        let client = try BlockingClient(port: port, timeout: 10)
        var iterator = connections.makeAsyncIterator()
        let connection = try #require(await iterator.next())
        // Idle past the timeout and two sweeps, then still carries data both ways.
        try await Task.sleep(for: .milliseconds(3500))
        client.send("late")
        #expect(try await connection.read().map { String(buffer: $0) } == "late")
        try await connection.write(ByteBuffer(string: "still here"))
        #expect(try await client.receiveWaiting().get() == Array("still here".utf8))
        #expect(try await world.nat { $0.counters.publishedTimedOut } == 0)
        await connection.abort()
        try await world.shutdown()
    }
}

extension Result where Failure == POSIXError {
    /// The errno a failed read gave; nil when it returned.
    var failureCode: POSIXErrorCode? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}
