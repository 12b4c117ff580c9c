// The chain of IPv6 extension headers (RFC 8200 §4) between the fixed header and the upper layer,
// walked once with a bound on how many there are and how many bytes they take.

public import NIOCore
public import VPNKitBase

extension IPProtocol {
    /// Hop-by-hop options (0), only directly after the fixed header.
    public static let ipv6HopByHop = IPProtocol(rawValue: 0)
    /// The routing header (43).
    public static let ipv6Routing = IPProtocol(rawValue: 43)
    /// The fragment header (44).
    public static let ipv6Fragment = IPProtocol(rawValue: 44)
    /// No next header (59): nothing follows.
    public static let ipv6NoNextHeader = IPProtocol(rawValue: 59)
    /// Destination options (60).
    public static let ipv6DestinationOptions = IPProtocol(rawValue: 60)
}

/// The bounds on an extension header chain. Beyond them a packet is dropped unread: a guest could
/// otherwise make each packet cost a walk of thousands of tiny headers.
public struct IPv6ExtensionLimits: Sendable, Hashable {
    /// Extension headers in one packet; 8 by default (a real packet carries two or three).
    public var maximumHeaders = 8
    /// Bytes of extension headers in one packet; 1,024 by default.
    public var maximumBytes = 1024
    /// Options inside one hop-by-hop or destination options header; 16 by default.
    public var maximumOptions = 16

    /// The defaults.
    public init() {}
}

/// The fragment header (RFC 8200 §4.5).
public struct IPv6FragmentHeader: Sendable, Hashable {
    /// The type of the first header of the fragmentable part.
    public var nextHeader: IPProtocol
    /// Where this fragment's data starts in the original payload, in bytes (a multiple of 8).
    public var offset: Int
    /// Set on every fragment but the last.
    public var moreFragments: Bool
    /// The identification shared by the fragments of one packet.
    public var identification: UInt32

    /// Creates a fragment header.
    public init(nextHeader: IPProtocol, offset: Int, moreFragments: Bool, identification: UInt32) {
        self.nextHeader = nextHeader
        self.offset = offset
        self.moreFragments = moreFragments
        self.identification = identification
    }

    /// An atomic fragment (RFC 6946): offset 0 and no more fragments, a whole packet that is
    /// processed as such, never reassembled.
    public var isAtomic: Bool { offset == 0 && !moreFragments }

    /// Writes the 8-byte header in front of `buffer`'s readable bytes.
    public func prepend(to buffer: inout ByteBuffer) {
        buffer.withHeaderWriter(length: 8) { header in
            header.storeU8(nextHeader.rawValue, at: 0)
            header.storeU16(UInt16(truncatingIfNeeded: offset) & 0xFFF8 | (moreFragments ? 1 : 0), at: 2)
            header.storeU32(identification, at: 4)
        }
    }
}

/// What the walk of a packet's extension headers found.
public struct IPv6HeaderChain: Sendable, Hashable {
    /// The upper-layer protocol (ICMPv6, UDP, TCP, `ipv6NoNextHeader`, or one we do not know),
    /// or for a fragment that is not atomic, the first header of the fragmentable part.
    public var upperLayer: IPProtocol
    /// Where the upper-layer header starts, counted from the start of the packet (the fixed header's
    /// first byte), as ICMPv6 parameter problem pointers count.
    public var upperLayerOffset: Int
    /// Where the next-header field that named `upperLayer` sits, counted from the start of the
    /// packet: the pointer of a parameter problem for an unknown upper layer (code 1).
    public var nextHeaderFieldOffset: Int
    /// The fragment header, when the packet has one.
    public var fragment: IPv6FragmentHeader?
    /// Where the fragment header starts, counted from the start of the packet (nil without one):
    /// the headers before it are the unfragmentable part.
    public var fragmentHeaderOffset: Int?
    /// Where the next-header field that names the fragment header sits (6, in the fixed header,
    /// unless other headers come first); reassembly writes the fragmentable part's type there.
    public var fragmentNextHeaderFieldOffset: Int?
    /// How many extension headers were walked.
    public var headerCount: Int
    /// Whether a hop-by-hop header carried a router alert option (RFC 2711; MLD's reports do).
    public var routerAlert: Bool
}

/// Why a packet's extension headers stop it.
public enum IPv6HeaderChainError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A header runs past the packet, or an option past its header.
    case malformed(WireError)
    /// More headers, bytes or options than `IPv6ExtensionLimits` allows: dropped silently.
    case limitExceeded(String)
    /// RFC 8200 asks for an ICMPv6 parameter problem with this code (0 erroneous header field,
    /// 1 unrecognized next header, 2 unrecognized option) and pointer (an offset from the start of
    /// the packet). `unlessMulticast`: the option's action says not to answer a packet sent to a
    /// multicast address (§4.2, action 11).
    case parameterProblem(code: UInt8, pointer: Int, unlessMulticast: Bool)
    /// An unrecognized option whose action is to drop the packet silently (§4.2, action 01).
    case discard(optionType: UInt8)

    /// A one-line explanation.
    public var description: String {
        switch self {
        case .malformed(let error): return "extension headers: \(error)"
        case .limitExceeded(let what): return "extension headers: \(what)"
        case .parameterProblem(let code, let pointer, _): return "extension headers: parameter problem code \(code) at byte \(pointer)"
        case .discard(let type): return "extension headers: unrecognized option \(type) says discard"
        }
    }
}

extension IPv6Packet {
    /// Walks the extension headers from the fixed header to the upper layer (RFC 8200 §4):
    /// hop-by-hop options only first, options checked against their action bits, a routing header
    /// with segments left refused (we are the final destination and route nothing), and the walk
    /// stopping at a fragment header unless it is atomic (the rest is the fragmentable part,
    /// walked again after reassembly).
    public func headerChain(limits: IPv6ExtensionLimits = IPv6ExtensionLimits()) throws(IPv6HeaderChainError) -> IPv6HeaderChain {
        let end = 40 + payloadLength
        var next = nextHeader
        var nextField = 6
        var offset = 40
        var count = 0
        var fragment: IPv6FragmentHeader?
        var fragmentOffset: Int?
        var fragmentField: Int?
        var routerAlert = false
        while true {
            switch next {
            case .ipv6HopByHop, .ipv6Routing, .ipv6DestinationOptions, .ipv6Fragment:
                break
            default:
                return IPv6HeaderChain(
                    upperLayer: next, upperLayerOffset: offset, nextHeaderFieldOffset: nextField, fragment: fragment,
                    fragmentHeaderOffset: fragmentOffset, fragmentNextHeaderFieldOffset: fragmentField, headerCount: count,
                    routerAlert: routerAlert)
            }
            if next == .ipv6HopByHop && offset != 40 {
                throw .parameterProblem(code: 1, pointer: nextField, unlessMulticast: false)
            }
            count += 1
            guard count <= limits.maximumHeaders else { throw .limitExceeded("more than \(limits.maximumHeaders) headers") }
            guard offset + 8 <= end else {
                throw .malformed(.truncated(needed: offset + 8 - 40, available: end - 40))
            }
            let length = next == .ipv6Fragment ? 8 : (Int(bytes.loadU8(at: offset + 1)) + 1) * 8
            guard offset + length <= end else {
                throw .malformed(.lengthExceedsBuffer(field: "extension header length", value: length, available: end - offset))
            }
            guard offset + length - 40 <= limits.maximumBytes else {
                throw .limitExceeded("more than \(limits.maximumBytes) bytes of headers")
            }
            let header = bytes.view(from: offset, length: length)
            switch next {
            case .ipv6HopByHop, .ipv6DestinationOptions:
                let alert = try Self.checkOptions(header, at: offset, limits: limits)
                if alert && next == .ipv6HopByHop { routerAlert = true }
            case .ipv6Routing:
                // Segments left > 0 would make us a router for the next address; we are not one.
                if header.loadU8(at: 3) != 0 { throw .parameterProblem(code: 0, pointer: offset + 2, unlessMulticast: false) }
            default:
                let field = header.loadU16(at: 2)
                let parsed = IPv6FragmentHeader(
                    nextHeader: IPProtocol(rawValue: header.loadU8(at: 0)), offset: Int(field & 0xFFF8),
                    moreFragments: field & 1 != 0, identification: header.loadU32(at: 4))
                fragment = parsed
                fragmentOffset = offset
                fragmentField = nextField
                if !parsed.isAtomic {
                    return IPv6HeaderChain(
                        upperLayer: parsed.nextHeader, upperLayerOffset: offset + 8, nextHeaderFieldOffset: offset,
                        fragment: parsed, fragmentHeaderOffset: offset, fragmentNextHeaderFieldOffset: nextField,
                        headerCount: count, routerAlert: routerAlert)
                }
            }
            next = IPProtocol(rawValue: header.loadU8(at: 0))
            nextField = offset
            offset += length
        }
    }

    /// Checks the TLV options of a hop-by-hop or destination options header (RFC 8200 §4.2) that
    /// starts at `start` in the packet; returns whether one was a router alert.
    private static func checkOptions(_ header: ByteView, at start: Int, limits: IPv6ExtensionLimits) throws(IPv6HeaderChainError) -> Bool {
        var index = 2
        var options = 0
        var routerAlert = false
        while index < header.count {
            let type = header.loadU8(at: index)
            if type == 0 {  // Pad1
                index += 1
                continue
            }
            options += 1
            guard options <= limits.maximumOptions else { throw .limitExceeded("more than \(limits.maximumOptions) options") }
            guard index + 2 <= header.count else { throw .malformed(.malformedOption(kind: Int(type), reason: "no length byte")) }
            let length = Int(header.loadU8(at: index + 1))
            guard index + 2 + length <= header.count else {
                throw .malformed(.malformedOption(kind: Int(type), reason: "length \(length) runs past its header"))
            }
            switch type {
            case 1:  // PadN
                break
            case 5:  // Router alert (RFC 2711): two bytes of value.
                guard length == 2 else { throw .parameterProblem(code: 0, pointer: start + index + 1, unlessMulticast: false) }
                routerAlert = true
            default:
                switch type >> 6 {
                case 0: break
                case 1: throw .discard(optionType: type)
                case 2: throw .parameterProblem(code: 2, pointer: start + index, unlessMulticast: false)
                default: throw .parameterProblem(code: 2, pointer: start + index, unlessMulticast: true)
                }
            }
            index += 2 + length
        }
        return routerAlert
    }
}
