// The connection's deadlines: the earliest of them, the persist interval, and what TIME-WAIT and
// CLOSED stop.

import NIOCore
import Testing
@testable import VPNKitTCP

@Suite struct TCPTimersTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test func noTimerMeansNoDeadline() {
        #expect(TCPTimers().nextDeadline(userTimeout: .seconds(5)) == nil)
    }

    @Test func theNextDeadlineIsTheEarliest() {
        var timers = TCPTimers()
        timers.retransmitAt = t0 + .milliseconds(300)
        timers.keepAliveAt = t0 + .seconds(60)
        #expect(timers.nextDeadline(userTimeout: nil) == t0 + .milliseconds(300))
        timers.delayedACKAt = t0 + .milliseconds(40)
        #expect(timers.nextDeadline(userTimeout: nil) == t0 + .milliseconds(40))
        timers.lossProbeAt = t0 + .milliseconds(20)
        #expect(timers.nextDeadline(userTimeout: nil) == t0 + .milliseconds(20))
        // Without a retransmission timer the others still count.
        timers.retransmitAt = nil
        timers.lossProbeAt = nil
        timers.delayedACKAt = nil
        timers.persistAt = t0 + .seconds(2)
        #expect(timers.nextDeadline(userTimeout: nil) == t0 + .seconds(2))
        // The user timeout counts from the oldest unacknowledged byte.
        timers.unacknowledgedSince = t0
        #expect(timers.nextDeadline(userTimeout: .seconds(1)) == t0 + .seconds(1))
        #expect(timers.nextDeadline(userTimeout: nil) == t0 + .seconds(2))
    }

    @Test func persistIntervalDoublesBetweenBounds() {
        var timers = TCPTimers()
        // At least 200 ms, whatever the RTO.
        #expect(timers.persistInterval(rto: .milliseconds(50), maximum: .seconds(60)) == .milliseconds(200))
        #expect(timers.persistInterval(rto: .seconds(1), maximum: .seconds(60)) == .seconds(1))
        timers.persistBackoff = 3
        #expect(timers.persistInterval(rto: .seconds(1), maximum: .seconds(60)) == .seconds(8))
        timers.persistBackoff = 20
        #expect(timers.persistInterval(rto: .seconds(1), maximum: .seconds(60)) == .seconds(60))
        #expect(timers.persistInterval(rto: .milliseconds(200), maximum: .seconds(600)) == .milliseconds(200 * 256))
    }

    @Test func timeWaitLeavesOnlyItsTimerAndADelayedACK() {
        var timers = TCPTimers()
        timers.retransmitAt = t0
        timers.lossProbeAt = t0
        timers.persistAt = t0
        timers.keepAliveAt = t0
        timers.unacknowledgedSince = t0
        timers.delayedACKAt = t0 + .milliseconds(40)
        timers.enterTimeWait(until: t0 + .seconds(60))
        #expect(timers.retransmitAt == nil && timers.lossProbeAt == nil && timers.persistAt == nil)
        #expect(timers.keepAliveAt == nil && timers.unacknowledgedSince == nil)
        #expect(timers.nextDeadline(userTimeout: .seconds(1)) == t0 + .milliseconds(40))
        timers.delayedACKAt = nil
        #expect(timers.nextDeadline(userTimeout: .seconds(1)) == t0 + .seconds(60))
        timers.stopAll()
        #expect(timers.nextDeadline(userTimeout: .seconds(1)) == nil)
    }
}
