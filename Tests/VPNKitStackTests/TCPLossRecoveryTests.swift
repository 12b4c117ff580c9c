import Foundation
import NIOCore
import Testing
import VPNKitBase
import VPNKitStack
import VPNKitTCP
import VPNKitTransport

/// One-way bulk transfers under the fault sweep's loss, reordering, duplication and corruption, on
/// a link with a 50 µs one-way delay: a round trip is a tiny fraction of the 200 ms minimum
/// retransmission timeout, as on a TAP link, so recovery by timer shows up as a collapse in speed.
@Suite("TCP loss recovery")
struct TCPLossRecoveryTests {
    struct Outcome {
        var complete: Bool
        var virtualTime: TimeAmount
        var sender: TCPConnectionCounters?
        var stack: StackCounters
    }

    func download(seed: UInt64, size: Int, lossProbes: Bool = true) throws -> Outcome {
        var faults = FaultConfiguration(drop: 0.05, duplicate: 0.01, reorder: 0.05, corrupt: 0.01, seed: seed)
        faults.delay = .microseconds(50)
        var back = faults
        back.seed = seed &+ 1000
        var gateway = StackConfiguration()
        gateway.tcp.lossProbes = lossProbes
        let sim = Simulation(aToB: faults, bToA: back, gatewayConfiguration: gateway)
        let expected = pattern(size, seed: seed)
        var server: TCPSocket?
        try sim.serve(expected, port: 5001) { server = $0 }
        let client = try EchoClient(stack: sim.guest, to: gatewayIP, port: 5001, data: ByteBuffer(), clock: { sim.now })
        // The clock starts once connected: a lost SYN costs its own (1 s) timer, which is not recovery.
        while !client.connected, sim.now - t0 < .seconds(60) { sim.run(for: .milliseconds(1)) }
        let start = sim.now
        while sim.now - start < .seconds(300), client.received.readableBytes < size {
            sim.run(for: .milliseconds(10))
            if ProcessInfo.processInfo.environment["LOSS_TRACE"] != nil, let s = server { print("t=\((sim.now - start).nanoseconds / 1_000_000) got=\(client.received.readableBytes) \(sim.gateway.debugTCP()) \(s.counters.map { "to=\($0.timeouts) tlp=\($0.lossProbes)" } ?? "")") }
        }
        return Outcome(complete: client.received == expected, virtualTime: sim.now - start, sender: server?.counters, stack: sim.gateway.statistics)
    }

    @Test("losses are repaired within round trips, not by the retransmission timer", arguments: [UInt64(1), 2, 3, 4])
    func recoversWithoutTimeouts(seed: UInt64) throws {
        let outcome = try download(seed: seed, size: 2 << 20)
        let c = try #require(outcome.sender, "seed \(seed): the server's connection is gone")
        print("seed \(seed): \(outcome.virtualTime.nanoseconds / 1_000_000) ms virtual; retransmissions \(c.retransmissions), timeouts \(c.timeouts), fast \(c.fastRetransmits), probes \(c.lossProbes), lost retransmissions \(c.lostRetransmissions)")
        #expect(outcome.complete, "seed \(seed): not byte-exact")
        // About 90 frames of the 1,450 are lost: before loss probes and SACK-counted duplicate ACKs
        // this took ~90 timeouts and ~25 s (virtual); now it takes well under a second.
        #expect(c.retransmissions >= 50, "seed \(seed): the faults should have cost retransmissions")
        #expect(c.timeouts <= 1, "seed \(seed): \(c.timeouts) retransmission timeouts")
        #expect(c.lossProbes > 0)
        // The stack's counters sum its connections' (the gateway has only this one).
        #expect(outcome.stack[.tcpRetransmissions] == UInt64(c.retransmissions))
        #expect(outcome.stack[.tcpRetransmissionTimeouts] == UInt64(c.timeouts))
        #expect(outcome.stack[.tcpFastRetransmits] == UInt64(c.fastRetransmits))
        #expect(outcome.stack[.tcpLossProbes] == UInt64(c.lossProbes))
        #expect(outcome.virtualTime < .seconds(2), "seed \(seed): \(outcome.virtualTime.nanoseconds / 1_000_000) ms")
    }

    @Test("with loss probes turned off, losses at the tail of a flight wait for the retransmission timer")
    func withoutLossProbes() throws {
        let with = try download(seed: 1, size: 1 << 20)
        let without = try download(seed: 1, size: 1 << 20, lossProbes: false)
        let on = try #require(with.sender), off = try #require(without.sender)
        print("1 MiB, seed 1: probes on \(with.virtualTime.nanoseconds / 1_000_000) ms, \(on.timeouts) timeouts; off \(without.virtualTime.nanoseconds / 1_000_000) ms, \(off.timeouts) timeouts")
        #expect(with.complete && without.complete)
        #expect(off.lossProbes == 0)
        #expect(off.timeouts >= on.timeouts + 5, "probes on: \(on.timeouts) timeouts, off: \(off.timeouts)")
        #expect(without.virtualTime > with.virtualTime)
    }
}
