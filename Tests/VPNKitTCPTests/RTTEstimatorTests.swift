// The RFC 6298 estimator: SRTT, RTTVAR and RTO from samples, bounds, backoff and Karn's rule.

import NIOCore
import Testing
@testable import VPNKitTCP

@Suite struct RTTEstimatorTests {
    let start = NIODeadline.uptimeNanoseconds(5_000_000_000)

    func estimator(minimum: TimeAmount = .milliseconds(200)) -> RTTEstimator {
        RTTEstimator(initial: .seconds(1), minimum: minimum, maximum: .seconds(60))
    }

    @Test func beforeAnySampleTheRTOIsTheInitialOne() {
        let rtt = estimator()
        #expect(rtt.smoothed == nil)
        #expect(rtt.rto == .seconds(1))
    }

    @Test func firstSampleSetsSRTTAndHalfOfItAsRTTVAR() {
        // RFC 6298 §2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, 4·RTTVAR).
        var rtt = estimator()
        rtt.update(.milliseconds(100))
        #expect(rtt.smoothed == .milliseconds(100))
        #expect(rtt.variation == .milliseconds(50))
        #expect(rtt.rto == .milliseconds(300))
    }

    @Test func theRTOIsClampedToTheMinimum() {
        // With the RFC's own minimum of 1 s, a 100 ms path still waits 1 s.
        var rtt = RTTEstimator(initial: .seconds(3), minimum: .seconds(1), maximum: .seconds(60))
        rtt.update(.milliseconds(100))
        #expect(rtt.smoothed == .milliseconds(100))
        #expect(rtt.rto == .seconds(1))
    }

    @Test func laterSamplesMoveByAnEighthAndAQuarter() {
        // RFC 6298 §2.3: RTTVAR = 3/4·RTTVAR + 1/4·|SRTT − R'|, then SRTT = 7/8·SRTT + 1/8·R'.
        var rtt = estimator()
        rtt.update(.milliseconds(100))
        rtt.update(.milliseconds(200))
        #expect(rtt.variation == .microseconds(62_500))  // 3/4·50 + 1/4·100
        #expect(rtt.smoothed == .microseconds(112_500))  // 7/8·100 + 1/8·200
        #expect(rtt.rto == .microseconds(362_500))  // 112.5 + 4·62.5
        rtt.update(.milliseconds(112) + .microseconds(500))
        // The sample equals SRTT: the variation shrinks by a quarter, SRTT stays.
        #expect(rtt.variation == .nanoseconds(46_875_000))
        #expect(rtt.smoothed == .microseconds(112_500))
    }

    @Test func theClockGranularityBoundsTheVariationTerm() {
        // Identical samples drive RTTVAR towards zero; RTO = SRTT + G (1 ms) then.
        var rtt = estimator(minimum: .zero)
        for _ in 0..<30 { rtt.update(.milliseconds(10)) }
        #expect(rtt.smoothed == .milliseconds(10))
        #expect(rtt.variation * 4 < .milliseconds(1))
        #expect(rtt.rto == .milliseconds(11))
    }

    @Test func theRTOIsClampedToTheMaximum() {
        var rtt = estimator()
        rtt.update(.seconds(40))
        // 40 + 4·20 = 120 s, above the 60 s bound.
        #expect(rtt.rto == .seconds(60))
    }

    @Test func backoffDoublesUpToTheMaximum() {
        var rtt = estimator()
        var seen: [TimeAmount] = []
        for _ in 0..<8 {
            rtt.backOff()
            seen.append(rtt.rto)
        }
        #expect(seen == [2, 4, 8, 16, 32, 60, 60, 60].map { TimeAmount.seconds($0) })
        // A later sample computes the RTO afresh.
        rtt.update(.milliseconds(100))
        #expect(rtt.rto == .milliseconds(300))
    }

    @Test func theTimedSegmentGivesASampleWhenAcknowledged() {
        var rtt = estimator()
        rtt.startTiming(SequenceNumber(1000), now: start)
        // A second segment does not replace the one being timed.
        rtt.startTiming(SequenceNumber(2000), now: start + .milliseconds(5))
        #expect(rtt.sample?.seq == SequenceNumber(1000))
        rtt.acknowledged(through: SequenceNumber(1100), echoedTimestamp: nil, timed: true, now: start + .milliseconds(30))
        #expect(rtt.smoothed == .milliseconds(30))
        #expect(rtt.sample == nil)
    }

    @Test func anACKThatDoesNotCoverTheTimedSegmentKeepsTimingIt() {
        var rtt = estimator()
        rtt.startTiming(SequenceNumber(5000), now: start)
        rtt.acknowledged(through: SequenceNumber(4000), echoedTimestamp: nil, timed: true, now: start + .milliseconds(30))
        #expect(rtt.smoothed == nil)
        #expect(rtt.sample?.seq == SequenceNumber(5000))
    }

    @Test func echoedTimestampsGiveSamples() {
        var rtt = estimator()
        // Our clock reads 5000 ms; the echo says the segment left at 4920 ms.
        rtt.acknowledged(through: SequenceNumber(1), echoedTimestamp: 4920, timed: true, now: start)
        #expect(rtt.smoothed == .milliseconds(80))
        // An echo of 0 (none), one more than a minute old, or one from the future is no sample.
        rtt.acknowledged(through: SequenceNumber(2), echoedTimestamp: 0, timed: true, now: start)
        rtt.acknowledged(through: SequenceNumber(3), echoedTimestamp: UInt32(truncatingIfNeeded: 5000 - 70_000), timed: true, now: start)
        rtt.acknowledged(through: SequenceNumber(4), echoedTimestamp: 6000, timed: true, now: start)
        #expect(rtt.smoothed == .milliseconds(80))
        #expect(rtt.variation == .milliseconds(40))
    }

    @Test func karnsRuleForgetsARetransmittedTimedSegment() {
        var rtt = estimator()
        rtt.startTiming(SequenceNumber(1000), now: start)
        // Retransmitting other bytes leaves it timed.
        rtt.forgetSample(ifIn: SequenceNumber(2000), 500)
        rtt.forgetSample(ifIn: SequenceNumber(500), 500)
        #expect(rtt.sample != nil)
        // Retransmitting bytes that include it does not.
        rtt.forgetSample(ifIn: SequenceNumber(600), 401)
        #expect(rtt.sample == nil)
        // An ACK not to be timed (it may answer a retransmission) gives no sample either.
        rtt.startTiming(SequenceNumber(3000), now: start)
        rtt.acknowledged(through: SequenceNumber(4000), echoedTimestamp: nil, timed: false, now: start + .milliseconds(10))
        #expect(rtt.sample == nil)
        #expect(rtt.smoothed == nil)
        // A timeout forgets it too.
        rtt.startTiming(SequenceNumber(5000), now: start)
        rtt.backOff()
        #expect(rtt.sample == nil)
    }

    @Test func newDataAcknowledgedEndsTheBackoff() {
        var rtt = estimator()
        rtt.backoff = 3
        rtt.acknowledged(through: SequenceNumber(10), echoedTimestamp: nil, timed: false, now: start)
        #expect(rtt.backoff == 0)
    }
}
