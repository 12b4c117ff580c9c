// The `--publish` text form with port ranges: `tcp:8000-8010:8000-8010` is eleven published ports.

import VPNKitBase

/// Why a `--publish` text could not be parsed.
public enum PublishedPortParseError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Not `tcp|udp:[HOSTIP:]HOSTPORTS:GUESTPORTS` at all.
    case malformed(String)
    /// The protocol is neither `tcp` nor `udp`.
    case unknownProtocol(String)
    /// HOSTIP is neither a dotted quad nor an IPv6 address in brackets.
    case badHostAddress(String)
    /// A port is not a number from 1 to 65535.
    case badPort(String)
    /// A range whose end is below its start (`8010-8000`).
    case reversedRange(String)
    /// The host and guest ranges hold different numbers of ports.
    case rangeLengthsDiffer(host: Int, guest: Int)
    /// A range longer than `PublishedPort.maximumRangeLength`.
    case rangeTooLong(Int)

    /// A sentence naming what is wrong.
    public var description: String {
        switch self {
        case .malformed(let text): return "expected tcp|udp:[HOSTIP:]HOSTPORT[-END]:GUESTPORT[-END], got \(text)"
        case .unknownProtocol(let text): return "unknown protocol \(text) (tcp or udp)"
        case .badHostAddress(let text): return "bad host address \(text) (a dotted quad, or an IPv6 address in brackets)"
        case .badPort(let text): return "bad port \(text) (1 to 65535)"
        case .reversedRange(let text): return "reversed port range \(text) (the start must not be above the end)"
        case .rangeLengthsDiffer(let host, let guest): return "the host range has \(host) ports and the guest range \(guest): they must be the same length"
        case .rangeTooLong(let length): return "a range of \(length) ports is longer than \(PublishedPort.maximumRangeLength)"
        }
    }
}

extension PublishedPort {
    /// The most ports one range may publish.
    public static let maximumRangeLength = 1024

    /// Parses `tcp|udp:[HOSTIP:]HOSTPORTS:GUESTPORTS`, where each of HOSTPORTS and GUESTPORTS is a
    /// port or a range `START-END` (inclusive), the two of the same length, and HOSTIP is as in
    /// `init(_:)`: a dotted quad or an IPv6 address in brackets. Answers one published port per
    /// pair, in order: `tcp:8000-8002:9000-9002` is 8000→9000, 8001→9001, 8002→9002.
    /// - Throws: `PublishedPortParseError` naming what is wrong.
    public static func parseRange(_ text: String) throws(PublishedPortParseError) -> [PublishedPort] {
        guard let colon = text.firstIndex(of: ":") else { throw .malformed(text) }
        guard let transport = Transport(rawValue: text[..<colon].lowercased()) else { throw .unknownProtocol(String(text[..<colon])) }
        var rest = text[text.index(after: colon)...]
        var host: IPAddress?
        if rest.first == "[" {
            guard let close = rest.firstIndex(of: "]") else { throw .badHostAddress(String(rest)) }
            let inside = rest[rest.index(after: rest.startIndex)..<close]
            guard let address = IPv6Address(inside) else { throw .badHostAddress(String(inside)) }
            host = .v6(address)
            rest = rest[rest.index(after: close)...]
            guard rest.first == ":" else { throw .malformed(text) }
            rest = rest.dropFirst()
        }
        var parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        if host == nil, parts.count == 3 {
            guard let address = IPv4Address(parts[0]) else { throw .badHostAddress(String(parts[0])) }
            host = .v4(address)
            parts.removeFirst()
        }
        guard parts.count == 2 else { throw .malformed(text) }
        let hostPorts = try portRange(parts[0])
        let guestPorts = try portRange(parts[1])
        guard hostPorts.count == guestPorts.count else { throw .rangeLengthsDiffer(host: hostPorts.count, guest: guestPorts.count) }
        guard hostPorts.count <= maximumRangeLength else { throw .rangeTooLong(hostPorts.count) }
        return zip(hostPorts, guestPorts).map { PublishedPort(transport: transport, hostAddress: host, hostPort: $0, guestPort: $1) }
    }

    /// `PORT` or `START-END`, each 1 to 65535, START not above END.
    private static func portRange(_ text: Substring) throws(PublishedPortParseError) -> ClosedRange<UInt16> {
        let bounds = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        var ports: [UInt16] = []
        for bound in bounds {
            guard bound.allSatisfy(\.isASCIIDigit), let port = UInt16(bound), port != 0 else { throw .badPort(String(bound)) }
            ports.append(port)
        }
        guard let first = ports.first, let last = ports.last else { throw .badPort(String(text)) }
        guard first <= last else { throw .reversedRange(String(text)) }
        return first...last
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
