// Published ports through `UserspaceStack` as an embedder uses them: ids, listing, unpublishing.
import Foundation
import Testing
import VPNKit

#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP client socket connected to 127.0.0.1:`port`, or nil when refused. Reads give up
/// after 10 s.
func loopbackClient(port: UInt16) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var limit = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        return nil
    }
    return fd
}

// The limit only guards against a hang: the test takes well under a second alone, but its blocking
// client calls wait for a cooperative thread, and in a full run on 2 cores the interop suites'
// blocking waits can hold both for minutes (a CI run saw 163 s).
@Suite("Published ports through UserspaceStack (import VPNKit only)", .timeLimit(.minutes(6)))
struct PublishedPortAPITests {
    @Test("publish answers an id; forwards lists it with the kernel's port; the host reaches the guest's server; unpublish closes it; an unknown id throws PublishedPortError")
    func publishForwardsUnpublish() async throws {
        let (gateway, guest) = try await makeNetwork(subnet: "192.168.65.0/24")
        try await gateway.attachNAT(NATConfiguration(), dns: nil)
        let listener = try await guest.listenTCP(port: 80)
        let guestAddress = IPAddress("192.168.65.3")!
        // Port 0: the kernel chooses, and the listing says which.
        let id = try await gateway.publish(PublishedPort(transport: .tcp, hostAddress: .v4(.loopback), hostPort: 0, guestPort: 80), to: guestAddress)
        let forwards = try await gateway.forwards()
        #expect(forwards.map(\.id) == [id])
        let port = try #require(forwards.first?.listeners.first?.hostPort)
        #expect(port != 0 && forwards.first?.listeners.count == 1)
        #expect(try await gateway.publishedPorts().map(\.hostPort) == [port])

        let client = try #require(loopbackClient(port: port), "the published port refused")
        defer { close(client) }
        _ = Array("ping".utf8).withUnsafeBytes { write(client, $0.baseAddress!, $0.count) }
        var connections = listener.makeAsyncIterator()
        let connection = try #require(await connections.next())
        #expect(try await connection.read().map { String(buffer: $0) } == "ping")
        try await connection.write(ByteBuffer(string: "pong"))
        var reply = [UInt8](repeating: 0, count: 16)
        let count = read(client, &reply, reply.count)
        #expect(count == 4 && Array(reply.prefix(4)) == Array("pong".utf8))

        await #expect(throws: PublishedPortError.unknownID(PublishedPortID(rawValue: id.rawValue + 100))) {
            try await gateway.unpublish(PublishedPortID(rawValue: id.rawValue + 100))
        }
        #expect(try await gateway.forwards().map(\.id) == [id])
        try await gateway.unpublish(id)
        #expect(try await gateway.forwards().isEmpty)
        let refused = loopbackClient(port: port)
        #expect(refused == nil, "still listening after unpublish")
        if let refused { close(refused) }
        await #expect(throws: PublishedPortError.unknownID(id)) { try await gateway.unpublish(id) }
        await connection.abort()
        await guest.shutdown()
        await gateway.shutdown()
    }
}
