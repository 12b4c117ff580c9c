import NIOCore
import Testing
import VPNKitBase
import VPNKitTCP

/// Two connections wired back to back (no IP), to place sequence numbers exactly.
func transferAcrossWrap(clientISS: UInt32, serverISS: UInt32, size: Int) -> (sent: ByteBuffer, received: ByteBuffer) {
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var configuration = TCPConfiguration()
    configuration.maximumSegmentSize = 1460
    var client = TCPConnection.connect(localPort: 1000, remotePort: 7, iss: SequenceNumber(clientISS), configuration: configuration, now: now)
    let syn = client.takeOutput()[0]
    var server = TCPConnection.accept(TCPIncoming(header: syn.header, payload: syn.payload), localPort: 7, iss: SequenceNumber(serverISS), configuration: configuration, now: now)
    let data = pattern(size, seed: 99)
    var left = data
    var received = ByteBuffer()
    for _ in 0..<100_000 {
        var moved = false
        for segment in server.takeOutput() {
            client.receive(TCPIncoming(header: segment.header, payload: segment.payload), now: now)
            moved = true
        }
        for segment in client.takeOutput() {
            server.receive(TCPIncoming(header: segment.header, payload: segment.payload), now: now)
            moved = true
        }
        if left.readableBytes > 0, client.state == .established {
            left.moveReaderIndex(forwardBy: client.write(left, now: now))
            moved = true
        }
        while var chunk = server.read(now: now) { received.writeBuffer(&chunk) }
        if received.readableBytes == size { break }
        if !moved {
            now = [client.nextDeadline, server.nextDeadline].compactMap { $0 }.min() ?? now + .milliseconds(1)
            client.poll(now: now)
            server.poll(now: now)
        }
    }
    return (data, received)
}

@Suite("TCP sequence numbers across the 2^32 wrap")
struct TCPWrapTests {
    @Test("transfers cross the wrap on either side", arguments: [
        (UInt32(0xFFFF_F000), UInt32(5)), (UInt32(5), UInt32(0xFFFF_FFF0)), (UInt32(0x7FFF_FF00), UInt32(0xFFFF_FFFF)), (UInt32(0xFFFF_FFFF), UInt32(0x7FFF_FFFF)),
    ])
    func wrap(isses: (UInt32, UInt32)) {
        let (sent, received) = transferAcrossWrap(clientISS: isses.0, serverISS: isses.1, size: 300_000)
        #expect(received == sent, "ISS \(isses): \(received.readableBytes) of \(sent.readableBytes)")
    }
}
