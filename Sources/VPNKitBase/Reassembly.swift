// The bounds of fragment reassembly and the reasons it drops, shared by IPv4 and IPv6.

public import NIOCore

/// Limits of reassembly, for IPv4 (RFC 791 / RFC 815) and IPv6 (RFC 8200 §4.5). Defaults follow
/// Linux where it has one.
public struct ReassemblyConfiguration: Sendable, Hashable {
    /// Datagrams being reassembled at once; a new one beyond this is refused (not evicting others,
    /// so a flood of first fragments cannot cancel a real datagram in progress).
    public var maximumDatagrams = 64
    /// Fragments kept per datagram (bounds the work of a tiny-fragment attack).
    public var maximumFragmentsPerDatagram = 128
    /// Bytes held across all datagrams in progress.
    public var maximumTotalBytes = 4 << 20
    /// The largest reassembled IPv4 payload (65535 − 20); an IPv6 payload is bounded by its 16-bit
    /// length field.
    public var maximumPayloadLength = 65515
    /// A datagram incomplete after this long is dropped.
    public var timeout: TimeAmount = .seconds(30)

    /// Creates a configuration with the default limits shown on each property.
    public init() {}
}

/// Why reassembly dropped a fragment or a datagram.
public enum ReassemblyDrop: String, Sendable, CaseIterable {
    /// Overlaps a fragment already held (the whole datagram is dropped, as Linux does).
    case overlap
    /// Runs past the largest possible datagram.
    case oversized
    /// A non-final fragment whose length is not a multiple of 8, or contradicting lengths.
    case malformed
    /// Too many datagrams in progress, too many fragments, or too many bytes held.
    case limit
    /// The same fragment again (ignored; the datagram goes on).
    case duplicate
    /// The datagram did not complete in time.
    case timeout
}
