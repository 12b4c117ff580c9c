// The identity of a publication and what `NAT.forwards` lists.


/// The identity of one publication (`NAT.publishWithID(_:guestAddresses:)`): the handle for
/// `NAT.unpublish(_:)`. Ids count up from 1 and are not reused while the NAT lives. Its text form is
/// the decimal number.
public struct PublishedPortID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    /// The number.
    public var rawValue: UInt64

    /// Wraps a number.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Parses the decimal text form; nil for anything else.
    public init?(_ description: String) {
        guard let value = UInt64(description) else { return nil }
        self.init(rawValue: value)
    }

    /// The decimal number.
    public var description: String { String(rawValue) }

    /// Orders by number (the order the publications were made in).
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One publication: its id, the port as asked for, and its host listeners.
public struct PublishedForward: Sendable, Hashable {
    /// The handle for `NAT.unpublish(_:)`.
    public var id: PublishedPortID
    /// The port as it was asked for: without a host address when both loopbacks were meant, and
    /// with host port 0 when the kernel was to choose.
    public var port: PublishedPort
    /// One entry per host listener, with the address and port it is bound to (127.0.0.1 and ::1 for
    /// a port published without a host address, ::1 missing on a host without IPv6).
    public var listeners: [PublishedPort]

    /// Creates the entry.
    public init(id: PublishedPortID, port: PublishedPort, listeners: [PublishedPort]) {
        self.id = id
        self.port = port
        self.listeners = listeners
    }
}

/// Why a publication could not be changed.
public enum PublishedPortError: Error, Hashable, Sendable, CustomStringConvertible {
    /// No publication has this id: it was never made, or was already unpublished.
    case unknownID(PublishedPortID)

    /// A sentence for logs and API answers.
    public var description: String {
        switch self {
        case .unknownID(let id): return "no published port has id \(id)"
        }
    }
}
