import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv4
import VPNKitStack
import VPNKitTCP

/// SECURITY.md's "half-open connections per listening port" at its bound.
@Suite("TCP: the SYN backlog per listening port")
struct SYNBacklogTests {
    /// A SYN from the guest's `port` to the gateway's port 80.
    func syn(from port: UInt16, to destination: UInt16 = 80, seq: UInt32 = 1000) -> ByteBuffer {
        var body = ByteBuffer.withHeadroom(capacity: 0)
        TCPHeader(sourcePort: port, destinationPort: destination, sequenceNumber: SequenceNumber(seq), flags: .syn, window: 64240)
            .prepend(to: &body, source: .v4(guestIP), destination: .v4(gatewayIP))
        return Peer().ipv4(body, protocol: .tcp, id: port)
    }

    func synACKs(in frames: [ByteBuffer]) -> [TCPHeader] {
        datagrams(in: frames).compactMap { packet in
            guard packet.protocol == .tcp, let segment = try? TCPSegment(packet.payload) else { return nil }
            guard let header = try? TCPHeader(parsing: segment) else { return nil }
            return header.flags.contains([.syn, .ack]) ? header : nil
        }
    }

    @Test("at the backlog, further SYNs to the port are dropped and counted; another port has its own; a completed handshake makes room")
    func atTheBound() throws {
        let stack = stackKnowingGuest { $0.tcpSYNBacklog = 4 }
        try stack.listenTCP(port: 80) { _ in }
        try stack.listenTCP(port: 81) { _ in }
        for port in UInt16(40_000)..<40_010 { stack.receive(syn(from: port), now: t0) }
        let answered = synACKs(in: stack.takeOutput())
        #expect(answered.count == 4)
        #expect(stack.statistics[.tcpConnectionsRefused] == 6)
        stack.receive(syn(from: 40_050, to: 81), now: t0)
        #expect(synACKs(in: stack.takeOutput()).count == 1, "port 81's backlog is its own")
        // The first one completes its handshake: it leaves the backlog, and one more SYN fits.
        let first = try #require(answered.first)
        var body = ByteBuffer.withHeadroom(capacity: 0)
        TCPHeader(sourcePort: first.destinationPort, destinationPort: 80, sequenceNumber: SequenceNumber(1001),
                  acknowledgmentNumber: first.sequenceNumber + 1, flags: .ack, window: 64240)
            .prepend(to: &body, source: .v4(guestIP), destination: .v4(gatewayIP))
        stack.receive(Peer().ipv4(body, protocol: .tcp, id: 1), now: t0)
        _ = stack.takeOutput()
        stack.receive(syn(from: 40_100), now: t0)
        #expect(synACKs(in: stack.takeOutput()).count == 1)
        stack.receive(syn(from: 40_101), now: t0)
        #expect(synACKs(in: stack.takeOutput()).isEmpty)
        #expect(stack.statistics[.tcpConnectionsRefused] == 7)
    }
}
