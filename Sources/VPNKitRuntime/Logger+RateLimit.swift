// Log lines that a guest or a client can trigger once per packet or per connection (a refused
// connection, an evicted flow, a failed host connect) go through a `LogRateLimiter`.

package import Logging
package import NIOCore
package import VPNKitBase
package import VPNKitTransport

extension Logger {
    /// Logs `message` at `level` unless `limiter` holds lines of `key` back at `now`; a line that
    /// follows held-back ones ends with " (N similar messages suppressed)". When the logger would
    /// not print `level`, nothing is done: the message is not built and the limiter not consulted.
    package func log(
        _ level: Logger.Level, key: String, limiter: inout LogRateLimiter, now: NIODeadline,
        _ message: @autoclosure () -> Logger.Message,
        file: String = #fileID, function: String = #function, line: UInt = #line
    ) {
        guard logLevel <= level else { return }
        guard case .log(let suppressed) = limiter.admit(key, now: now) else { return }
        log(level: level, "\(message())\(LogRateLimiter.suffix(suppressed: suppressed))", file: file, function: function, line: line)
    }

    /// Says, at `level`, how many lines of each key `limiter` held back since its last line, for the
    /// keys that have gone quiet (call it from a timer).
    package func logSuppressed(_ level: Logger.Level, limiter: inout LogRateLimiter, now: NIODeadline) {
        guard logLevel <= level else { return }
        for (key, count) in limiter.takeSuppressed(now: now) {
            log(level: level, "\(count) similar message\(count == 1 ? "" : "s") suppressed: \(key)")
        }
    }
}

/// A logger and its limiter together, for code that has no object of its own to keep the limiter in
/// (callbacks on one event loop). Use it on that loop only.
package final class RateLimitedLogger {
    package let logger: Logger
    package var limiter: LogRateLimiter

    package init(_ logger: Logger, limiter: LogRateLimiter = LogRateLimiter()) {
        self.logger = logger
        self.limiter = limiter
    }

    /// `Logger.log(_:key:limiter:now:_:)` with this logger's limiter.
    package func log(
        _ level: Logger.Level, key: String, now: NIODeadline = .now(), _ message: @autoclosure () -> Logger.Message,
        file: String = #fileID, function: String = #function, line: UInt = #line
    ) {
        logger.log(level, key: key, limiter: &limiter, now: now, message(), file: file, function: function, line: line)
    }
}

/// Logs what a pausing listener reports (the guest's socket, the stats socket). A failed accept can
/// come once per connection, so those lines are rate-limited; pauses come at most once a second.
package func logListenerEvent(_ event: PausingListener.Event, listener: String, log: RateLimitedLogger) {
    switch event {
    case .resumed: log.logger.info("\(listener): \(event)")
    case .acceptFailed: log.log(.notice, key: "\(listener): accept failed", "\(listener): \(event)")
    case .paused, .resumeFailed: log.logger.notice("\(listener): \(event)")
    }
}
