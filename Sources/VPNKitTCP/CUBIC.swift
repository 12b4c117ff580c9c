// CUBIC's congestion avoidance and loss reaction (RFC 9438): the window follows a cubic function of
// the time since the last reduction, and never grows slower than a Reno-friendly estimate.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// CUBIC (RFC 9438), in bytes and seconds, with C = 0.4 and β = 0.7.
struct CUBIC: CongestionAlgorithm {
    /// C, the cubic function's scaling constant (segments per second cubed).
    static let c = 0.4
    /// β_cubic, the multiplicative decrease factor.
    static let beta = 0.7

    /// W_max: the window just before the last reduction, in bytes.
    var wMax: Double = 0
    /// K: the time, in seconds, the cubic function takes to return to W_max.
    var k: Double = 0
    /// When the current congestion avoidance period began; nil until its first ACK.
    var epoch: NIODeadline?
    /// W_est: the Reno-friendly window estimate, in bytes.
    var wEst: Double = 0

    /// RFC 9438 §4.2 eq. 1: W_cubic(t) in bytes, t seconds into the period.
    func target(at t: Double, mss: Double) -> Double {
        (Self.c * pow(t - k, 3) + wMax / mss) * mss
    }

    /// RFC 9438 §4.2–4.4: grows toward W_cubic(t + RTT), never slower than W_est. The first ACK of a
    /// period starts it: K from how far the window is below W_max (eq. 2).
    mutating func increase(window cwnd: inout Int, acked: Int, mss mssBytes: Int, smoothedRTT: TimeAmount?, now: NIODeadline) {
        let mss = Double(mssBytes)
        if epoch == nil {
            epoch = now
            let wMaxSegments = max(wMax, Double(cwnd)) / mss
            let cwndSegments = Double(cwnd) / mss
            k = cbrt(max(0, wMaxSegments - cwndSegments) / Self.c)
            if wMax < Double(cwnd) { wMax = Double(cwnd) }
            wEst = Double(cwnd)
        }
        let rtt = Double((smoothedRTT ?? .milliseconds(100)).nanoseconds) / 1e9
        let t = Double((now - epoch!).nanoseconds) / 1e9 + rtt
        let goalCubic = target(at: t, mss: mss)
        // Reno-friendly estimate (§4.3: α = 3β/(2−β) ≈ 0.53 segments per RTT).
        wEst += 0.529 * mss * Double(acked) / Double(cwnd)
        let goal = max(goalCubic, wEst)
        if goal > Double(cwnd) {
            let increase = (goal - Double(cwnd)) / Double(cwnd) * mss
            cwnd += max(1, Int(min(increase, mss / 2)))
        } else {
            cwnd += max(1, Int(mss * mss / Double(cwnd) / 100))
        }
    }

    /// RFC 9438 §4.6–4.7: ssthresh = β·cwnd (at least two segments); W_max remembers the window, or
    /// with fast convergence less of it when the window did not get back to the previous W_max. A
    /// new period starts at the next congestion avoidance ACK.
    mutating func reducedWindow(window cwnd: Int, flightSize: Int, mss: Int) -> Int {
        let window = Double(cwnd)
        wMax = window < wMax ? window * (1 + Self.beta) / 2 : window
        epoch = nil
        return max(Int(window * Self.beta), 2 * mss)
    }
}
