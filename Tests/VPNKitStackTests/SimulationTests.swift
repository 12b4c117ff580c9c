import NIOCore
import Testing
import VPNKitBase
import VPNKitStack
import VPNKitTransport

/// Payload `i` of a run: its index and a length that varies, some large enough to fragment.
func payload(_ i: Int) -> ByteBuffer {
    let sizes = [1, 100, 1472, 1473, 4000, 30000, 512]
    var b = ByteBuffer()
    b.writeInteger(UInt32(i))
    for k in 0..<(sizes[i % sizes.count]) { b.writeInteger(UInt8(truncatingIfNeeded: k &* 31 &+ i)) }
    return b
}

/// Sends `count` datagrams from the gateway to a UDP socket on the guest stack, 10 ms apart, and
/// returns what arrived.
func udpRun(_ sim: Simulation, count: Int) throws -> [ByteBuffer] {
    var received: [ByteBuffer] = []
    let socket = try sim.guest.bindUDP(port: 7) { received.append($0.payload) }
    for i in 0..<count {
        try sim.gateway.sendUDP(payload(i), from: .v4(gatewayIP), port: 5000, to: .v4(guestIP), port: 7, now: sim.now)
        sim.run(for: .milliseconds(10))
    }
    sim.run(for: .seconds(5))
    socket.close()
    return received
}

@Suite("Two stacks on an in-memory link")
struct SimulationTests {
    @Test("no faults: every datagram arrives once, in order, intact; fragments both ways")
    func clean() throws {
        let sim = Simulation()
        let received = try udpRun(sim, count: 40)
        #expect(received == (0..<40).map(payload))
        #expect(sim.gateway.statistics[.ipv4FragmentsSent] > 0)
        #expect(sim.guest.statistics[.ipv4Reassembled] > 0)
        #expect(sim.guest.reassembler.count == 0)
    }

    @Test("reorder and duplicate: everything arrives intact, fragment duplicates are ignored", arguments: [UInt64(1), 2, 3])
    func reorderDuplicate(seed: UInt64) throws {
        let faults = FaultConfiguration(duplicate: 0.1, reorder: 0.2, seed: seed)
        var reverse = faults
        reverse.seed = seed &+ 100
        let sim = Simulation(aToB: faults, bToA: reverse)
        let received = try udpRun(sim, count: 40)
        // A whole datagram duplicated on the link arrives twice (UDP does not deduplicate); every
        // datagram arrives at least once, and nothing arrives that was not sent.
        let sent = (0..<40).map(payload)
        #expect(Set(received.map { $0.getInteger(at: $0.readerIndex, as: UInt32.self)! }) == Set(0..<40))
        for datagram in received { #expect(sent.contains(datagram)) }
        print("seed \(seed): gateway→guest \(sim.link.a.injector.counters); guest counters \(sim.guest.statistics.nonZero.map { "\($0.name)=\($0.value)" }.joined(separator: " "))")
    }

    @Test("corruption is caught by checksums and counted, never delivered", arguments: [UInt64(11), 12])
    func corruption(seed: UInt64) throws {
        let sim = Simulation(aToB: FaultConfiguration(corrupt: 0.3, seed: seed))
        let received = try udpRun(sim, count: 40)
        let sent = (0..<40).map(payload)
        for datagram in received { #expect(sent.contains(datagram)) }
        #expect(received.count < 40)
        let guest = sim.guest.statistics
        let caught = guest[.udpBadChecksum] + guest[.ipv4BadChecksum] + guest[.ethernetNotForUs] + guest[.ipv4ReassemblyMalformed]
            + guest[.ipv4ReassemblyOverlap] + guest[.ipv4Malformed] + guest[.ipv4NotForUs] + guest[.ethernetUnsupportedType]
            + guest[.ipv4ReassemblyTimeout] + guest[.ipv4BadSource] + guest[.udpMalformed] + guest[.arpMalformed]
            + guest[.udpPortUnreachable] + guest[.ipv4ReassemblyOversized] + guest[.ethernetMalformed] + guest[.ipv4UnknownProtocol]
        #expect(caught > 0)
        print("seed \(seed): \(sim.link.a.injector.counters); guest \(guest.nonZero.map { "\($0.name)=\($0.value)" }.joined(separator: " "))")
    }

    @Test("loss during ARP: retries resolve the guest; datagrams lost on the wire are just lost", arguments: [UInt64(21), 22])
    func loss(seed: UInt64) throws {
        let sim = Simulation(aToB: FaultConfiguration(drop: 0.3, seed: seed), bToA: FaultConfiguration(drop: 0.3, seed: seed + 1))
        let received = try udpRun(sim, count: 40)
        let sent = (0..<40).map(payload)
        for datagram in received { #expect(sent.contains(datagram)) }
        #expect(sim.gateway.arpCache.lookup(guestIP, now: sim.now) != nil || sim.gateway.statistics[.arpResolutionFailed] > 0)
        #expect(!received.isEmpty)
        print("seed \(seed): received \(received.count)/40; gateway \(sim.gateway.statistics.nonZero.map { "\($0.name)=\($0.value)" }.joined(separator: " "))")
    }

    @Test("a 30000-byte datagram survives a link that reorders every other fragment")
    func heavyReorder() throws {
        let sim = Simulation(aToB: FaultConfiguration(reorder: 0.5, seed: 99))
        var received: [ByteBuffer] = []
        let socket = try sim.guest.bindUDP(port: 7) { received.append($0.payload) }
        var big = ByteBuffer()
        for k in 0..<30000 { big.writeInteger(UInt8(truncatingIfNeeded: k)) }
        try sim.gateway.sendUDP(big, from: .v4(gatewayIP), port: 1, to: .v4(guestIP), port: 7, now: sim.now)
        sim.run(for: .seconds(1))
        #expect(received == [big])
        #expect(sim.link.a.injector.counters.reordered > 3)
        socket.close()
    }
}
