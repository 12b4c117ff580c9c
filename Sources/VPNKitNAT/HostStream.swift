// A TCP flow's host socket, whichever loop the NAT runs on: a SwiftNIO channel (the library's
// default loop) or a `ReactorStream` (the daemon's reactor). The flow, its state machine and every
// decision are the same for both; only these calls differ.

import NIOCore
import VPNKitBase
#if os(Linux)
import VPNKitReactor
import VPNKitSystem
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a `TCPFlow` does to its host socket.
protocol HostStream: AnyObject {
    /// The socket takes more writes (its queue is under the high mark).
    var isWritable: Bool { get }
    /// Reads once; the flow hears `hostRead`s, then `hostReadComplete` (or `hostEOF`).
    func read()
    /// Queues the pieces (unflushed); the flow hears `hostTookPieces` once they have left the queue.
    func writePieces(_ pieces: [ByteBuffer])
    /// Sends what is queued.
    func flush()
    /// Flushes, then shuts the socket's output.
    func shutdownOutput()
    /// Closes the socket; with `reset`, with RST (SO_LINGER 0).
    func close(reset: Bool)
}

/// A SwiftNIO channel as a flow's host socket; its events reach the flow through `HostTCPHandler`.
final class NIOHostStream: HostStream {
    let channel: any Channel
    weak var flow: TCPFlow?

    init(channel: any Channel, flow: TCPFlow) {
        self.channel = channel
        self.flow = flow
    }

    var isWritable: Bool { channel.isWritable }
    func read() { channel.read() }
    func flush() { channel.flush() }

    func writePieces(_ pieces: [ByteBuffer]) {
        for piece in pieces.dropLast() { channel.write(piece, promise: nil) }
        // The last write's promise completes once every piece of this move left the queue.
        let written = channel.eventLoop.makePromise(of: Void.self)
        channel.write(pieces[pieces.count - 1], promise: written)
        let count = pieces.count
        written.futureResult.assumeIsolated().whenComplete { [weak self] _ in
            // Only schedules a pump, never acts on the stack: no driver call needed.
            self?.flow?.handle(.hostTookPieces(count))
        }
    }

    func shutdownOutput() {
        channel.flush()
        channel.close(mode: .output, promise: nil)
    }

    func close(reset: Bool) {
        let channel = self.channel
        if reset, let provider = channel as? any SocketOptionProvider {
            // SO_LINGER 0: close sends RST, as the guest's reset asks.
            provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }
}

#if os(Linux)
extension ReactorStream: HostStream {
    func writePieces(_ pieces: [ByteBuffer]) {
        for piece in pieces { write(piece) }
    }
}

/// The reactor's stream events, as the flow's events (the same ones `HostTCPHandler` hands over).
extension TCPFlow: ReactorStreamDelegate {
    func streamConnected(_ stream: ReactorStream) { hostEvent(.hostConnected) }
    func streamConnectFailed(_ stream: ReactorStream, _ error: SystemError) { hostConnectFailed(error) }
    // Only kept until the read completes: no driver call needed.
    func streamRead(_ stream: ReactorStream, _ data: ByteBuffer) { handle(.hostRead(data)) }
    func streamReadComplete(_ stream: ReactorStream) { hostEvent(.hostReadComplete) }
    func streamEnded(_ stream: ReactorStream) { hostEvent(.hostEOF) }
    func streamWritable(_ stream: ReactorStream) { hostEvent(.hostWritable) }
    // Only schedules a pump, never acts on the stack: no driver call needed.
    func streamWrote(_ stream: ReactorStream, pieces: Int) { handle(.hostTookPieces(pieces)) }
    func streamFailed(_ stream: ReactorStream, _ error: SystemError) { hostFailed(error) }
}

extension NATConfiguration {
    /// The reactor's stream limits, as `configureHostTCPChannel` sets SwiftNIO's.
    var hostStreamOptions: ReactorStream.Options {
        var options = ReactorStream.Options()
        options.maximumRead = tcpReadChunkBytes
        options.initialRead = hostInitialRead
        options.lowMark = Self.hostWriteMarks.low
        options.highMark = Self.hostWriteMarks.high
        return options
    }
}
#endif
