import NIOCore
import Testing
import VPNKitBase
import VPNKitTCP

/// RFC 9293 §3.10.7.4 and RFC 5961 §5.2: a segment whose ACK is not acceptable is answered with an
/// ACK and dropped whole, data and FIN, in every synchronized state. Linux does the same (the
/// scenarios were first run against it); before, the data of such a segment was still delivered.
@Suite("TCP: a segment with an unacceptable ACK is dropped whole")
struct TCPACKAcceptabilityTests {
    /// A connection in `state`: ESTABLISHED, FIN-WAIT-1 (we closed), FIN-WAIT-2 (our FIN
    /// acknowledged), CLOSE-WAIT (the peer closed), LAST-ACK (the peer closed, then we did),
    /// CLOSING (both closed at once, our FIN not yet acknowledged) or TIME-WAIT.
    static func script(in state: TCPState) -> Script {
        var s = Script()
        switch state {
        case .finWait1:
            s.connection.close(now: s.now)
        case .finWait2:
            s.connection.close(now: s.now)
            s.send(flags: .ack, ack: s.ourISS + 2)
        case .closeWait:
            s.send(flags: [.ack, .fin])
        case .lastAck:
            s.send(flags: [.ack, .fin])
            s.connection.close(now: s.now)
        case .closing:
            s.connection.close(now: s.now)
            s.send(flags: [.ack, .fin])
        case .timeWait:
            s.connection.close(now: s.now)
            s.send(flags: [.ack, .fin], ack: s.ourISS + 2)
        default: break
        }
        _ = s.out()
        #expect(s.connection.state == state)
        return s
    }

    static let states: [TCPState] = [.established, .finWait1, .finWait2, .closeWait, .lastAck, .closing, .timeWait]
    /// States in which the peer has sent its FIN: it can send nothing new, so a bare ACK stands in.
    static let peerClosed: Set<TCPState> = [.closeWait, .lastAck, .closing, .timeWait]

    @Test("SEG.ACK beyond SND.NXT: an ACK back, no data, no FIN", arguments: states)
    func ackOfUnsentData(state: TCPState) {
        var s = Self.script(in: state)
        let expected = s.peerNext
        let bytesBefore = s.connection.bytesToRead
        if Self.peerClosed.contains(state) {
            s.send(flags: .ack, seq: s.peerNext, ack: s.ourISS + 100_000)
        } else {
            s.send(flags: [.ack, .psh, .fin], seq: s.peerNext, ack: s.ourISS + 100_000, data: Array("injected".utf8))
        }
        let out = s.out()
        #expect(out.count == 1, "one ACK in answer: \(out.map(\.header))")
        #expect(out.first?.header.flags == .ack)
        #expect(out.first?.header.acknowledgmentNumber == expected, "the data and FIN were not acknowledged")
        #expect(s.connection.bytesToRead == bytesBefore, "nothing reached the application")
        #expect(s.connection.receiveNext == expected)
        #expect(s.connection.state == state, "the FIN was not taken")
        #expect(s.connection.counters.droppedUnacceptableACK == 1)
    }

    @Test("SEG.ACK below SND.UNA − MAX.SND.WND (blind injection): a challenge ACK, no data", arguments: states)
    func ackTooOld(state: TCPState) {
        var s = Self.script(in: state)
        let expected = s.peerNext
        let challenges = s.connection.counters.challengeACKs
        // The peer offered at most 64,256 bytes (502 << 7); this ACK lies 100,000 below SND.UNA.
        let old = s.ourISS + 1 + (-100_000)
        s.send(flags: [.ack, .psh], seq: s.peerNext, ack: old, data: Self.peerClosed.contains(state) ? [] : Array("blind".utf8))
        let out = s.out()
        #expect(out.count == 1)
        #expect(out.first?.header.acknowledgmentNumber == expected)
        #expect(s.connection.bytesToRead == 0)
        #expect(s.connection.counters.challengeACKs == challenges + 1)
        #expect(s.connection.counters.droppedUnacceptableACK == 1)
        #expect(s.connection.state == state)
    }

    @Test("an old ACK within MAX.SND.WND below SND.UNA is acceptable: its data is delivered")
    func oldACKInsideWindow() {
        var s = Script()
        _ = s.connection.write(ByteBuffer(bytes: Array(repeating: 9, count: 1000)), now: s.now)
        _ = s.out()
        s.send(flags: .ack, ack: s.ourISS + 1001)
        _ = s.out()
        // A reordered segment still carrying the ACK from before the data: old, but inside the window.
        s.send(flags: [.ack, .psh], ack: s.ourISS + 1, data: Array("late".utf8))
        #expect(s.connection.bytesToRead == 4)
        #expect(s.connection.counters.droppedUnacceptableACK == 0)
        #expect(s.out().last?.header.acknowledgmentNumber == s.peerNext)
    }

    @Test("the timestamp of a segment with an unacceptable ACK is not taken (TS.Recent stays)")
    func timestampNotTaken() {
        var s = Script()
        let future = UInt32(truncatingIfNeeded: s.now.uptimeNanoseconds / 1_000_000) + 1_000_000
        s.send(flags: [.ack, .psh], seq: s.peerNext, ack: s.ourISS + 100_000, data: [1], tsval: future)
        _ = s.out()
        // Were TS.Recent now `future`, PAWS would drop this ordinary segment as an old duplicate.
        s.send(flags: [.ack, .psh], data: [2])
        #expect(s.connection.bytesToRead == 1)
        #expect(s.connection.counters.droppedUnacceptable == 0)
    }
}
