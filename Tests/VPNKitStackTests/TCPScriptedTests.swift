import NIOCore
import Testing
import VPNKitBase
import VPNKitTCP

/// A scripted peer against one connection: segments in, segments out, under a virtual clock.
struct Script {
    var connection: TCPConnection
    var now = NIODeadline.uptimeNanoseconds(10_000_000_000)
    let peerISS = SequenceNumber(5000)
    var peerNext: SequenceNumber
    var ourISS: SequenceNumber

    /// A connection in ESTABLISHED (passive open), with timestamps, SACK and window scale negotiated.
    init(options: Bool = true, configuration: TCPConfiguration = TCPConfiguration()) {
        var syn = TCPHeader(sourcePort: 40000, destinationPort: 80, sequenceNumber: SequenceNumber(5000), flags: .syn, window: 64240)
        if options { syn.options = TCPHeader.standardOptions(maximumSegmentSize: 1460, sackPermitted: true, timestamps: (100, 0), windowScale: 7) }
        connection = TCPConnection.accept(TCPIncoming(header: syn, payload: ByteBuffer()), localPort: 80, iss: SequenceNumber(900), configuration: configuration, now: now)
        let synack = connection.takeOutput()
        ourISS = synack[0].header.sequenceNumber
        peerNext = peerISS + 1
        send(flags: .ack)
    }

    mutating func send(flags: TCPFlags, seq: SequenceNumber? = nil, ack: SequenceNumber? = nil, data: [UInt8] = [], window: UInt16 = 502, tsval: UInt32? = nil, holdingACK: Bool = false) {
        var h = TCPHeader(sourcePort: 40000, destinationPort: 80, sequenceNumber: seq ?? peerNext, acknowledgmentNumber: ack ?? (ourISS + 1), flags: flags, window: window)
        h.options = [.noOperation, .noOperation, .timestamps(value: tsval ?? UInt32(truncatingIfNeeded: now.uptimeNanoseconds / 1_000_000), echoReply: 0)]
        connection.receive(TCPIncoming(header: h, payload: ByteBuffer(bytes: data)), now: now, holdingACK: holdingACK)
        if seq == nil { peerNext = peerNext + data.count + (flags.contains(.fin) ? 1 : 0) }
    }

    mutating func out() -> [TCPOutgoing] { connection.takeOutput() }
}

@Suite("TCP scripted peer")
struct TCPScriptedTests {
    @Test("handshake negotiates every option; without options none is used")
    func handshake() {
        var s = Script()
        #expect(s.connection.state == .established)
        var h = TCPHeader(sourcePort: 1, destinationPort: 80, sequenceNumber: SequenceNumber(1), flags: .syn, window: 1000)
        h.options = []
        var bare = TCPConnection.accept(TCPIncoming(header: h, payload: ByteBuffer()), localPort: 80, iss: SequenceNumber(7), configuration: TCPConfiguration(), now: s.now)
        let synack = bare.takeOutput()[0].header
        #expect(synack.maximumSegmentSize != nil)
        #expect(synack.windowScale == nil && !synack.sackPermitted && synack.timestamps == nil)
        s.send(flags: [.ack, .psh], data: [1, 2, 3])
        let ack = s.out().last!.header
        #expect(ack.timestamps != nil)
        #expect(ack.acknowledgmentNumber == s.peerNext)
    }

    @Test("held ACK: a burst in order draws one cumulative ACK when asked; a gap is acknowledged at once; data sent carries it")
    func heldACK() {
        var s = Script()
        let segment = [UInt8](repeating: 7, count: 1448)
        for _ in 0..<10 { s.send(flags: .ack, data: segment, holdingACK: true) }
        #expect(s.out().isEmpty)
        #expect(s.connection.status().hasHeldACK)
        s.connection.sendHeldACK(now: s.now)
        let acks = s.out()
        #expect(acks.count == 1)
        #expect(acks.first?.header.acknowledgmentNumber == s.peerNext)
        #expect(acks.first?.payload.readableBytes == 0)
        #expect(!s.connection.status().hasHeldACK)
        s.connection.sendHeldACK(now: s.now)
        #expect(s.out().isEmpty)

        // A segment past a gap: the duplicate ACK with its SACK block goes at once.
        let expected = s.peerNext
        s.send(flags: .ack, seq: s.peerNext + 1448, data: segment, holdingACK: true)
        let dup = s.out()
        #expect(dup.count == 1)
        #expect(dup.first?.header.acknowledgmentNumber == expected)
        #expect(!s.connection.status().hasHeldACK)
        // The gap filled, and one more: in order again, so their ACK (which leaves no hole) may be held.
        s.send(flags: .ack, data: segment, holdingACK: true)
        s.peerNext = s.peerNext + 1448
        s.send(flags: .ack, data: segment, holdingACK: true)
        #expect(s.out().isEmpty)
        #expect(s.connection.status().hasHeldACK)

        // Data written before the ACK is sent carries it: nothing is left to send separately.
        _ = s.connection.write(ByteBuffer(bytes: [1, 2, 3]), now: s.now)
        let data = s.out()
        #expect(data.count == 1)
        #expect(data.first?.header.acknowledgmentNumber == s.peerNext)
        #expect(!s.connection.status().hasHeldACK)
        s.connection.sendHeldACK(now: s.now)
        #expect(s.out().isEmpty)
    }

    @Test("readChunks: the pieces as they arrived, in order, cut at the maximum, none joined; the rest stays for the next read")
    func readChunks() {
        var s = Script()
        let pieces: [[UInt8]] = [Array(repeating: 1, count: 1000), Array(repeating: 2, count: 700), Array(repeating: 3, count: 300)]
        for piece in pieces { s.send(flags: [.ack, .psh], data: piece) }
        var chunks: [ByteBuffer] = []
        #expect(s.connection.readChunks(maximum: 1500, now: s.now, into: &chunks) == 1500)
        #expect(chunks.map(\.readableBytes) == [1000, 500])
        #expect(chunks[0].readableBytesView.allSatisfy { $0 == 1 } && chunks[1].readableBytesView.allSatisfy { $0 == 2 })
        #expect(s.connection.bytesToRead == 500)
        chunks.removeAll()
        #expect(s.connection.readChunks(now: s.now, into: &chunks) == 500)
        #expect(chunks.map(\.readableBytes) == [200, 300])
        #expect(chunks[0].readableBytesView.allSatisfy { $0 == 2 } && chunks[1].readableBytesView.allSatisfy { $0 == 3 })
        #expect(s.connection.readChunks(now: s.now, into: &chunks) == 0)
        #expect(chunks.count == 2)
    }

    @Test("RFC 5961: an in-window RST that is not exact draws a challenge ACK; an exact one resets")
    func rst() {
        var s = Script()
        s.send(flags: .rst, seq: s.peerNext + 100)
        #expect(s.connection.state == .established)
        #expect(s.connection.counters.challengeACKs == 1)
        #expect(s.out().first?.header.flags == .ack)
        s.send(flags: .rst, seq: s.peerNext + 10_000_000)
        #expect(s.connection.state == .established)
        s.send(flags: .rst)
        #expect(s.connection.state == .closed)
        #expect(s.connection.closeReason == .reset)
    }

    @Test("RFC 5961: a SYN on an established connection draws a challenge ACK")
    func synInEstablished() {
        var s = Script()
        s.send(flags: .syn, seq: SequenceNumber(77))
        #expect(s.connection.state == .established)
        #expect(s.connection.counters.challengeACKs == 1)
    }

    @Test("PAWS: a segment with an old timestamp is dropped")
    func paws() {
        var s = Script()
        s.send(flags: [.ack, .psh], data: [1], tsval: 1_000_000)
        _ = s.out()
        s.send(flags: [.ack, .psh], data: [2], tsval: 10)
        #expect(s.connection.bytesToRead == 1)
        #expect(s.connection.counters.droppedUnacceptable == 1)
    }

    @Test("out of window data is not accepted; duplicates are acknowledged")
    func outOfWindow() {
        var s = Script()
        s.send(flags: [.ack], seq: s.peerNext + 10_000_000, data: [9])
        #expect(s.connection.bytesToRead == 0)
        #expect(s.out().first?.header.acknowledgmentNumber == s.peerNext)
    }

    @Test("out-of-order data is SACKed, newest block first, and delivered when the hole fills")
    func sack() {
        var s = Script()
        let base = s.peerNext
        s.send(flags: .ack, seq: base + 100, data: Array(repeating: 1, count: 100))
        s.send(flags: .ack, seq: base + 300, data: Array(repeating: 3, count: 100))
        let ack = s.out().last!.header
        #expect(ack.acknowledgmentNumber == base)
        #expect(ack.sackBlocks.first == SACKBlock(left: (base + 300).rawValue, right: (base + 400).rawValue))
        #expect(ack.sackBlocks.count == 2)
        s.send(flags: .ack, seq: base, data: Array(repeating: 0, count: 100))
        #expect(s.connection.bytesToRead == 200)
        s.send(flags: .ack, seq: base + 200, data: Array(repeating: 2, count: 100))
        #expect(s.connection.bytesToRead == 400)
    }

    @Test("retransmission timing: RTO doubles per timeout; the connection gives up after the limit")
    func retransmissionTiming() {
        var s = Script()
        s.connection.write(ByteBuffer(repeating: 7, count: 100), now: s.now)
        _ = s.out()
        var times: [NIODeadline] = []
        while let next = s.connection.nextDeadline, s.connection.state != .closed, times.count < 20 {
            s.now = next
            s.connection.poll(now: s.now)
            if !s.out().isEmpty { times.append(s.now) }
        }
        let gaps = zip(times, times.dropFirst()).map { ($1 - $0).nanoseconds }
        for (a, b) in zip(gaps, gaps.dropFirst()) { #expect(b == min(2 * a, 60_000_000_000)) }
        #expect(s.connection.state == .closed)
        #expect(s.connection.closeReason == .timedOut)
    }

    @Test("zero window: no data into it, probes instead; data flows when it opens")
    func zeroWindow() {
        var s = Script()
        s.send(flags: .ack, window: 0)
        s.connection.write(ByteBuffer(repeating: 7, count: 1000), now: s.now)
        #expect(s.out().allSatisfy { $0.payload.readableBytes == 0 })
        let probeAt = s.connection.nextDeadline!
        s.now = probeAt
        s.connection.poll(now: s.now)
        let probe = s.out()
        #expect(probe.count == 1 && probe[0].payload.readableBytes == 1)
        #expect(s.connection.counters.zeroWindowProbes == 1)
        s.send(flags: .ack, ack: s.ourISS + 2, window: 502)
        let data = s.out()
        #expect(data.reduce(0) { $0 + $1.payload.readableBytes } == 999)
    }

    @Test("FIN from the peer: CLOSE-WAIT, then LAST-ACK and CLOSED; our FIN first: FIN-WAIT, TIME-WAIT, RFC 1337")
    func finStates() {
        var s = Script()
        s.send(flags: [.fin, .ack])
        #expect(s.connection.state == .closeWait)
        #expect(s.connection.isReadClosed)
        s.connection.close(now: s.now)
        #expect(s.connection.state == .lastAck)
        let fin = s.out().last!.header
        #expect(fin.flags.contains(.fin))
        s.send(flags: .ack, ack: fin.sequenceNumber + 1)
        #expect(s.connection.state == .closed)

        var t = Script()
        t.connection.close(now: t.now)
        #expect(t.connection.state == .finWait1)
        let ourFin = t.out().last!.header
        t.send(flags: .ack, ack: ourFin.sequenceNumber + 1)
        #expect(t.connection.state == .finWait2)
        t.send(flags: [.fin, .ack], ack: ourFin.sequenceNumber + 1)
        #expect(t.connection.state == .timeWait)
        // RFC 1337: a RST does not end TIME-WAIT early.
        t.send(flags: .rst, seq: t.peerNext)
        #expect(t.connection.state == .timeWait)
        t.now = t.now + .seconds(60)
        t.connection.poll(now: t.now)
        #expect(t.connection.state == .closed && t.connection.closeReason == .closed)
    }

    @Test("simultaneous open: both SYN, both SYN-ACK, both ESTABLISHED")
    func simultaneousOpen() {
        let now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var a = TCPConnection.connect(localPort: 1, remotePort: 2, iss: SequenceNumber(100), configuration: TCPConfiguration(), now: now)
        var b = TCPConnection.connect(localPort: 2, remotePort: 1, iss: SequenceNumber(900), configuration: TCPConfiguration(), now: now)
        let synA = a.takeOutput()[0], synB = b.takeOutput()[0]
        a.receive(TCPIncoming(header: synB.header, payload: synB.payload), now: now)
        b.receive(TCPIncoming(header: synA.header, payload: synA.payload), now: now)
        #expect(a.state == .synReceived && b.state == .synReceived)
        let synackA = a.takeOutput(), synackB = b.takeOutput()
        for s in synackB { a.receive(TCPIncoming(header: s.header, payload: s.payload), now: now) }
        for s in synackA { b.receive(TCPIncoming(header: s.header, payload: s.payload), now: now) }
        #expect(a.state == .established && b.state == .established)
    }
}

@Suite("TCP timers and limits")
struct TCPTimerTests {
    func script(_ change: (inout TCPConfiguration) -> Void) -> (TCPConnection, NIODeadline, SequenceNumber) {
        var configuration = TCPConfiguration()
        change(&configuration)
        let now = NIODeadline.uptimeNanoseconds(10_000_000_000)
        var syn = TCPHeader(sourcePort: 40000, destinationPort: 80, sequenceNumber: SequenceNumber(5000), flags: .syn, window: 64240)
        syn.options = TCPHeader.standardOptions(maximumSegmentSize: 1460, sackPermitted: true, windowScale: 7)
        var c = TCPConnection.accept(TCPIncoming(header: syn, payload: ByteBuffer()), localPort: 80, iss: SequenceNumber(900), configuration: configuration, now: now)
        let iss = c.takeOutput()[0].header.sequenceNumber
        c.receive(TCPIncoming(header: TCPHeader(sourcePort: 40000, destinationPort: 80, sequenceNumber: SequenceNumber(5001), acknowledgmentNumber: iss + 1, flags: .ack, window: 502), payload: ByteBuffer()), now: now)
        return (c, now, iss)
    }

    @Test("keep-alive probes an idle peer and gives up after the configured probes")
    func keepAlive() {
        var (c, now, _) = script {
            $0.keepAliveIdle = .seconds(10)
            $0.keepAliveInterval = .seconds(2)
            $0.keepAliveProbes = 3
        }
        var probes = 0
        while let next = c.nextDeadline, c.state != .closed {
            now = next
            c.poll(now: now)
            probes += c.takeOutput().count
        }
        #expect(probes == 3)
        #expect(c.closeReason == .timedOut)
    }

    @Test("user timeout aborts when data stays unacknowledged")
    func userTimeout() {
        var (c, now, _) = script { $0.userTimeout = .seconds(5) }
        c.write(ByteBuffer(repeating: 1, count: 100), now: now)
        while let next = c.nextDeadline, c.state != .closed, next - now < .seconds(10) {
            now = next
            c.poll(now: now)
            _ = c.takeOutput()
        }
        #expect(c.state == .closed && c.closeReason == .timedOut)
    }

    @Test("challenge ACKs are rate-limited")
    func challengeRate() {
        var (c, now, iss) = script { $0.challengeACKsPerSecond = 5 }
        for i in 0..<50 {
            c.receive(TCPIncoming(header: TCPHeader(sourcePort: 40000, destinationPort: 80, sequenceNumber: SequenceNumber(5001) + (100 + i), acknowledgmentNumber: iss + 1, flags: .rst, window: 502), payload: ByteBuffer()), now: now)
        }
        #expect(c.counters.challengeACKs == 5)
        now = now + .seconds(1)
        c.receive(TCPIncoming(header: TCPHeader(sourcePort: 40000, destinationPort: 80, sequenceNumber: SequenceNumber(5200), acknowledgmentNumber: iss + 1, flags: .rst, window: 502), payload: ByteBuffer()), now: now)
        #expect(c.counters.challengeACKs == 6)
        #expect(c.state == .established)
    }

    @Test("limited transmit: the first two duplicate ACKs each release one new segment (with SACK, ACKs that SACK new data)", arguments: [false, true])
    func limitedTransmit(sack: Bool) {
        var (c, now, iss) = script {
            $0.initialWindowSegments = 2
            $0.selectiveAcknowledgments = sack
        }
        c.write(ByteBuffer(repeating: 1, count: 10 * 1460), now: now)
        #expect(c.takeOutput().count == 2)
        // The first segment is lost; the second, then each new one, draws a duplicate ACK.
        func duplicateACK(sackedSegments: Int) -> TCPIncoming {
            var ack = TCPHeader(sourcePort: 40000, destinationPort: 80, sequenceNumber: SequenceNumber(5001), acknowledgmentNumber: iss + 1, flags: .ack, window: 502)
            if sack {
                ack.options = TCPHeader.standardOptions(sack: [SACKBlock(left: (iss + 1 + 1460).rawValue, right: (iss + 1 + 1460 * (1 + sackedSegments)).rawValue)])
            }
            return TCPIncoming(header: ack, payload: ByteBuffer())
        }
        for i in 1...2 {
            c.receive(duplicateACK(sackedSegments: i), now: now)
            #expect(c.takeOutput().filter { $0.payload.readableBytes > 0 }.count == 1)
        }
        if sack {
            // The same SACK again says nothing new: not a duplicate ACK, nothing is released.
            c.receive(duplicateACK(sackedSegments: 2), now: now)
            #expect(c.takeOutput().filter { $0.payload.readableBytes > 0 }.isEmpty)
        }
        now = now + .milliseconds(1)
    }
}

@Suite("TCP closing and delayed ACK")
struct TCPClosingTests {
    @Test("simultaneous close: FIN-WAIT-1 → CLOSING → TIME-WAIT")
    func closing() {
        var s = Script()
        s.connection.close(now: s.now)
        let ourFin = s.out().last!.header
        #expect(s.connection.state == .finWait1)
        // The peer's FIN crosses ours (it has not seen our FIN yet).
        s.send(flags: [.fin, .ack], ack: ourFin.sequenceNumber)
        #expect(s.connection.state == .closing)
        s.send(flags: .ack, ack: ourFin.sequenceNumber + 1)
        #expect(s.connection.state == .timeWait)
    }

    @Test("delayed ACK: one full segment waits for the timer, a second one is acknowledged at once")
    func delayedACK() {
        var s = Script()
        _ = s.out()
        s.send(flags: .ack, data: Array(repeating: 1, count: 1448))
        #expect(s.out().isEmpty)
        let due = s.connection.nextDeadline!
        #expect(due - s.now == .milliseconds(40))
        s.send(flags: .ack, data: Array(repeating: 2, count: 1448))
        let acks = s.out()
        #expect(acks.count == 1 && acks[0].header.acknowledgmentNumber == s.peerNext)
        s.send(flags: .ack, data: Array(repeating: 3, count: 1448))
        #expect(s.out().isEmpty)
        s.now = s.connection.nextDeadline!
        s.connection.poll(now: s.now)
        #expect(s.out().first?.header.acknowledgmentNumber == s.peerNext)
    }
}

@Suite("TCP SACK-based recovery")
struct TCPSACKRecoveryTests {
    @Test("three duplicate ACKs with SACK blocks: the holes are retransmitted, SACKed data is not")
    func fillsHoles() {
        var s = Script()
        _ = s.out()
        s.connection.write(ByteBuffer(repeating: 9, count: 8 * 1448), now: s.now)
        let sent = s.out().filter { $0.payload.readableBytes > 0 }
        #expect(sent.count == 8)
        let una = s.ourISS + 1
        // Segments 0 and 3 are lost; 1–2 and 4–7 arrive: the peer SACKs them.
        func dupACK(_ blocks: [SACKBlock]) {
            var h = TCPHeader(sourcePort: 40000, destinationPort: 80, sequenceNumber: s.peerNext, acknowledgmentNumber: una, flags: .ack, window: 502)
            h.options = [.noOperation, .noOperation, .timestamps(value: UInt32(truncatingIfNeeded: s.now.uptimeNanoseconds / 1_000_000), echoReply: 0), .noOperation, .noOperation, .sack(blocks)]
            s.connection.receive(TCPIncoming(header: h, payload: ByteBuffer()), now: s.now)
        }
        let mss = 1448
        let b1 = SACKBlock(left: (una + mss).rawValue, right: (una + 3 * mss).rawValue)
        let b2 = SACKBlock(left: (una + 4 * mss).rawValue, right: (una + 8 * mss).rawValue)
        dupACK([b1])
        dupACK([b2, b1])
        dupACK([b2, b1])
        let retransmitted = s.out().filter { $0.payload.readableBytes > 0 }.map { $0.header.sequenceNumber }
        #expect(retransmitted.contains(una))
        #expect(retransmitted.contains(una + 3 * mss))
        // Nothing the peer already has is sent again.
        for seq in retransmitted {
            #expect(!(SequenceNumber(b1.left) < seq + 1 && seq < SequenceNumber(b1.right)))
            #expect(!(SequenceNumber(b2.left) < seq + 1 && seq < SequenceNumber(b2.right)))
        }
        #expect(s.connection.counters.fastRetransmits == 1)
    }
}
