import NIOCore
import Testing
import VPNKitBase
import VPNKitTCP

/// What a peer's segments make a connection hold: about twice their bytes at most, whatever their
/// sizes, and the window closes by what is really held.
@Suite("TCP: memory bounded whatever the segment sizes")
struct TCPMemoryTests {
    /// A payload of `count` bytes in a frame-sized buffer of its own, as a link hands it over.
    static func framed(_ count: Int, byte: UInt8) -> [UInt8] { Array(repeating: byte, count: count) }

    @Test("1-byte segments in 2 KiB frame buffers are gathered: a few pieces, not one per segment, and the bytes arrive in order")
    func tinySegmentsGathered() throws {
        var s = Script()
        var expected: [UInt8] = []
        for index in 0..<20_000 {
            let byte = UInt8(truncatingIfNeeded: index)
            var frame = ByteBufferAllocator().buffer(capacity: 2048)
            frame.writeInteger(byte)
            var h = TCPHeader(sourcePort: 40000, destinationPort: 80, sequenceNumber: s.peerNext, acknowledgmentNumber: s.ourISS + 1, flags: .ack, window: 502)
            h.options = [.noOperation, .noOperation, .timestamps(value: 20_000, echoReply: 0)]
            s.connection.receive(TCPIncoming(header: h, payload: frame), now: s.now)
            s.peerNext = s.peerNext + 1
            expected.append(byte)
        }
        _ = s.out()
        #expect(s.connection.bytesToRead == 20_000)
        // One gathering buffer holds up to 64 KiB: 20,000 bytes are one piece, not 20,000.
        #expect(s.connection.receivedPieces == 1)
        var chunks: [ByteBuffer] = []
        _ = s.connection.readChunks(now: s.now, into: &chunks)
        #expect(chunks.flatMap { $0.readableBytesView } == expected)
    }

    @Test("full segments are kept as slices (no copy), and each piece held is charged against the window")
    func bulkKeptAndCharged() throws {
        var configuration = TCPConfiguration()
        configuration.delayedACK = false
        var s = Script(configuration: configuration)
        let payload = [UInt8](repeating: 7, count: 1448)
        for _ in 0..<10 { s.send(flags: .ack, data: payload) }
        _ = s.out()
        #expect(s.connection.receivedPieces == 10)
        // Reading five opens the window; the five still held count their bytes and 128 each.
        var chunks: [ByteBuffer] = []
        #expect(s.connection.readChunks(maximum: 5 * 1448, now: s.now, into: &chunks) == 5 * 1448)
        #expect(s.connection.receivedPieces == 5)
        let update = try #require(s.out().last?.header)
        let shift = Int(configuration.windowScaleShift)
        let offered = Int(update.window) << shift
        let expected = configuration.receiveBufferSize - 5 * 1448 - 5 * 128
        #expect(abs(offered - expected) < 1 << shift, "window \(offered), expected about \(expected)")
    }

    @Test("a peer sending 1-byte segments until the window closes: the connection then holds at most about the buffer's size")
    func windowClosesOnTinySegments() throws {
        var configuration = TCPConfiguration()
        configuration.receiveBufferSize = 64 * 1024
        var s = Script(configuration: configuration)
        var accepted = 0
        for _ in 0..<200_000 {
            let before = s.connection.bytesToRead
            var frame = ByteBufferAllocator().buffer(capacity: 2048)
            frame.writeInteger(UInt8(1))
            var h = TCPHeader(sourcePort: 40000, destinationPort: 80, sequenceNumber: s.peerNext, acknowledgmentNumber: s.ourISS + 1, flags: .ack, window: 502)
            h.options = [.noOperation, .noOperation, .timestamps(value: 20_000, echoReply: 0)]
            s.connection.receive(TCPIncoming(header: h, payload: frame), now: s.now)
            guard s.connection.bytesToRead > before else { break }
            s.peerNext = s.peerNext + 1
            accepted += 1
        }
        _ = s.out()
        // The window closed after at most the buffer's bytes, not after 200,000 segments.
        #expect(accepted <= 64 * 1024 && accepted > 60 * 1024, "accepted \(accepted)")
        #expect(s.connection.receivedPieces <= 2)
    }
}
