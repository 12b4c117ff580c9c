/// A resource record TYPE or question QTYPE (RFC 1035 §3.2.2, §3.2.3). Unknown values are kept.
public struct DNSRecordType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The value on the wire.
    public var rawValue: UInt16
    /// The value `rawValue`, known or not.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// An IPv4 address.
    public static let a = DNSRecordType(rawValue: 1)
    /// An authoritative name server.
    public static let ns = DNSRecordType(rawValue: 2)
    /// The canonical name of an alias.
    public static let cname = DNSRecordType(rawValue: 5)
    /// The start of a zone of authority.
    public static let soa = DNSRecordType(rawValue: 6)
    /// A domain name pointer (reverse lookups).
    public static let ptr = DNSRecordType(rawValue: 12)
    /// A mail exchange.
    public static let mx = DNSRecordType(rawValue: 15)
    /// Text strings.
    public static let txt = DNSRecordType(rawValue: 16)
    /// An IPv6 address (RFC 3596).
    public static let aaaa = DNSRecordType(rawValue: 28)
    /// A service location (RFC 2782).
    public static let srv = DNSRecordType(rawValue: 33)
    /// The EDNS pseudo-record (RFC 6891).
    public static let opt = DNSRecordType(rawValue: 41)
    /// QTYPE `*`: all records.
    public static let any = DNSRecordType(rawValue: 255)

    /// The mnemonic for a named type (`A`, `AAAA`, `OPT`…), otherwise `TYPE` and the number (RFC 3597), such
    /// as `TYPE65`.
    public var description: String {
        switch rawValue {
        case 1: return "A"
        case 2: return "NS"
        case 5: return "CNAME"
        case 6: return "SOA"
        case 12: return "PTR"
        case 15: return "MX"
        case 16: return "TXT"
        case 28: return "AAAA"
        case 33: return "SRV"
        case 41: return "OPT"
        case 255: return "ANY"
        default: return "TYPE\(rawValue)"
        }
    }
}

/// A resource record CLASS or question QCLASS (RFC 1035 §3.2.4). In an OPT record this field holds
/// the advertised UDP payload size instead.
public struct DNSClass: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The value on the wire.
    public var rawValue: UInt16
    /// The value `rawValue`, known or not.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// IN, the Internet.
    public static let internet = DNSClass(rawValue: 1)
    /// CH, Chaosnet (and server identity queries).
    public static let chaos = DNSClass(rawValue: 3)
    /// HS, Hesiod.
    public static let hesiod = DNSClass(rawValue: 4)
    /// QCLASS `*`.
    public static let any = DNSClass(rawValue: 255)

    /// The mnemonic for a named class (`IN`, `CH`, `HS`, `ANY`), otherwise `CLASS` and the number, such as
    /// `CLASS254`.
    public var description: String {
        switch rawValue {
        case 1: return "IN"
        case 3: return "CH"
        case 4: return "HS"
        case 255: return "ANY"
        default: return "CLASS\(rawValue)"
        }
    }
}

/// The 4-bit OPCODE of the header (RFC 1035 §4.1.1, RFC 6895).
public struct DNSOpcode: RawRepresentable, Sendable, Hashable {
    /// The value on the wire.
    public var rawValue: UInt8
    /// Keeps the low 4 bits of `rawValue`.
    public init(rawValue: UInt8) { self.rawValue = rawValue & 0x0F }

    /// QUERY: a standard query.
    public static let query = DNSOpcode(rawValue: 0)
    /// IQUERY, obsolete (RFC 3425).
    public static let inverseQuery = DNSOpcode(rawValue: 1)
    /// STATUS.
    public static let status = DNSOpcode(rawValue: 2)
    /// NOTIFY (RFC 1996).
    public static let notify = DNSOpcode(rawValue: 4)
    /// UPDATE (RFC 2136).
    public static let update = DNSOpcode(rawValue: 5)
}

/// The 4-bit RCODE of the header (RFC 1035 §4.1.1). Extended codes carried in OPT are not merged in.
public struct DNSResponseCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The value on the wire.
    public var rawValue: UInt8
    /// Keeps the low 4 bits of `rawValue`.
    public init(rawValue: UInt8) { self.rawValue = rawValue & 0x0F }

    /// NOERROR.
    public static let noError = DNSResponseCode(rawValue: 0)
    /// FORMERR: the query could not be interpreted.
    public static let formatError = DNSResponseCode(rawValue: 1)
    /// SERVFAIL: the server could not answer.
    public static let serverFailure = DNSResponseCode(rawValue: 2)
    /// NXDOMAIN: the name does not exist.
    public static let nameError = DNSResponseCode(rawValue: 3)
    /// NOTIMP: the kind of query is not supported.
    public static let notImplemented = DNSResponseCode(rawValue: 4)
    /// REFUSED: the server will not answer.
    public static let refused = DNSResponseCode(rawValue: 5)

    /// The mnemonic for a named code (`NOERROR`, `NXDOMAIN`…), otherwise `RCODE` and the number.
    public var description: String {
        switch rawValue {
        case 0: return "NOERROR"
        case 1: return "FORMERR"
        case 2: return "SERVFAIL"
        case 3: return "NXDOMAIN"
        case 4: return "NOTIMP"
        case 5: return "REFUSED"
        default: return "RCODE\(rawValue)"
        }
    }
}
