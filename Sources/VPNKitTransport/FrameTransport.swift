public import NIOCore
public import VPNKitBase

/// A link that carries whole Ethernet frames (no FCS) between the stack and a guest: a TAP device,
/// a unix socket speaking a VM's framing, an in-memory pair in tests, a capture being replayed.
///
/// Threading: a transport is confined to one thread. Event-loop transports call `onFrame` and
/// `onClose` on their event loop and must be used from it; in-memory transports call them from
/// whatever drives them (a simulation loop). Nothing here is `Sendable`.
///
/// Contract:
/// - `onFrame` receives exactly one Ethernet frame per call, never a fragment of one and never
///   two glued together. The buffer is the receiver's to keep.
/// - `send` transmits exactly one frame, or drops it (returns false and counts it in
///   `statistics`) when the link cannot take it now; it never blocks and never merges frames.
/// - `close` is idempotent; after it, `send` drops and no callback fires except a pending `onClose`.
public protocol FrameTransport: AnyObject {
    /// The link MTU: the largest IP datagram a frame may carry (the frame itself may be 14–18 bytes
    /// longer).
    var mtu: Int { get }
    /// The guest's MAC address when the transport assigns or knows it (vmnet hands one to its client),
    /// nil otherwise.
    var guestAddress: MACAddress? { get }
    /// Called for every frame from the guest. Set before frames can arrive (before starting, or
    /// right after the transport is handed to you on its event loop).
    var onFrame: ((ByteBuffer) -> Void)? { get set }
    /// Called once when the link ends for good: nil for an orderly end (peer closed, replay done),
    /// an error otherwise. Not called for a `close()` you asked for.
    var onClose: (((any Error)?) -> Void)? { get set }
    /// Sends one frame; false when it was dropped (link full, down or closed).
    @discardableResult func send(_ frame: ByteBuffer) -> Bool
    /// Frames and bytes moved and dropped so far.
    var statistics: TransportStatistics { get }
    /// Stops the link and releases its resources.
    func close()
}

/// A transport whose link takes offloads (see `FrameOffload`): a TAP device opened with a virtio-net
/// header. `StackDriver` uses these members instead of `onFrame` and `send(_:)` when `offloads` is
/// not empty, and lets the stack send TCP segments up to 64 KiB with partial checksums.
///
/// Contract, on top of `FrameTransport`'s: while `onOffloadedFrame` is set, frames go there (with
/// what the guest's kernel said of them) and not to `onFrame`. Frames delivered to `onFrame`, and
/// frames sent with `send(_:)`, are ordinary: complete checksums, at most MTU-sized (the transport
/// finishes partial checksums of received frames itself).
public protocol OffloadingFrameTransport: FrameTransport {
    /// The offloads the link accepts for frames sent to it; empty when they are switched off.
    var offloads: LinkOffloads { get }
    /// Called for every frame from the guest, with its offload metadata, instead of `onFrame`.
    var onOffloadedFrame: ((ByteBuffer, FrameOffload) -> Void)? { get set }
    /// Sends one frame with the offloads it asks for (only ones `offloads` contains): `frame`, then
    /// `payload` when given (only with `.gather`), as one frame.
    @discardableResult func send(_ frame: ByteBuffer, payload: ByteBuffer?, offload: FrameOffload) -> Bool
}

extension OffloadingFrameTransport {
    /// Sends one whole frame with the offloads it asks for.
    @discardableResult public func send(_ frame: ByteBuffer, offload: FrameOffload) -> Bool {
        send(frame, payload: nil, offload: offload)
    }
}

/// Counters every transport keeps.
public struct TransportStatistics: Sendable, Hashable, CustomStringConvertible {
    /// Frames received from the guest and passed to `onFrame`.
    public var framesReceived: UInt64 = 0
    /// Bytes of the frames received (Ethernet header included, no FCS).
    public var bytesReceived: UInt64 = 0
    /// Frames `send` accepted for transmission.
    public var framesSent: UInt64 = 0
    /// Bytes of the frames sent.
    public var bytesSent: UInt64 = 0
    /// Frames `send` could not transmit (link full or down).
    public var sendDrops: UInt64 = 0
    /// Frames received that violated the link's framing (too long, bad length prefix…).
    public var receiveErrors: UInt64 = 0

    /// Creates counters, all zero.
    public init() {}

    /// Counts one received frame of `bytes` bytes.
    public mutating func countReceived(_ bytes: Int) {
        framesReceived &+= 1
        bytesReceived &+= UInt64(bytes)
    }
    /// Adds another transport's counters to these (totals over several connections).
    public mutating func add(_ other: TransportStatistics) {
        framesReceived &+= other.framesReceived
        bytesReceived &+= other.bytesReceived
        framesSent &+= other.framesSent
        bytesSent &+= other.bytesSent
        sendDrops &+= other.sendDrops
        receiveErrors &+= other.receiveErrors
    }

    /// Counts one sent frame of `bytes` bytes.
    public mutating func countSent(_ bytes: Int) {
        framesSent &+= 1
        bytesSent &+= UInt64(bytes)
    }

    /// A one-line summary: frames and bytes each way, send drops and receive errors.
    public var description: String {
        "rx \(framesReceived) frames/\(bytesReceived) B, tx \(framesSent) frames/\(bytesSent) B, tx drops \(sendDrops), rx errors \(receiveErrors)"
    }
}

/// Why a transport could not be opened or failed.
public enum TransportError: Error, Sendable, CustomStringConvertible {
    /// A system call failed: what was attempted, and the `errno` it set.
    case systemCall(String, errno: Int32)
    /// The peer broke the link's framing (a frame longer than allowed, a stream that ended inside a
    /// frame); the text says how.
    case framing(String)
    /// The opening exchange with the peer failed (wrong magic or version, a timeout, the peer gone);
    /// the text says why.
    case handshake(String)
    /// The transport is closed, or its socket stopped without a more specific error.
    case closed

    /// A one-line message; for a failed system call, with `strerror`'s text and the number.
    public var description: String {
        switch self {
        case .systemCall(let call, let errno): return "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        case .framing(let text): return "framing error: \(text)"
        case .handshake(let text): return "handshake failed: \(text)"
        case .closed: return "transport is closed"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
