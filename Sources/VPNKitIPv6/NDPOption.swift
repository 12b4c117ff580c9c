// Neighbour discovery options (RFC 4861 §4.6, RFC 8106): type, length in units of 8 bytes, data.

public import VPNKitBase

/// A prefix information option (RFC 4861 §4.6.2): a prefix on the link, and whether hosts may form
/// addresses in it by SLAAC.
public struct NDPPrefixInformation: Sendable, Hashable {
    /// The prefix; bits past `prefixLength` are zero when we send it.
    public var prefix: IPv6Address
    /// The prefix length in bits (64 for SLAAC).
    public var prefixLength: UInt8
    /// L: the prefix is on the link.
    public var onLink: Bool
    /// A: hosts may configure addresses in the prefix (SLAAC).
    public var autonomous: Bool
    /// How long the prefix stays valid, in seconds (0xFFFFFFFF: forever).
    public var validLifetime: UInt32
    /// How long addresses in it stay preferred, in seconds.
    public var preferredLifetime: UInt32

    /// Creates a prefix information option.
    public init(prefix: IPv6Address, prefixLength: UInt8, onLink: Bool, autonomous: Bool, validLifetime: UInt32, preferredLifetime: UInt32) {
        self.prefix = prefix
        self.prefixLength = prefixLength
        self.onLink = onLink
        self.autonomous = autonomous
        self.validLifetime = validLifetime
        self.preferredLifetime = preferredLifetime
    }
}

/// One neighbour discovery option.
public enum NDPOption: Sendable, Hashable {
    /// The sender's link-layer address (type 1).
    case sourceLinkLayerAddress(MACAddress)
    /// The target's link-layer address (type 2).
    case targetLinkLayerAddress(MACAddress)
    /// A prefix on the link (type 3).
    case prefixInformation(NDPPrefixInformation)
    /// The link MTU (type 5).
    case mtu(UInt32)
    /// Recursive DNS servers (type 25, RFC 8106) and how long they may be used, in seconds.
    case recursiveDNSServers(lifetime: UInt32, servers: [IPv6Address])
    /// The DNS search list (type 31, RFC 8106), names in dotted text, and its lifetime in seconds.
    case dnsSearchList(lifetime: UInt32, domains: [String])
    /// Any other option (the nonce of RFC 3971 that Linux puts in DAD probes, a redirected header),
    /// kept with its data (the bytes after type and length).
    case other(type: UInt8, data: [UInt8])

    /// The option's type number.
    public var type: UInt8 {
        switch self {
        case .sourceLinkLayerAddress: return 1
        case .targetLinkLayerAddress: return 2
        case .prefixInformation: return 3
        case .mtu: return 5
        case .recursiveDNSServers: return 25
        case .dnsSearchList: return 31
        case .other(let type, _): return type
        }
    }

    /// The option's bytes on the wire, type and length included, padded to a multiple of 8. What
    /// cannot be written validly is left out: an RDNSS option without servers (empty bytes), servers
    /// past the 127th, search names past the option's 2,040-byte limit, other data past it. A DNS
    /// search list is at least 16 bytes (RFC 8106 §5.2), even with no names: the parser's minimum.
    public var encoded: [UInt8] {
        var data: [UInt8] = []
        func append32(_ value: UInt32) { data += [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
        switch self {
        case .sourceLinkLayerAddress(let mac), .targetLinkLayerAddress(let mac):
            data = mac.bytes
        case .prefixInformation(let info):
            data = [info.prefixLength, (info.onLink ? 0x80 : 0) | (info.autonomous ? 0x40 : 0)]
            append32(info.validLifetime)
            append32(info.preferredLifetime)
            append32(0)
            data += info.prefix.octets
        case .mtu(let mtu):
            data = [0, 0]
            append32(mtu)
        case .recursiveDNSServers(let lifetime, let servers):
            // No servers is no option (RFC 8106 requires at least one); at most 127 fit the
            // 8-bit length.
            guard !servers.isEmpty else { return [] }
            data = [0, 0]
            append32(lifetime)
            for server in servers.prefix(127) { data += server.octets }
        case .dnsSearchList(let lifetime, let domains):
            data = [0, 0]
            append32(lifetime)
            // Names that would take the option past its largest size (255 × 8 bytes) are left out.
            for domain in domains {
                let name = NDPOption.encodeName(domain)
                guard data.count + name.count + 2 <= Self.maximumLength else { break }
                data += name
            }
        case .other(_, let bytes):
            data = Array(bytes.prefix(Self.maximumLength - 2))
        }
        var total = (data.count + 2 + 7) / 8 * 8
        if case .dnsSearchList = self { total = max(total, 16) }
        return [type, UInt8(truncatingIfNeeded: total / 8)] + data + [UInt8](repeating: 0, count: total - 2 - data.count)
    }

    /// The largest option there is: its length byte counts units of 8 bytes.
    static let maximumLength = 255 * 8

    /// A name in DNS label form without compression (RFC 8106 §5.2): each label's length then its
    /// bytes, ending with the root's zero. Labels longer than 63 bytes are cut to 63.
    static func encodeName(_ name: String) -> [UInt8] {
        var bytes: [UInt8] = []
        for label in name.split(separator: ".") {
            let utf8 = Array(label.utf8.prefix(63))
            bytes.append(UInt8(utf8.count))
            bytes += utf8
        }
        bytes.append(0)
        return bytes
    }
}

/// Parsing of a message's options.
public enum NDPOptions {
    /// The most options one message may carry before it is taken as an attack and dropped.
    public static let maximumCount = 64

    /// Parses the options in `bytes` (the rest of a neighbour discovery message). RFC 4861 §4.6: an
    /// option of length 0 makes the whole message invalid.
    ///
    /// - Throws: `WireError.malformedOption` for a zero length, an option running past the message,
    ///   or a known option whose length is wrong for it; `WireError.malformed` beyond `maximumCount`.
    public static func parse(_ bytes: ByteView) throws(WireError) -> [NDPOption] {
        var options: [NDPOption] = []
        var index = 0
        while index < bytes.count {
            guard index + 2 <= bytes.count else { throw .malformedOption(kind: Int(bytes.loadU8(at: index)), reason: "no length byte") }
            let type = bytes.loadU8(at: index)
            let length = Int(bytes.loadU8(at: index + 1)) * 8
            guard length > 0 else { throw .malformedOption(kind: Int(type), reason: "length 0") }
            guard index + length <= bytes.count else {
                throw .malformedOption(kind: Int(type), reason: "length \(length) runs past the message")
            }
            guard options.count < maximumCount else { throw .malformed("more than \(maximumCount) options") }
            options.append(try option(type: type, bytes.view(from: index, length: length)))
            index += length
        }
        return options
    }

    private static func option(type: UInt8, _ bytes: ByteView) throws(WireError) -> NDPOption {
        let length = bytes.count
        switch type {
        case 1, 2:
            // Ethernet: 6 bytes of address in an 8-byte option. Other link types do not reach us.
            guard length == 8 else { throw .malformedOption(kind: Int(type), reason: "link-layer address option of \(length) bytes") }
            let mac = MACAddress(rawValue: bytes.loadU48(at: 2))
            return type == 1 ? .sourceLinkLayerAddress(mac) : .targetLinkLayerAddress(mac)
        case 3:
            guard length == 32 else { throw .malformedOption(kind: 3, reason: "prefix information of \(length) bytes") }
            let flags = bytes.loadU8(at: 3)
            return .prefixInformation(
                NDPPrefixInformation(
                    prefix: bytes.loadIPv6Address(at: 16), prefixLength: bytes.loadU8(at: 2), onLink: flags & 0x80 != 0,
                    autonomous: flags & 0x40 != 0, validLifetime: bytes.loadU32(at: 4), preferredLifetime: bytes.loadU32(at: 8)))
        case 5:
            guard length == 8 else { throw .malformedOption(kind: 5, reason: "MTU option of \(length) bytes") }
            return .mtu(bytes.loadU32(at: 4))
        case 25:
            guard length >= 24, (length - 8) % 16 == 0 else { throw .malformedOption(kind: 25, reason: "RDNSS option of \(length) bytes") }
            let servers = stride(from: 8, to: length, by: 16).map { bytes.loadIPv6Address(at: $0) }
            return .recursiveDNSServers(lifetime: bytes.loadU32(at: 4), servers: servers)
        case 31:
            guard length >= 16 else { throw .malformedOption(kind: 31, reason: "DNSSL option of \(length) bytes") }
            return .dnsSearchList(lifetime: bytes.loadU32(at: 4), domains: try names(bytes.view(from: 8)))
        default:
            return .other(type: type, data: bytes.view(from: 2).array)
        }
    }

    /// The names of a DNSSL option: uncompressed label sequences, each ending with a zero byte; the
    /// zero bytes after the last one are padding.
    private static func names(_ bytes: ByteView) throws(WireError) -> [String] {
        var names: [String] = []
        var labels: [String] = []
        var index = 0
        while index < bytes.count {
            let length = Int(bytes.loadU8(at: index))
            if length == 0 {
                if labels.isEmpty { break }  // padding
                names.append(labels.joined(separator: "."))
                labels = []
                index += 1
                continue
            }
            guard length <= 63 else { throw .malformedOption(kind: 31, reason: "label of \(length) bytes (compression is not allowed)") }
            guard index + 1 + length <= bytes.count else { throw .malformedOption(kind: 31, reason: "label runs past the option") }
            labels.append(String(decoding: bytes.view(from: index + 1, length: length).array, as: UTF8.self))
            index += 1 + length
        }
        guard labels.isEmpty else { throw .malformedOption(kind: 31, reason: "a name without its terminating zero") }
        return names
    }
}
