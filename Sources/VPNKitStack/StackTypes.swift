// Values of the stack's socket API: a received UDP datagram and the errors of socket calls.

public import NIOCore
public import VPNKitBase

/// A received UDP datagram, as handed to a socket.
public struct UDPMessage: Sendable {
    /// The sender's address.
    public var source: IPAddress
    /// The sender's UDP port.
    public var sourcePort: UInt16
    /// The address the datagram was sent to: an owned address, a broadcast address, or an address
    /// the stack forwards.
    public var destination: IPAddress
    /// The UDP port the datagram was sent to.
    public var destinationPort: UInt16
    /// The data, a slice of the frame it arrived in (or of the reassembled datagram).
    public var payload: ByteBuffer
    /// The stack's time when it arrived.
    public var receivedAt: NIODeadline
    /// The MAC address of the frame's sender.
    public var linkSource: MACAddress

    /// Creates a message from its addresses and ports, its payload, its arrival time and the MAC
    /// address of the frame that carried it.
    public init(
        source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16, payload: ByteBuffer,
        receivedAt: NIODeadline, linkSource: MACAddress
    ) {
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.destinationPort = destinationPort
        self.payload = payload
        self.receivedAt = receivedAt
        self.linkSource = linkSource
    }
}

/// Errors from the stack's socket API.
public enum StackError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The port is taken: a UDP port already bound on that address (nil: on every address) or by an
    /// overlapping wildcard bind, a TCP port that already has a listener (address nil), or, when
    /// connecting, a local port already used toward the same remote address and port.
    case addressInUse(IPAddress?, UInt16)
    /// A socket was bound to, or a datagram or connection sent from, an address the stack does not own.
    case addressNotOwned(IPAddress)
    /// A UDP destination is off the stack's subnet and no default router is configured.
    case noRoute(IPAddress)
    /// The address is of a family the stack does not carry (IPv6: the stack speaks IPv4 only so
    /// far): a bind to it, a datagram or connection to or from it. Counted in
    /// `StackCounter.addressFamilyNotSupported`.
    case addressFamilyNotSupported(IPAddress)
    /// A UDP payload of this many bytes does not fit in one IPv4 datagram (at most 65,507 bytes:
    /// 65,535 less the IPv4 and UDP headers).
    case datagramTooLarge(Int)
    /// An outgoing TCP connection was refused because `maximumTCPConnections` are already open.
    case tooManyConnections

    /// A one-line explanation of the error, naming the address, port or size involved.
    public var description: String {
        switch self {
        case .addressInUse(let address, let port): return "UDP port \(port) on \(address.map(\.description) ?? "all addresses") is already bound"
        case .addressNotOwned(let address): return "\(address) is not an address of this stack"
        case .noRoute(let address): return "no route to \(address): it is not on the stack's subnet"
        case .addressFamilyNotSupported(let address): return "\(address): \(address.family) is not supported by this stack"
        case .datagramTooLarge(let size): return "datagram of \(size) bytes exceeds the IPv4 maximum"
        case .tooManyConnections: return "the TCP connection limit is reached"
        }
    }
}
