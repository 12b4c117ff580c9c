public import NIOCore

/// A token bucket (for rate-limiting ICMP errors and similar): `rate` tokens per second, at most
/// `burst` saved up.
public struct TokenBucket: Sendable {
    /// Tokens added per second (never negative).
    public let rate: Double
    /// The most tokens that can be saved up (at least 1).
    public let burst: Double
    private var tokens: Double
    private var last: NIODeadline?

    /// Creates a full bucket; a negative `rate` is treated as 0 and a `burst` below 1 as 1.
    public init(rate: Double, burst: Double) {
        self.rate = max(0, rate)
        self.burst = max(1, burst)
        self.tokens = max(1, burst)
    }

    /// Takes one token if there is one.
    public mutating func take(now: NIODeadline) -> Bool {
        if let last {
            let elapsed = Double((now - last).nanoseconds) / 1e9
            if elapsed > 0 { tokens = min(burst, tokens + elapsed * rate) }
        }
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
