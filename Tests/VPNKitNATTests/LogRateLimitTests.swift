import Foundation
import Logging
import NIOCore
import Synchronization
import Testing
import VPNKitBase
import VPNKitNAT
import VPNKitStack
import VPNKitRuntime

/// A log handler that keeps every line it is given (level and text), for counting.
final class RecordingLogHandler: LogHandler, Sendable {
    private let lines = Mutex<[(Logger.Level, String)]>([])
    private let level = Mutex<Logger.Level>(.info)
    private let storedMetadata = Mutex<Logger.Metadata>([:])

    var logLevel: Logger.Level {
        get { level.withLock { $0 } }
        set { level.withLock { $0 = newValue } }
    }
    var metadata: Logger.Metadata {
        get { storedMetadata.withLock { $0 } }
        set { storedMetadata.withLock { $0 = newValue } }
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { storedMetadata.withLock { $0[key] = newValue } }
    }

    func log(event: LogEvent) {
        lines.withLock { $0.append((event.level, event.message.description)) }
    }

    /// The lines so far, as text.
    var recorded: [String] { lines.withLock { $0.map(\.1) } }

    /// A logger writing here, printing `level` and above.
    static func logger(level: Logger.Level = .info) -> (Logger, RecordingLogHandler) {
        let handler = RecordingLogHandler()
        handler.logLevel = level
        return (Logger(label: "test", factory: { _ in handler }), handler)
    }
}

@Suite("Log rate limiter: a burst per key, then one line a second, the rest counted")
struct LogRateLimiterTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    @Test("a burst of 10 passes, the rest are held back and counted; the next line after a second carries the count")
    func burstThenOneASecond() {
        var limiter = LogRateLimiter()
        let burst = (0..<10).map { _ in limiter.admit("refused", now: start) }
        #expect(burst == Array(repeating: .log(suppressed: 0), count: 10))
        for _ in 0..<20 { #expect(limiter.admit("refused", now: start) == .suppress) }
        #expect(limiter.admit("refused", now: start + .milliseconds(999)) == .suppress)
        #expect(limiter.admit("refused", now: start + .seconds(1)) == .log(suppressed: 21))
        #expect(limiter.admit("refused", now: start + .seconds(1)) == .suppress)
        #expect(limiter.admit("refused", now: start + .milliseconds(1500)) == .suppress)
        #expect(limiter.admit("refused", now: start + .seconds(2)) == .log(suppressed: 2))
        // A long quiet spell earns a whole burst again, and no more.
        let later = start + .seconds(100)
        #expect((0..<11).map { _ in limiter.admit("refused", now: later) } == Array(repeating: .log(suppressed: 0), count: 10) + [.suppress])
    }

    @Test("keys are limited apart: one flooded key does not hold back another")
    func keysApart() {
        var limiter = LogRateLimiter(burst: 2)
        for _ in 0..<50 { _ = limiter.admit("evicted", now: start) }
        #expect(limiter.admit("evicted", now: start) == .suppress)
        #expect(limiter.admit("refused", now: start) == .log(suppressed: 0))
        #expect(limiter.admit("refused", now: start) == .log(suppressed: 0))
        #expect(limiter.admit("refused", now: start) == .suppress)
    }

    @Test("at most maximumKeys keys: 1000 distinct keys share one overflow bucket beyond them")
    func boundedKeys() {
        var limiter = LogRateLimiter(burst: 3, maximumKeys: 8)
        var logged = 0
        for index in 0..<1000 {
            if case .log = limiter.admit("key \(index)", now: start) { logged += 1 }
        }
        #expect(limiter.keyCount == 8)
        // 7 keys of their own (3 lines each would be allowed, 1 was used each), and 3 lines for
        // all the others together.
        #expect(logged == 7 + 3)
        // The keys tracked keep their own buckets.
        #expect(limiter.admit("key 0", now: start) == .log(suppressed: 0))
        #expect(limiter.admit("key 999", now: start) == .suppress)
    }

    @Test("takeSuppressed reports a flood that stopped, once a line is allowed again, and spends that line")
    func takeSuppressed() {
        var limiter = LogRateLimiter()
        for _ in 0..<15 { _ = limiter.admit("refused", now: start) }
        for _ in 0..<3 { _ = limiter.admit("evicted", now: start) }
        #expect(limiter.takeSuppressed(now: start).isEmpty, "no allowance left yet")
        let reports = limiter.takeSuppressed(now: start + .seconds(1))
        #expect(reports.map(\.key) == ["refused"] && reports.map(\.count) == [5])
        #expect(limiter.takeSuppressed(now: start + .seconds(5)).isEmpty, "counted once")
        #expect(limiter.admit("refused", now: start + .seconds(5)) == .log(suppressed: 0))
    }

    @Test("the text: \" (N similar messages suppressed)\", nothing for none")
    func suffix() {
        #expect(LogRateLimiter.suffix(suppressed: 0) == "")
        #expect(LogRateLimiter.suffix(suppressed: 1) == " (1 similar message suppressed)")
        #expect(LogRateLimiter.suffix(suppressed: 37) == " (37 similar messages suppressed)")
    }
}

@Suite("Rate-limited log lines")
struct RateLimitedLoggingTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    @Test("through a Logger: 10 lines, then the next one a second later says how many were held back; the timer says the rest")
    func throughALogger() {
        let (logger, handler) = RecordingLogHandler.logger()
        var limiter = LogRateLimiter()
        for index in 0..<25 { logger.log(.notice, key: "refused", limiter: &limiter, now: start, "refused \(index)") }
        #expect(handler.recorded == (0..<10).map { "refused \($0)" })
        logger.log(.notice, key: "refused", limiter: &limiter, now: start + .seconds(1), "refused 25")
        #expect(handler.recorded.last == "refused 25 (15 similar messages suppressed)")
        for index in 26..<30 { logger.log(.notice, key: "refused", limiter: &limiter, now: start + .seconds(1), "refused \(index)") }
        logger.logSuppressed(.notice, limiter: &limiter, now: start + .seconds(2))
        #expect(handler.recorded.last == "4 similar messages suppressed: refused")
        #expect(handler.recorded.count == 12)
    }

    @Test("below the logger's level nothing is done: the message is not built, the limiter not consulted")
    func costsNothingWhenOff() {
        let (logger, handler) = RecordingLogHandler.logger(level: .error)
        var limiter = LogRateLimiter()
        let built = Mutex(0)
        func message() -> Logger.Message {
            built.withLock { $0 += 1 }
            return "refused"
        }
        for _ in 0..<100 { logger.log(.notice, key: "refused", limiter: &limiter, now: start, message()) }
        logger.logSuppressed(.notice, limiter: &limiter, now: start + .seconds(1))
        #expect(built.withLock { $0 } == 0)
        #expect(limiter.keyCount == 0)
        #expect(handler.recorded.isEmpty)
    }

    @Test("a guest's flood of refused connections (--no-host-loopback) logs a burst, then a line a second; every refusal is accounted for")
    func refusedFlood() async throws {
        let (logger, handler) = RecordingLogHandler.logger()
        let world = try await NATWorld(logger: logger) { $0.hostLoopback = false }
        let attempts = 300
        let began = ContinuousClock.now
        for _ in 0..<attempts {
            await #expect(throws: AsyncTCPError.connectionClosed(.refused)) {
                _ = try await StackDriver.connect(to: .v4(hostAlias), port: 9, on: world.guest)
            }
        }
        let seconds = (ContinuousClock.now - began).components.seconds
        #expect(try await world.nat { $0.counters.tcpRefusedHostLoopback } == UInt64(attempts))
        let refusals = handler.recorded.filter { $0.hasPrefix("refused ") }
        #expect(refusals.count >= 10 && refusals.count <= 10 + Int(seconds) + 2,
                "\(refusals.count) lines in \(seconds) s")
        // The NAT's sweep (once a second) says how many were held back since the last line.
        var report: String?
        for _ in 0..<300 where report == nil {
            report = handler.recorded.first { $0.hasSuffix("similar messages suppressed: tcp refused: --no-host-loopback") }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(report != nil, "\(handler.recorded.suffix(3))")
        // Every refusal is either a line of its own or counted in one.
        func count(_ line: String) -> Int {
            guard let match = line.firstMatch(of: /(\d+) similar messages? suppressed/) else { return 0 }
            return Int(match.1) ?? 0
        }
        let accounted = refusals.count + handler.recorded.map(count).reduce(0, +)
        #expect(accounted == attempts, "\(handler.recorded)")
        try await world.shutdown()
    }
}
