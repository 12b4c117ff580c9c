public import NIOCore

/// What a link does for a frame besides carrying it: the two offloads of a virtio-net header
/// (a TAP device opened with `IFF_VNET_HDR`), which let a TCP segment far larger than the MTU and a
/// transport checksum left unfinished cross a link between two stacks on one host.
///
/// From the guest (receive): `checksumTrusted` means the guest's kernel did not fill in the transport
/// checksum (it marked it partial) or vouched for it; the stack does not verify it. `segmentSize`
/// is the MSS a large TCP segment was cut for (informational).
///
/// To the guest (transmit): a nonzero `checksumStart` asks the link to treat the transport checksum
/// as partial: the checksum field, `checksumOffset` bytes after `checksumStart` (both counted from
/// the start of the Ethernet frame), holds only the pseudo-header's sum. A nonzero `segmentSize`
/// marks a TCP segment larger than the MTU that the link cuts into segments of that many payload
/// bytes (`headerLength` is the Ethernet, IP and TCP headers' length); `ipv6` says it is TCP over
/// IPv6 rather than IPv4.
public struct FrameOffload: Sendable, Hashable {
    /// Receive: the transport checksum needs no verification.
    public var checksumTrusted: Bool
    /// Transmit: where the checksummed region starts (0: the checksum is complete).
    public var checksumStart: UInt16
    /// Transmit: where the checksum field sits, counted from `checksumStart`.
    public var checksumOffset: UInt16
    /// TCP segmentation: payload bytes per segment (0: none).
    public var segmentSize: UInt16
    /// TCP segmentation: the length of the headers in front of the payload.
    public var headerLength: UInt16
    /// TCP segmentation: the segment is TCP over IPv6 (virtio-net's GSO type TCPV6, not TCPV4).
    public var ipv6 = false

    /// Creates offload metadata; every field defaults to "nothing to do".
    public init(checksumTrusted: Bool = false, checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0, segmentSize: UInt16 = 0, headerLength: UInt16 = 0) {
        self.checksumTrusted = checksumTrusted
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
        self.segmentSize = segmentSize
        self.headerLength = headerLength
    }

    /// No offload: a frame whose checksums are complete and whose size fits the MTU.
    public static let none = FrameOffload()

    /// Whether the transport checksum is left partial for the link to finish (transmit).
    @inlinable public var hasPartialChecksum: Bool { checksumStart != 0 }
}

/// The offloads a link accepts for frames sent to it.
public struct LinkOffloads: OptionSet, Sendable, Hashable {
    /// The raw bits.
    public let rawValue: UInt8
    /// Creates a set from raw bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Frames may carry a partial transport checksum (`FrameOffload.checksumStart`).
    public static let partialChecksum = LinkOffloads(rawValue: 1)
    /// TCP/IPv4 segments up to 64 KiB, whatever the MTU, cut by the link (`FrameOffload.segmentSize`);
    /// always together with `partialChecksum`.
    public static let tcpSegmentation = LinkOffloads(rawValue: 2)
    /// The same for TCP/IPv6 segments (`FrameOffload.ipv6`).
    public static let tcpSegmentationIPv6 = LinkOffloads(rawValue: 8)
    /// A frame may be handed over as its headers plus a separate payload buffer
    /// (`OutgoingFrame.payload`), written with one gathering write: the payload is never copied.
    public static let gather = LinkOffloads(rawValue: 4)
}

/// One frame waiting to be sent, with what the link should do for it.
public struct OutgoingFrame: Sendable {
    /// The Ethernet frame.
    public var frame: ByteBuffer
    /// Offloads asked of the link (`.none` for an ordinary frame).
    public var offload: FrameOffload
    /// With `LinkOffloads.gather`: the rest of the frame, sent after `frame` in the same write
    /// (the TCP data, a slice of the send buffer); nil when `frame` is the whole frame.
    public var payload: ByteBuffer?

    /// Pairs a frame with its offloads (and, gathered, its payload).
    public init(frame: ByteBuffer, offload: FrameOffload = .none, payload: ByteBuffer? = nil) {
        self.frame = frame
        self.offload = offload
        self.payload = payload
    }

    /// The whole frame in one buffer (copying the payload behind the headers when it is separate).
    public var joined: ByteBuffer {
        guard let payload else { return frame }
        var whole = frame
        whole.writeImmutableBuffer(payload)
        return whole
    }
}
