// The connection times its data segments when no timestamps are negotiated (RFC 6298 §3: one
// segment at a time, never a retransmitted one).

import NIOCore
import Testing
import VPNKitBase
@testable import VPNKitTCP

@Suite struct RTTSamplingTests {
    private let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    /// An established connection (we opened it) with timestamps off on both sides, and the peer's
    /// ISS; the handshake's own RTT sample is 10 ms.
    private func established() -> (TCPConnection, SequenceNumber) {
        var configuration = TCPConfiguration()
        configuration.timestamps = false
        configuration.delayedACK = false
        var connection = TCPConnection.connect(
            localPort: 40000, remotePort: 80, iss: SequenceNumber(1000), configuration: configuration, now: start)
        _ = connection.takeOutput()
        let peerISS = SequenceNumber(5000)
        var synACK = TCPHeader(
            sourcePort: 80, destinationPort: 40000, sequenceNumber: peerISS,
            acknowledgmentNumber: SequenceNumber(1001), flags: [.syn, .ack], window: 65535)
        synACK.options = [.maximumSegmentSize(1460)]
        connection.receive(TCPIncoming(header: synACK, payload: ByteBuffer()), now: start + .milliseconds(10))
        _ = connection.takeOutput()
        return (connection, peerISS)
    }

    private func ack(_ number: SequenceNumber, peerSeq: SequenceNumber) -> TCPIncoming {
        TCPIncoming(
            header: TCPHeader(
                sourcePort: 80, destinationPort: 40000, sequenceNumber: peerSeq,
                acknowledgmentNumber: number, flags: [.ack], window: 65535),
            payload: ByteBuffer())
    }

    @Test func dataSegmentIsTimedWithoutTimestamps() {
        var (connection, peerISS) = established()
        #expect(connection.state == .established)
        #expect(connection.roundTrip.smoothed == .milliseconds(10))
        let sent = start + .milliseconds(20)
        #expect(connection.write(ByteBuffer(bytes: [UInt8](repeating: 7, count: 1000)), now: sent) == 1000)
        let segments = connection.takeOutput()
        #expect(segments.count == 1)
        // The ACK comes 90 ms later: SRTT moves by 1/8 of the difference (RFC 6298 §2.3).
        connection.receive(ack(SequenceNumber(1001) + 1000, peerSeq: peerISS + 1), now: sent + .milliseconds(90))
        #expect(connection.roundTrip.smoothed == .milliseconds(20))
    }

    @Test func retransmittedSegmentIsNotTimed() {
        var (connection, peerISS) = established()
        let sent = start + .milliseconds(20)
        _ = connection.write(ByteBuffer(bytes: [UInt8](repeating: 7, count: 1000)), now: sent)
        _ = connection.takeOutput()
        // The retransmission timeout fires (RTO 200 ms minimum) and the segment goes again.
        let timeout = sent + .seconds(1)
        connection.poll(now: timeout)
        #expect(connection.takeOutput().contains { $0.payload.readableBytes == 1000 })
        connection.receive(ack(SequenceNumber(1001) + 1000, peerSeq: peerISS + 1), now: timeout + .milliseconds(5))
        // Karn: the ambiguous ACK gives no sample, SRTT stays the handshake's.
        #expect(connection.roundTrip.smoothed == .milliseconds(10))
    }
}
