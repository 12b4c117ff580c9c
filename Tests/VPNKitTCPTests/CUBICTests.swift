// CUBIC congestion control (RFC 9438): β = 0.7, fast convergence, K and W_cubic(t), the Reno-friendly
// estimate, and the shared slow start and timeout.

#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import Testing
@testable import VPNKitTCP

@Suite struct CUBICTests {
    let mss = 1000
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    /// RFC 9438 eq. 1 in segments: W_cubic(t) = C·(t − K)³ + W_max.
    func rfcWindow(_ t: Double, k: Double, wMaxSegments: Double) -> Double {
        0.4 * (t - k) * (t - k) * (t - k) + wMaxSegments
    }

    @Test func lossKeepsSeventyPercentAndRemembersWMax() {
        var cubic = CUBIC()
        let ssthresh = cubic.reducedWindow(window: 100 * mss, flightSize: 100 * mss, mss: mss)
        #expect(ssthresh == 70 * mss)
        #expect(cubic.wMax == Double(100 * mss))
        #expect(cubic.epoch == nil)
        // Fast convergence (§4.7): a loss below the previous W_max remembers (1 + β)/2 of the window.
        let again = cubic.reducedWindow(window: 80 * mss, flightSize: 80 * mss, mss: mss)
        #expect(again == 56 * mss)
        #expect(abs(cubic.wMax - Double(68 * mss)) < 1e-6)
        // At least two segments.
        #expect(cubic.reducedWindow(window: 2 * mss, flightSize: 2 * mss, mss: mss) == 2 * mss)
    }

    @Test func kIsTheTimeBackToWMax() {
        var cubic = CUBIC()
        _ = cubic.reducedWindow(window: 100 * mss, flightSize: 100 * mss, mss: mss)
        var cwnd = 70 * mss
        cubic.increase(window: &cwnd, acked: mss, mss: mss, smoothedRTT: .milliseconds(100), now: start)
        // RFC 9438 eq. 2: K = ∛((W_max − cwnd_epoch)/C) = ∛(30 / 0.4) = ∛75.
        #expect(abs(cubic.k - cbrt(75.0)) < 1e-9)
        #expect(abs(cubic.k - 4.2172) < 1e-4)
        #expect(cubic.epoch == start)
        #expect(cubic.wEst > Double(70 * mss))
    }

    @Test func theCubicFunctionAtAFewPoints() {
        var cubic = CUBIC()
        cubic.wMax = Double(100 * mss)
        cubic.k = cbrt(75.0)
        let m = Double(mss)
        for t in [0.0, 1.0, 2.5, cubic.k, cubic.k + 1, 8.0] {
            let expected = rfcWindow(t, k: cubic.k, wMaxSegments: 100) * m
            #expect(abs(cubic.target(at: t, mss: m) - expected) < 1e-6)
        }
        // At t = 0 the window is β·W_max, at K it is W_max, and one second later W_max + C.
        #expect(abs(cubic.target(at: 0, mss: m) - 70 * m) < 1e-6)
        #expect(abs(cubic.target(at: cubic.k, mss: m) - 100 * m) < 1e-6)
        #expect(abs(cubic.target(at: cubic.k + 1, mss: m) - 100.4 * m) < 1e-6)
    }

    @Test func growthTowardsTheTargetIsAtMostHalfASegmentPerACK() {
        var cubic = CUBIC()
        _ = cubic.reducedWindow(window: 100 * mss, flightSize: 100 * mss, mss: mss)
        var cwnd = 70 * mss
        cubic.increase(window: &cwnd, acked: mss, mss: mss, smoothedRTT: .milliseconds(100), now: start)
        // Far below the target 10 s later (t − K ≈ 5.9 s: about 182 segments): half a segment.
        let before = cwnd
        cubic.increase(window: &cwnd, acked: mss, mss: mss, smoothedRTT: .milliseconds(100), now: start + .seconds(10))
        #expect(cwnd == before + mss / 2)
    }

    @Test func theRenoFriendlyEstimateSetsTheGrowthWhenItIsAhead() {
        // No earlier loss: W_max is the window, K = 0, and for a while the cubic curve barely moves.
        var cubic = CUBIC()
        var cwnd = 10 * mss
        cubic.increase(window: &cwnd, acked: mss, mss: mss, smoothedRTT: .milliseconds(100), now: start)
        #expect(cubic.k == 0)
        // W_est = 10 000 + 0.529·1000·1000/10 000 = 10 052.9; the cubic target at t = RTT is
        // 10 000.4, so W_est wins: cwnd grows by (52.9 / 10 000)·1000 = 5.29, so 5 bytes.
        #expect(cwnd == 10 * mss + 5)
    }

    @Test func atTheTargetTheWindowCreepsUp() {
        var cubic = CUBIC()
        cubic.epoch = start
        cubic.wMax = Double(50 * mss)
        cubic.k = 10
        cubic.wEst = 0
        // At t = RTT the cubic curve is still far below cwnd (K = 10 s) and so is W_est: cwnd creeps
        // up by MSS²/cwnd/100, at least a byte.
        var cwnd = 50 * mss
        cubic.increase(window: &cwnd, acked: mss, mss: mss, smoothedRTT: .milliseconds(100), now: start)
        #expect(cwnd == 50 * mss + 1)
    }

    @Test func throughTheControllerLossAndTimeout() {
        var cc = CongestionControl(.cubic, initialWindow: 9 * mss)
        // Slow start is the same as NewReno's.
        cc.grow(acked: mss, mss: mss, smoothedRTT: nil, now: start)
        #expect(cc.cwnd == 10 * mss)
        // A loss: β = 0.7 of the window, whatever the flight size.
        cc.enterRecovery(recoveryPoint: SequenceNumber(1), flightSize: 4 * mss, mss: mss, sack: true)
        #expect(cc.ssthresh == 7000)
        #expect(cc.cwnd == 7000)
        guard case .cubic(let state) = cc.algorithm else {
            Issue.record("not CUBIC")
            return
        }
        #expect(state.wMax == Double(10 * mss))
        cc.exitRecovery()
        // Congestion avoidance is CUBIC's now: a new epoch starts with the first ACK.
        cc.grow(acked: mss, mss: mss, smoothedRTT: .milliseconds(50), now: start)
        guard case .cubic(let growing) = cc.algorithm else { return }
        #expect(growing.epoch == start)
        #expect(abs(growing.k - cbrt(3.0 / 0.4)) < 1e-9)
        #expect(cc.cwnd > 7000)
        // A timeout: ssthresh is β·cwnd (floored), and the window one segment.
        let window = cc.cwnd
        cc.timedOut(flightSize: 5 * mss, mss: mss)
        #expect(cc.cwnd == mss)
        #expect(cc.ssthresh == Int(Double(window) * 0.7))
        #expect(!cc.inRecovery)
    }
}
