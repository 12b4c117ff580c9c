// How the daemon learns it should stop: SIGINT, SIGTERM and SIGHUP, or the guest link ending.

@preconcurrency import Dispatch
import VPNKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Something other than a signal that ends the daemon (the guest link closing).
final class StopReason: Sendable {
    let stream: AsyncStream<String>
    private let continuation: AsyncStream<String>.Continuation
    init() { (stream, continuation) = AsyncStream.makeStream(of: String.self) }
    func signal(_ reason: String) { continuation.yield(reason) }

    /// Signals when `stack`'s guest link ends on its own (failed, or closed by the peer); a shutdown
    /// we asked for is no reason.
    func watch(_ stack: UserspaceStack) {
        Task {
            switch await stack.waitUntilLinkEnds() {
            case .failed(let error): signal("the guest link ended: \(error)")
            case .closedByPeer: signal("the guest link closed")
            case .shutDown: break
            }
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, caught from the first line of `run` on (a signal that came while the
/// daemon was still starting would otherwise kill it with the default action), delivered as a stream.
final class SignalWatcher: @unchecked Sendable {  // the sources are only touched at init and cancel
    let stream: AsyncStream<Int32>
    private let continuation: AsyncStream<Int32>.Continuation
    private var sources: [any DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "vpnkit.signals")

    init(_ numbers: [Int32]) {
        (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        for number in numbers {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            let continuation = self.continuation
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            sources.append(source)
        }
    }

    static func name(_ number: Int32) -> String {
        switch number {
        case SIGINT: return "SIGINT"
        case SIGTERM: return "SIGTERM"
        case SIGHUP: return "SIGHUP"
        default: return "signal \(number)"
        }
    }

    func cancel() {
        for source in sources { source.cancel() }
        continuation.finish()
    }
}

/// Waits for a signal (or `other`), without a busy loop; returns why it stopped.
func waitForStop(_ signals: SignalWatcher, or other: StopReason) async -> String {
    await withTaskGroup(of: String.self) { group in
        group.addTask { for await number in signals.stream { return SignalWatcher.name(number) }; return "signal stream ended" }
        group.addTask { for await reason in other.stream { return reason }; return "link ended" }
        let first = await group.next() ?? "stopped"
        group.cancelAll()
        return first
    }
}
