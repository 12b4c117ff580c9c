// NewReno congestion control (RFC 5681, RFC 6582, RFC 3042) through the connection's controller.

import NIOCore
import Testing
@testable import VPNKitTCP

@Suite struct NewRenoTests {
    let mss = 1460
    let now = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func controller(initialSegments: Int = 10) -> CongestionControl {
        CongestionControl(.newReno, initialWindow: initialSegments * mss)
    }

    @Test func slowStartGrowsByAtMostOneSegmentPerACK() {
        var cc = controller()
        #expect(cc.cwnd == 14_600)
        #expect(cc.ssthresh == Int.max)
        cc.grow(acked: mss, mss: mss, smoothedRTT: nil, now: now)
        #expect(cc.cwnd == 16_060)
        // An ACK for three segments still adds one (RFC 5681 §3.1, L = 1 SMSS).
        cc.grow(acked: 3 * mss, mss: mss, smoothedRTT: nil, now: now)
        #expect(cc.cwnd == 17_520)
        // One for less than a segment adds what it acknowledged.
        cc.grow(acked: 100, mss: mss, smoothedRTT: nil, now: now)
        #expect(cc.cwnd == 17_620)
    }

    @Test func slowStartDoublesTheWindowPerRoundTrip() {
        var cc = controller(initialSegments: 4)
        for _ in 0..<4 { cc.grow(acked: mss, mss: mss, smoothedRTT: nil, now: now) }
        #expect(cc.cwnd == 8 * mss)
    }

    @Test func lossHalvesTheFlightWithTheWindowInflatedByThreeSegments() {
        var cc = controller()
        cc.enterRecovery(recoveryPoint: SequenceNumber(50_000), flightSize: 30_000, mss: mss, sack: false)
        #expect(cc.ssthresh == 15_000)
        #expect(cc.cwnd == 15_000 + 3 * mss)
        #expect(cc.inRecovery)
        // Each further duplicate ACK inflates by one segment.
        cc.inflate(by: mss)
        #expect(cc.cwnd == 15_000 + 4 * mss)
        // A partial ACK deflates by what it acknowledged, plus one segment back.
        cc.partialACK(acked: 4000, segmentSize: mss)
        #expect(cc.cwnd == 15_000 + 5 * mss - 4000)
        #expect(!cc.isFullACK(SequenceNumber(49_999)))
        #expect(cc.isFullACK(SequenceNumber(50_000)))
        // The full ACK ends recovery at ssthresh.
        cc.exitRecovery()
        #expect(!cc.inRecovery)
        #expect(cc.cwnd == 15_000)
    }

    @Test func withSACKTheWindowIsSsthreshDuringRecovery() {
        var cc = controller()
        cc.enterRecovery(recoveryPoint: SequenceNumber(1), flightSize: 20_000, mss: mss, sack: true)
        #expect(cc.ssthresh == 10_000)
        #expect(cc.cwnd == 10_000)
    }

    @Test func ssthreshIsAtLeastTwoSegments() {
        var cc = controller()
        cc.enterRecovery(recoveryPoint: SequenceNumber(1), flightSize: 2000, mss: mss, sack: true)
        #expect(cc.ssthresh == 2 * mss)
    }

    @Test func congestionAvoidanceAddsAboutOneSegmentPerWindow() {
        var cc = controller()
        cc.enterRecovery(recoveryPoint: SequenceNumber(1), flightSize: 20_000, mss: mss, sack: true)
        cc.exitRecovery()
        // cwnd = ssthresh = 10 000: congestion avoidance, MSS·MSS/cwnd per ACK.
        cc.grow(acked: mss, mss: mss, smoothedRTT: nil, now: now)
        #expect(cc.cwnd == 10_000 + 1460 * 1460 / 10_000)
        // A window's worth of ACKs adds about one segment.
        let before = cc.cwnd
        for _ in 0..<(before / mss) { cc.grow(acked: mss, mss: mss, smoothedRTT: nil, now: now) }
        #expect(cc.cwnd > before + mss * 8 / 10)
        #expect(cc.cwnd <= before + mss)
    }

    @Test func aTimeoutLeavesOneSegmentAndSsthreshAtHalfTheFlight() {
        var cc = controller()
        cc.enterRecovery(recoveryPoint: SequenceNumber(1), flightSize: 40_000, mss: mss, sack: false)
        cc.duplicateACKs = 5
        cc.timedOut(flightSize: 24_000, mss: mss)
        #expect(cc.cwnd == mss)
        #expect(cc.ssthresh == 12_000)
        #expect(!cc.inRecovery)
        #expect(cc.duplicateACKs == 0)
        // Slow start again, up to ssthresh.
        cc.grow(acked: mss, mss: mss, smoothedRTT: nil, now: now)
        #expect(cc.cwnd == 2 * mss)
    }

    @Test func limitedTransmitLetsOneNewSegmentOutPerDuplicateACK() {
        var cc = controller()
        // The window is full (10 segments out): the first duplicate allows one more segment.
        cc.allowLimitedTransmit(outstanding: 10 * mss, mss: mss)
        #expect(cc.limitedTransmitAllowance == mss)
        #expect(cc.sendWindow == 11 * mss)
        // The second: two, and never more than cwnd + 2 MSS in flight.
        cc.allowLimitedTransmit(outstanding: 11 * mss, mss: mss)
        #expect(cc.sendWindow == 12 * mss)
        cc.allowLimitedTransmit(outstanding: 20 * mss, mss: mss)
        #expect(cc.sendWindow == 12 * mss)
        // New data acknowledged ends it.
        cc.newDataAcknowledged()
        #expect(cc.sendWindow == 10 * mss)
    }

    @Test func theAlgorithmAlone() {
        let reno = NewReno()
        var window = 29_200
        reno.increase(window: &window, acked: mss, mss: mss, smoothedRTT: nil, now: now)
        #expect(window == 29_200 + 73)
        // Huge windows still grow by a byte.
        var huge = 10_000_000
        reno.increase(window: &huge, acked: mss, mss: mss, smoothedRTT: nil, now: now)
        #expect(huge == 10_000_001)
        #expect(reno.reducedWindow(window: 1_000_000, flightSize: 50_000, mss: mss) == 25_000)
    }
}
