// Neighbour discovery messages (RFC 4861 §4): router solicitation and advertisement, neighbour
// solicitation and advertisement. Redirects are not parsed: we ignore them.

public import NIOCore
public import VPNKitBase

/// A router advertisement's fields (RFC 4861 §4.2).
public struct NDPRouterAdvertisement: Sendable, Hashable {
    /// The hop limit hosts should use (0: unspecified).
    public var currentHopLimit: UInt8 = 64
    /// M: addresses come from DHCPv6.
    public var managed = false
    /// O: other configuration comes from DHCPv6.
    public var otherConfiguration = false
    /// How long the sender may be a default router, in seconds (0: not a default router).
    public var routerLifetime: UInt16
    /// The reachable time hosts should use, in milliseconds (0: unspecified).
    public var reachableTime: UInt32 = 0
    /// The retransmission timer hosts should use, in milliseconds (0: unspecified).
    public var retransmitTimer: UInt32 = 0
    /// The options: source link-layer address, prefixes, MTU, RDNSS, DNSSL.
    public var options: [NDPOption]

    /// Creates an advertisement.
    public init(routerLifetime: UInt16, options: [NDPOption]) {
        self.routerLifetime = routerLifetime
        self.options = options
    }
}

/// A neighbour advertisement's fields (RFC 4861 §4.4).
public struct NDPNeighborAdvertisement: Sendable, Hashable {
    /// R: the sender is a router.
    public var router: Bool
    /// S: sent in answer to a solicitation.
    public var solicited: Bool
    /// O: the advertisement should override a cached link-layer address.
    public var override: Bool
    /// The address advertised.
    public var target: IPv6Address
    /// The options (usually the target's link-layer address).
    public var options: [NDPOption]

    /// Creates an advertisement.
    public init(router: Bool, solicited: Bool, override: Bool, target: IPv6Address, options: [NDPOption]) {
        self.router = router
        self.solicited = solicited
        self.override = override
        self.target = target
        self.options = options
    }
}

/// A neighbour discovery message.
public enum NDPMessage: Sendable, Hashable {
    /// A router solicitation (type 133).
    case routerSolicitation(options: [NDPOption])
    /// A router advertisement (type 134).
    case routerAdvertisement(NDPRouterAdvertisement)
    /// A neighbour solicitation (type 135) for `target`: address resolution, unreachability
    /// detection, or (from the unspecified address) duplicate address detection.
    case neighborSolicitation(target: IPv6Address, options: [NDPOption])
    /// A neighbour advertisement (type 136).
    case neighborAdvertisement(NDPNeighborAdvertisement)

    /// Parses a validated ICMPv6 message as neighbour discovery, with RFC 4861's checks that do not
    /// need the IP header (code 0, the message long enough, options well formed, a target that is
    /// not multicast). The IP-level checks (hop limit 255, source address rules) are the stack's.
    ///
    /// - Throws: `WireError.unsupported` for a type that is not one of the four or a non-zero code,
    ///   `WireError.truncated` for a short message, and the option errors of `NDPOptions.parse`.
    public init(parsing packet: ICMPv6Packet) throws(WireError) {
        guard packet.code == 0 else { throw .unsupported(field: "neighbor discovery code", value: Int(packet.code)) }
        let bytes = packet.bytes
        switch packet.type {
        case .routerSolicitation:
            self = .routerSolicitation(options: try NDPOptions.parse(bytes.view(from: 8)))
        case .routerAdvertisement:
            guard bytes.count >= 16 else { throw .truncated(needed: 16, available: bytes.count) }
            var advertisement = NDPRouterAdvertisement(routerLifetime: bytes.loadU16(at: 6), options: try NDPOptions.parse(bytes.view(from: 16)))
            advertisement.currentHopLimit = bytes.loadU8(at: 4)
            advertisement.managed = bytes.loadU8(at: 5) & 0x80 != 0
            advertisement.otherConfiguration = bytes.loadU8(at: 5) & 0x40 != 0
            advertisement.reachableTime = bytes.loadU32(at: 8)
            advertisement.retransmitTimer = bytes.loadU32(at: 12)
            self = .routerAdvertisement(advertisement)
        case .neighborSolicitation, .neighborAdvertisement:
            guard bytes.count >= 24 else { throw .truncated(needed: 24, available: bytes.count) }
            let target = bytes.loadIPv6Address(at: 8)
            guard !target.isMulticast else { throw .malformed("neighbor discovery target \(target) is multicast") }
            let options = try NDPOptions.parse(bytes.view(from: 24))
            if packet.type == .neighborSolicitation {
                self = .neighborSolicitation(target: target, options: options)
            } else {
                let flags = bytes.loadU8(at: 4)
                self = .neighborAdvertisement(
                    NDPNeighborAdvertisement(
                        router: flags & 0x80 != 0, solicited: flags & 0x40 != 0, override: flags & 0x20 != 0,
                        target: target, options: options))
            }
        default:
            throw .unsupported(field: "neighbor discovery type", value: Int(packet.type.rawValue))
        }
    }

    /// The ICMPv6 type of the message.
    public var type: ICMPv6Type {
        switch self {
        case .routerSolicitation: return .routerSolicitation
        case .routerAdvertisement: return .routerAdvertisement
        case .neighborSolicitation: return .neighborSolicitation
        case .neighborAdvertisement: return .neighborAdvertisement
        }
    }

    /// The message's options.
    public var options: [NDPOption] {
        switch self {
        case .routerSolicitation(let options), .neighborSolicitation(_, let options): return options
        case .routerAdvertisement(let advertisement): return advertisement.options
        case .neighborAdvertisement(let advertisement): return advertisement.options
        }
    }

    /// The link-layer address in a source (solicitations, RA) or target (NA) link-layer address option.
    public var linkLayerAddress: MACAddress? {
        for option in options {
            switch option {
            case .sourceLinkLayerAddress(let mac), .targetLinkLayerAddress(let mac): return mac
            default: continue
            }
        }
        return nil
    }

    /// Writes the whole ICMPv6 message in front of `buffer`'s readable bytes (normally none), with
    /// its checksum over the pseudo-header of `source` → `destination`.
    public func prepend(to buffer: inout ByteBuffer, source: IPv6Address, destination: IPv6Address) {
        var body: [UInt8] = []
        var word: UInt32 = 0
        switch self {
        case .routerSolicitation:
            break
        case .routerAdvertisement(let ra):
            word = UInt32(ra.currentHopLimit) << 24 | (ra.managed ? 0x80_0000 : 0) | (ra.otherConfiguration ? 0x40_0000 : 0)
                | UInt32(ra.routerLifetime)
            body = Self.bytes(ra.reachableTime) + Self.bytes(ra.retransmitTimer)
        case .neighborSolicitation(let target, _):
            body = target.octets
        case .neighborAdvertisement(let na):
            word = (na.router ? 0x8000_0000 : 0) | (na.solicited ? 0x4000_0000 : 0) | (na.override ? 0x2000_0000 : 0)
            body = na.target.octets
        }
        for option in options { body += option.encoded }
        if !body.isEmpty { buffer.withHeaderWriter(length: body.count) { $0.storeBytes(body, at: 0) } }
        ICMPv6Header(type: type, restOfHeader: word).prepend(to: &buffer, source: source, destination: destination)
    }

    private static func bytes(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }
}
