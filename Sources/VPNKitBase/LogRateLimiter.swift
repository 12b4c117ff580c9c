package import NIOCore

/// Decides which log lines about the same thing get through, so that what a guest (or any client)
/// can trigger once per packet or per connection cannot flood the log: per key, a burst of `burst`
/// lines, then one per `interval`. Lines held back are counted; the next line of that key that gets
/// through carries the count (`Decision.log(suppressed:)`), and `takeSuppressed(now:)` hands out the
/// counts of keys that have gone quiet, for a periodic "N similar messages suppressed".
///
/// A key names a kind of line ("tcp refused: --max-connections"), never a guest address or port,
/// which a guest could vary. At most `maximumKeys` keys are tracked; lines of any key beyond them
/// share one bucket (`overflowKey`), so memory stays fixed whatever the keys. Time comes in as
/// `now`: nothing here reads a clock. Not thread-safe: keep it where its logger is used (one event
/// loop).
package struct LogRateLimiter: Sendable {
    /// What to do with one line.
    package enum Decision: Sendable, Equatable {
        /// Log it; `suppressed` lines of its key were held back since the last one that got through.
        case log(suppressed: Int)
        /// Hold it back (counted).
        case suppress
    }

    /// The key that lines of keys beyond `maximumKeys` share.
    package static let overflowKey = "(other messages)"

    /// Lines of one key that may pass at once, after a quiet spell.
    package let burst: Int
    /// After the burst, one line of a key per this much time.
    package let interval: TimeAmount
    /// Keys tracked at most (`overflowKey` included).
    package let maximumKeys: Int

    private struct Bucket {
        var tokens: Int
        /// When `tokens` was last topped up: tokens accrue from here, one per `interval`.
        var refilled: NIODeadline
        var suppressed = 0
    }

    private var buckets: [String: Bucket] = [:]

    /// Keys tracked now (at most `maximumKeys`).
    package var keyCount: Int { buckets.count }

    /// A burst of 10 lines per key, then one a second; at most 64 keys. Traps unless `burst`,
    /// `interval` and `maximumKeys` are positive.
    package init(burst: Int = 10, interval: TimeAmount = .seconds(1), maximumKeys: Int = 64) {
        precondition(burst > 0 && interval.nanoseconds > 0 && maximumKeys > 0, "log rate limits must be positive")
        self.burst = burst
        self.interval = interval
        self.maximumKeys = maximumKeys
        buckets.reserveCapacity(maximumKeys)
    }

    /// Whether a line of `key` may be logged at `now`; counts it when not.
    package mutating func admit(_ key: String, now: NIODeadline) -> Decision {
        let key = buckets[key] != nil || buckets.count < maximumKeys - 1 ? key : Self.overflowKey
        var bucket = buckets[key] ?? Bucket(tokens: burst, refilled: now)
        refill(&bucket, now: now)
        let decision: Decision
        if bucket.tokens > 0 {
            bucket.tokens -= 1
            decision = .log(suppressed: bucket.suppressed)
            bucket.suppressed = 0
        } else {
            bucket.suppressed += 1
            decision = .suppress
        }
        buckets[key] = bucket
        return decision
    }

    /// The keys with lines held back that may log again at `now`, with how many were held back;
    /// each reported key spends one line of its allowance (the report is a line too) and its count
    /// starts again from zero. For a timer, so that the count of a flood that stopped is still said.
    package mutating func takeSuppressed(now: NIODeadline) -> [(key: String, count: Int)] {
        var reports: [(key: String, count: Int)] = []
        for (key, var bucket) in buckets where bucket.suppressed > 0 {
            refill(&bucket, now: now)
            guard bucket.tokens > 0 else { continue }
            reports.append((key, bucket.suppressed))
            bucket.tokens -= 1
            bucket.suppressed = 0
            buckets[key] = bucket
        }
        return reports.sorted { $0.key < $1.key }
    }

    private func refill(_ bucket: inout Bucket, now: NIODeadline) {
        guard now > bucket.refilled else { return }
        let earned = (now - bucket.refilled).nanoseconds / interval.nanoseconds
        guard earned > 0 else { return }
        if earned >= Int64(burst - bucket.tokens) {
            bucket.tokens = burst
            bucket.refilled = now
        } else {
            bucket.tokens += Int(earned)
            bucket.refilled = bucket.refilled + .nanoseconds(earned * interval.nanoseconds)
        }
    }

    /// The text a line carries when `suppressed` lines of its kind were held back before it (empty
    /// for none): " (N similar messages suppressed)".
    package static func suffix(suppressed: Int) -> String {
        suppressed == 0 ? "" : " (\(suppressed) similar message\(suppressed == 1 ? "" : "s") suppressed)"
    }
}
