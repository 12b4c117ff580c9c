import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv4
import VPNKitStack

/// vpnkit's Go vmnet client sends its DHCP DISCOVER with an IPv4 header checksum of 0; the stack
/// takes exactly that case and drops every other bad header checksum.
@Suite("IPv4: a zero header checksum is accepted from DHCP clients only")
struct ZeroChecksumTests {
    /// `frame` with its IPv4 header checksum (frame bytes 24-25) set to `value`.
    func withHeaderChecksum(_ frame: ByteBuffer, _ value: UInt16) -> ByteBuffer {
        var f = frame
        f.setInteger(value, at: f.readerIndex + 24)
        return f
    }

    func delivered(port: UInt16, from sourcePort: UInt16, checksum: UInt16, fragment: Bool = false) throws -> (Int, StackCounters) {
        let stack = stackKnowingGuest()
        var count = 0
        let socket = try stack.bindUDP(port: port) { _ in count += 1 }
        defer { socket.close() }
        var frame = Peer().udp(Array(repeating: 1, count: 300), from: sourcePort, to: port, destination: .broadcast)
        if fragment { frame.setInteger(UInt16(0x2000), at: frame.readerIndex + 20) }  // MF: a first fragment
        stack.receive(withHeaderChecksum(frame, checksum), now: t0)
        return (count, stack.statistics)
    }

    @Test("UDP 68 → 67 with checksum 0: delivered and counted")
    func dhcpClientZero() throws {
        let (count, counters) = try delivered(port: 67, from: 68, checksum: 0)
        #expect(count == 1)
        #expect(counters[.ipv4ZeroChecksumAccepted] == 1)
        #expect(counters[.ipv4BadChecksum] == 0)
    }

    @Test("a wrong non-zero checksum on a DHCP message, or 0 on anything else, is dropped",
          arguments: [(UInt16(67), UInt16(68), UInt16(0x1234), false), (53, 68, 0, false), (67, 1000, 0, false), (67, 68, 0, true)])
    func othersDropped(port: UInt16, sourcePort: UInt16, checksum: UInt16, fragment: Bool) throws {
        let (count, counters) = try delivered(port: port, from: sourcePort, checksum: checksum, fragment: fragment)
        #expect(count == 0)
        #expect(counters[.ipv4ZeroChecksumAccepted] == 0)
        #expect(counters[.ipv4BadChecksum] == 1)
    }
}
