public import NIOCore

/// What went wrong in a ``UserspaceStack`` call.
public enum UserspaceStackError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The stack was shut down (or its link ended) before or during the call.
    case shutDown
    /// No DHCP server gave a lease within the time allowed.
    case dhcpTimedOut(after: TimeAmount)
    /// A service of this kind (DHCP client, DHCP server, NAT, metrics export) is already attached;
    /// each can be attached once per stack.
    case alreadyAttached(String)
    /// The operation needs a service that has not been attached (a port can be published only once
    /// the NAT is attached, say).
    case notAttached(String)
    /// The link's event loop is not the one the stack was asked to run on (the two ends of a
    /// ``UserspaceStack/Link/connectedPair(mtu:on:)`` must share their loop).
    case wrongEventLoop

    /// A one-line explanation for logs and error messages.
    public var description: String {
        switch self {
        case .shutDown: return "the stack has shut down"
        case .dhcpTimedOut(let after): return "no DHCP lease within \(Double(after.nanoseconds) / 1e9) s"
        case .alreadyAttached(let what): return "\(what) is already attached to this stack"
        case .notAttached(let what): return "\(what) is not attached to this stack"
        case .wrongEventLoop: return "the link belongs to another event loop"
        }
    }
}
