// DHCPv6 messages between clients and servers (RFC 8415 §8): a type, a 24-bit transaction id and
// options as type-length-value; relay messages (§9) are a different shape and are refused here.

public import NIOCore
public import VPNKitBase

/// The UDP ports and multicast group of DHCPv6 (RFC 8415 §7.1, §7.2).
public enum DHCPv6 {
    /// Clients listen on UDP port 546.
    public static let clientPort: UInt16 = 546
    /// Servers and relay agents listen on UDP port 547.
    public static let serverPort: UInt16 = 547
    /// All_DHCP_Relay_Agents_and_Servers, ff02::1:2: where a client on the link sends.
    public static let allRelayAgentsAndServers = IPv6Address(high: 0xFF02_0000_0000_0000, low: 0x0000_0000_0001_0002)
}

/// A DHCPv6 message type (RFC 8415 §7.3).
public struct DHCPv6MessageType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The type byte.
    public var rawValue: UInt8
    /// A type from its byte.
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// SOLICIT (1): a client looks for servers that assign addresses.
    public static let solicit = DHCPv6MessageType(rawValue: 1)
    /// ADVERTISE (2): a server's answer to SOLICIT.
    public static let advertise = DHCPv6MessageType(rawValue: 2)
    /// REQUEST (3): a client asks for addresses.
    public static let request = DHCPv6MessageType(rawValue: 3)
    /// CONFIRM (4).
    public static let confirm = DHCPv6MessageType(rawValue: 4)
    /// RENEW (5).
    public static let renew = DHCPv6MessageType(rawValue: 5)
    /// REBIND (6).
    public static let rebind = DHCPv6MessageType(rawValue: 6)
    /// REPLY (7): a server's answer to everything but SOLICIT.
    public static let reply = DHCPv6MessageType(rawValue: 7)
    /// RELEASE (8).
    public static let release = DHCPv6MessageType(rawValue: 8)
    /// DECLINE (9).
    public static let decline = DHCPv6MessageType(rawValue: 9)
    /// RECONFIGURE (10).
    public static let reconfigure = DHCPv6MessageType(rawValue: 10)
    /// INFORMATION-REQUEST (11): a client asks for configuration without addresses (stateless DHCPv6).
    public static let informationRequest = DHCPv6MessageType(rawValue: 11)
    /// RELAY-FORW (12).
    public static let relayForward = DHCPv6MessageType(rawValue: 12)
    /// RELAY-REPL (13).
    public static let relayReply = DHCPv6MessageType(rawValue: 13)

    /// The RFC's name (`INFORMATION-REQUEST`), or `TYPE n`.
    public var description: String {
        let names = [
            "SOLICIT", "ADVERTISE", "REQUEST", "CONFIRM", "RENEW", "REBIND", "REPLY", "RELEASE", "DECLINE", "RECONFIGURE",
            "INFORMATION-REQUEST", "RELAY-FORW", "RELAY-REPL",
        ]
        return (1...13).contains(rawValue) ? names[Int(rawValue) - 1] : "TYPE \(rawValue)"
    }
}

/// A DHCPv6 option code (RFC 8415 §21, RFC 3646).
public struct DHCPv6OptionCode: RawRepresentable, Sendable, Hashable {
    /// The code.
    public var rawValue: UInt16
    /// A code from its number.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// OPTION_CLIENTID (1): the client's DUID.
    public static let clientIdentifier = DHCPv6OptionCode(rawValue: 1)
    /// OPTION_SERVERID (2): the server's DUID.
    public static let serverIdentifier = DHCPv6OptionCode(rawValue: 2)
    /// OPTION_IA_NA (3): non-temporary addresses.
    public static let identityAssociationNonTemporary = DHCPv6OptionCode(rawValue: 3)
    /// OPTION_IA_TA (4): temporary addresses.
    public static let identityAssociationTemporary = DHCPv6OptionCode(rawValue: 4)
    /// OPTION_ORO (6): the options the client asks for, 16-bit codes.
    public static let optionRequest = DHCPv6OptionCode(rawValue: 6)
    /// OPTION_ELAPSED_TIME (8).
    public static let elapsedTime = DHCPv6OptionCode(rawValue: 8)
    /// OPTION_STATUS_CODE (13).
    public static let statusCode = DHCPv6OptionCode(rawValue: 13)
    /// OPTION_DNS_SERVERS (23, RFC 3646): recursive DNS servers, 16 bytes each.
    public static let dnsServers = DHCPv6OptionCode(rawValue: 23)
    /// OPTION_DOMAIN_LIST (24, RFC 3646): the search list, uncompressed DNS names.
    public static let domainList = DHCPv6OptionCode(rawValue: 24)
    /// OPTION_IA_PD (25): delegated prefixes.
    public static let identityAssociationPrefixDelegation = DHCPv6OptionCode(rawValue: 25)
    /// OPTION_INFORMATION_REFRESH_TIME (32): seconds until a stateless client asks again.
    public static let informationRefreshTime = DHCPv6OptionCode(rawValue: 32)
}

/// One option: its code and its data, verbatim.
public struct DHCPv6Option: Sendable, Hashable {
    /// The option code.
    public var code: DHCPv6OptionCode
    /// The option data (at most 65535 bytes).
    public var data: [UInt8]

    /// An option with `code` and `data`.
    public init(code: DHCPv6OptionCode, data: [UInt8]) {
        self.code = code
        self.data = data
    }
}

/// Why bytes are not a client/server DHCPv6 message we accept.
public enum DHCPv6Error: Error, Sendable, Hashable {
    /// Fewer than the 4 bytes of type and transaction id.
    case tooShort(Int)
    /// Longer than the largest message accepted.
    case tooLong(Int)
    /// A relay message (RELAY-FORW, RELAY-REPL): not from a client on the link.
    case relayMessage
    /// An option header or its data runs past the end of the message.
    case truncatedOption(code: UInt16, declared: Int, available: Int)
    /// More options than accepted.
    case tooManyOptions(Int)
    /// An option that must appear at most once appears again (a client or server identifier).
    case duplicateOption(UInt16)
    /// An option whose data has an impossible length (an identifier of 0 or over 130 bytes, an odd ORO).
    case badOptionLength(code: UInt16, length: Int)
}

/// A client/server DHCPv6 message (RFC 8415 §8): parsed with bounds, written back byte for byte.
public struct DHCPv6Message: Sendable, Hashable {
    /// The largest message parsed, in bytes.
    public static let maximumSize = 1500
    /// The most options parsed in one message.
    public static let maximumOptions = 64

    /// msg-type.
    public var type: DHCPv6MessageType
    /// transaction-id: the low 24 bits are used.
    public var transactionID: UInt32
    /// The options in order (the data of nested ones, such as an IA's, kept unparsed).
    public var options: [DHCPv6Option]

    /// A message of `type` with `transactionID` (its low 24 bits) and `options`.
    public init(type: DHCPv6MessageType, transactionID: UInt32, options: [DHCPv6Option] = []) {
        self.type = type
        self.transactionID = transactionID & 0xFF_FFFF
        self.options = options
    }

    /// Parses `bytes`. Throws `DHCPv6Error` for anything malformed, never traps: a relay message,
    /// a message shorter than 4 or longer than `maximumSize` bytes, an option running past the end,
    /// more than `maximumOptions` options, a repeated or empty client or server identifier (at most
    /// 130 bytes: a 2-byte DUID type and up to 128 bytes, RFC 8415 §11.1), an option request
    /// option of odd length.
    public init(parsing bytes: [UInt8]) throws(DHCPv6Error) {
        guard bytes.count >= 4 else { throw .tooShort(bytes.count) }
        guard bytes.count <= Self.maximumSize else { throw .tooLong(bytes.count) }
        let type = DHCPv6MessageType(rawValue: bytes[0])
        guard type != .relayForward, type != .relayReply else { throw .relayMessage }
        self.type = type
        self.transactionID = UInt32(bytes[1]) << 16 | UInt32(bytes[2]) << 8 | UInt32(bytes[3])
        var options: [DHCPv6Option] = []
        var seen: Set<UInt16> = []
        var index = 4
        while index < bytes.count {
            guard options.count < Self.maximumOptions else { throw .tooManyOptions(options.count + 1) }
            guard index + 4 <= bytes.count else {
                let code = index + 2 <= bytes.count ? UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]) : 0
                throw .truncatedOption(code: code, declared: 4, available: bytes.count - index)
            }
            let code = UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
            let length = Int(bytes[index + 2]) << 8 | Int(bytes[index + 3])
            guard length <= bytes.count - index - 4 else {
                throw .truncatedOption(code: code, declared: length, available: bytes.count - index - 4)
            }
            let option = DHCPv6OptionCode(rawValue: code)
            if option == .clientIdentifier || option == .serverIdentifier {
                guard seen.insert(code).inserted else { throw .duplicateOption(code) }
                guard (3...130).contains(length) else { throw .badOptionLength(code: code, length: length) }
            }
            if option == .optionRequest, length % 2 != 0 { throw .badOptionLength(code: code, length: length) }
            options.append(DHCPv6Option(code: option, data: Array(bytes[(index + 4)..<(index + 4 + length)])))
            index += 4 + length
        }
        self.options = options
    }

    /// Parses the readable bytes of `buffer` (see `init(parsing:)` for the bytes form).
    public init(parsing buffer: ByteBuffer) throws(DHCPv6Error) {
        guard buffer.readableBytes <= Self.maximumSize else { throw .tooLong(buffer.readableBytes) }
        try self.init(parsing: buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? [])
    }

    /// The data of the first option with `code`, if any.
    public func option(_ code: DHCPv6OptionCode) -> [UInt8]? {
        options.first { $0.code == code }?.data
    }

    /// Whether an option with `code` is present.
    public func has(_ code: DHCPv6OptionCode) -> Bool { options.contains { $0.code == code } }

    /// The option codes of the option request option (empty without one).
    public var requestedOptions: [DHCPv6OptionCode] {
        guard let data = option(.optionRequest) else { return [] }
        return stride(from: 0, to: data.count - 1, by: 2).map { DHCPv6OptionCode(rawValue: UInt16(data[$0]) << 8 | UInt16(data[$0 + 1])) }
    }

    /// The wire form. Options longer than 65535 bytes cannot be written and are left out.
    public var encoded: [UInt8] {
        var bytes: [UInt8] = [type.rawValue, UInt8(truncatingIfNeeded: transactionID >> 16), UInt8(truncatingIfNeeded: transactionID >> 8),
            UInt8(truncatingIfNeeded: transactionID)]
        for option in options where option.data.count <= 0xFFFF {
            bytes += [UInt8(option.code.rawValue >> 8), UInt8(option.code.rawValue & 0xFF), UInt8(option.data.count >> 8), UInt8(option.data.count & 0xFF)]
            bytes += option.data
        }
        return bytes
    }
}

extension DHCPv6Option {
    /// A DUID-LL (RFC 8415 §11.4: type 3, hardware type 1, Ethernet) of `mac`, as the data of a
    /// server or client identifier.
    public static func linkLayerDUID(_ mac: MACAddress) -> [UInt8] {
        [0, 3, 0, 1] + mac.bytes
    }

    /// OPTION_DNS_SERVERS with `servers`.
    public static func dnsServers(_ servers: [IPv6Address]) -> DHCPv6Option {
        DHCPv6Option(code: .dnsServers, data: servers.flatMap(\.octets))
    }

    /// OPTION_DOMAIN_LIST with `domains`, each an uncompressed DNS name (RFC 8415 §10); nil when a
    /// name is empty, has an empty label, a label over 63 bytes, or is over 255 bytes.
    public static func domainList(_ domains: [String]) -> DHCPv6Option? {
        var data: [UInt8] = []
        for domain in domains {
            let text = domain.hasSuffix(".") ? String(domain.dropLast()) : domain
            let labels = text.split(separator: ".", omittingEmptySubsequences: false)
            guard !text.isEmpty, labels.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 63 }) else { return nil }
            var name: [UInt8] = []
            for label in labels {
                name.append(UInt8(label.utf8.count))
                name += Array(label.utf8)
            }
            name.append(0)
            guard name.count <= 255 else { return nil }
            data += name
        }
        return DHCPv6Option(code: .domainList, data: data)
    }

    /// OPTION_INFORMATION_REFRESH_TIME of `seconds`.
    public static func informationRefreshTime(_ seconds: UInt32) -> DHCPv6Option {
        DHCPv6Option(code: .informationRefreshTime, data: [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: seconds >> $0) })
    }
}
