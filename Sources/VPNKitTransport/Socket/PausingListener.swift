// A listening socket that pauses instead of spinning when accept(2) runs out of descriptors.

public import NIOCore
import NIOPosix
import VPNKitBase

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A listener (TCP or unix stream) that stays usable when the process runs out of descriptors.
///
/// When accept(2) fails with EMFILE, ENFILE, ENOBUFS or ENOMEM, the connection stays queued and the
/// listening socket stays readable. SwiftNIO's server channel leaves its read pending after a failed
/// accept, so it would retry at once, forever, at 100 % of the event loop's CPU (its accept back-off
/// never engages). This listener closes the server channel instead, which refuses what waits in its
/// queue, and binds again after `pause`, retrying each `pause` until it can or until `close()`.
///
/// `bind` makes the server channel (the same way each time); it runs on `eventLoop`. `report` hears
/// what happens, for logs and counters. Use it from `eventLoop` only.
public final class PausingListener {
    /// What happened to a listener, for logs and counters.
    public enum Event {
        /// An accept failed for a reason that does not need a pause (ECONNABORTED, say).
        case acceptFailed(any Error)
        /// Out of descriptors: the listener closed; waiting connections were refused.
        case paused(any Error)
        /// Listening again after a pause.
        case resumed
        /// Binding again after a pause failed; the next try is one `pause` later. Reported once per
        /// pause, not at every retry.
        case resumeFailed(any Error)
    }

    /// Makes the listening server channel.
    public typealias Bind = () -> EventLoopFuture<any Channel>

    /// The loop the listener runs on; use it from there only.
    public let eventLoop: any EventLoop
    /// How long the listener stays closed after accept(2) ran out of descriptors.
    public let pause: TimeAmount
    /// The listening channel; nil while paused or closed.
    public private(set) var channel: (any Channel)?
    private let bind: Bind
    private let report: (Event) -> Void
    private var rebind: Scheduled<Void>?
    private var closed = false

    /// A listener that is not listening yet: call `start()`.
    public init(on eventLoop: any EventLoop, pause: TimeAmount = .seconds(1), bind: @escaping Bind, report: @escaping (Event) -> Void) {
        self.eventLoop = eventLoop
        self.pause = pause
        self.bind = bind
        self.report = report
    }

    /// Whether a failed accept(2) means the process (or the system) is out of descriptors or memory.
    public static func isOutOfDescriptors(_ error: any Error) -> Bool {
        guard let io = error as? IOError else { return false }
        return acceptRanOutOfDescriptors(errno: io.errnoCode)
    }

    /// Binds and listens. The future fails when the bind does.
    public func start() -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        return bind().assumeIsolated().flatMapThrowing { channel in
            let listener = bound.value
            guard !listener.closed else {
                channel.close(promise: nil)
                return
            }
            listener.channel = channel
            // After the server channel's accept handler, where its failures arrive.
            try channel.pipeline.syncOperations.addHandler(AcceptFailureHandler(listener: listener))
        }.nonisolated()
    }

    /// Stops listening for good (a pending re-bind is cancelled). Accepted connections are not affected.
    public func close() {
        eventLoop.preconditionInEventLoop()
        closed = true
        rebind?.cancel()
        rebind = nil
        channel?.close(promise: nil)
        channel = nil
    }

    fileprivate func acceptFailed(_ error: any Error) {
        guard Self.isOutOfDescriptors(error) else {
            report(.acceptFailed(error))
            return
        }
        guard rebind == nil, !closed, let channel else { return }
        self.channel = nil
        channel.close(promise: nil)
        report(.paused(error))
        scheduleRebind(firstTry: true)
    }

    private func scheduleRebind(firstTry: Bool) {
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        rebind = eventLoop.assumeIsolated().scheduleTask(in: pause) {
            let listener = bound.value
            listener.rebind = nil
            guard !listener.closed else { return }
            listener.start().assumeIsolated().whenComplete { result in
                let listener = bound.value
                guard !listener.closed else { return }
                switch result {
                case .success:
                    listener.report(.resumed)
                case .failure(let error):
                    if firstTry { listener.report(.resumeFailed(error)) }
                    listener.scheduleRebind(firstTry: false)
                }
            }
        }
    }
}

extension PausingListener.Event: CustomStringConvertible {
    /// What happened, for a log line after the listener's name.
    public var description: String {
        switch self {
        case .acceptFailed(let error): return "accepting a connection failed: \(error)"
        case .paused(let error): return "out of descriptors (\(error)): paused listening; waiting connections are refused"
        case .resumed: return "listening again"
        case .resumeFailed(let error): return "cannot listen again: \(error); retrying after each pause"
        }
    }
}

/// Sits after the server channel's accept handler: what arrives here is an accept that failed.
private final class AcceptFailureHandler: ChannelInboundHandler {
    typealias InboundIn = any Channel
    private weak var listener: PausingListener?

    init(listener: PausingListener) { self.listener = listener }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        listener?.acceptFailed(error)
    }
}
