public import VPNKitBase

/// An entry of the question section (RFC 1035 §4.1.2). Equality ignores the name's ASCII case.
public struct DNSQuestion: Sendable, Hashable {
    /// The name asked about.
    public var name: DNSName
    /// QTYPE.
    public var type: DNSRecordType
    /// QCLASS.
    public var recordClass: DNSClass

    /// A question for `name`, class IN unless told otherwise.
    public init(name: DNSName, type: DNSRecordType, recordClass: DNSClass = .internet) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
    }
}

/// A resource record (RFC 1035 §4.1.3). The record data is kept as bytes, exactly as it was in the
/// message: names inside it that use compression still refer to offsets of that message, so copy a
/// record whose data holds compressed names (CNAME, NS, PTR, MX, SOA…) only into messages where the
/// offsets stay valid, or forward the original bytes.
public struct DNSResourceRecord: Sendable, Hashable {
    /// The owner name.
    public var name: DNSName
    /// TYPE.
    public var type: DNSRecordType
    /// The class; in an OPT record, the advertised UDP payload size.
    public var recordClass: DNSClass
    /// Seconds; in an OPT record, the extended RCODE, version and flags.
    public var ttl: UInt32
    /// RDATA, verbatim.
    public var data: [UInt8]

    /// A record made of the given fields.
    public init(name: DNSName, type: DNSRecordType, recordClass: DNSClass = .internet, ttl: UInt32, data: [UInt8]) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
        self.ttl = ttl
        self.data = data
    }

    /// An A record for `address`.
    public static func a(_ name: DNSName, _ address: IPv4Address, ttl: UInt32) -> DNSResourceRecord {
        DNSResourceRecord(name: name, type: .a, ttl: ttl, data: address.octets)
    }

    /// An AAAA record for `address` (RFC 3596).
    public static func aaaa(_ name: DNSName, _ address: IPv6Address, ttl: UInt32) -> DNSResourceRecord {
        DNSResourceRecord(name: name, type: .aaaa, ttl: ttl, data: address.octets)
    }

    /// An A record for an IPv4 address, an AAAA record for an IPv6 one.
    public static func address(_ name: DNSName, _ address: IPAddress, ttl: UInt32) -> DNSResourceRecord {
        switch address {
        case .v4(let v4): return .a(name, v4, ttl: ttl)
        case .v6(let v6): return .aaaa(name, v6, ttl: ttl)
        }
    }

    /// A PTR record pointing at `target` (written uncompressed, so it is valid in any message).
    public static func ptr(_ name: DNSName, _ target: DNSName, ttl: UInt32) -> DNSResourceRecord {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(target.wireLength)
        for label in target.labels {
            bytes.append(UInt8(truncatingIfNeeded: label.count))
            bytes += label
        }
        bytes.append(0)
        return DNSResourceRecord(name: name, type: .ptr, ttl: ttl, data: bytes)
    }

    /// The address of an IN A record with 4 bytes of data; nil otherwise.
    public var ipv4Address: IPv4Address? {
        guard type == .a, recordClass == .internet, data.count == 4 else { return nil }
        return IPv4Address(data[0], data[1], data[2], data[3])
    }

    /// The address of an IN AAAA record with 16 bytes of data; nil otherwise.
    public var ipv6Address: IPv6Address? {
        guard type == .aaaa, recordClass == .internet, data.count == 16 else { return nil }
        return IPv6Address(octets: data)
    }
}

/// The EDNS(0) parameters carried by an OPT pseudo-record (RFC 6891 §6.1).
public struct DNSEDNS: Sendable, Hashable {
    /// The largest UDP payload the sender can reassemble (the OPT record's CLASS).
    public var udpPayloadSize: UInt16
    /// The upper 8 bits of the 12-bit extended RCODE.
    public var extendedResponseCode: UInt8
    /// The EDNS version (0 is the only one defined).
    public var version: UInt8
    /// DO: the sender wants DNSSEC records.
    public var dnssecOK: Bool
    /// The options, as the raw record data.
    public var options: [UInt8]

    /// EDNS parameters with the given fields.
    public init(
        udpPayloadSize: UInt16, extendedResponseCode: UInt8 = 0, version: UInt8 = 0, dnssecOK: Bool = false, options: [UInt8] = []
    ) {
        self.udpPayloadSize = udpPayloadSize
        self.extendedResponseCode = extendedResponseCode
        self.version = version
        self.dnssecOK = dnssecOK
        self.options = options
    }

    /// The parameters of an OPT record; nil for any other type.
    public init?(_ record: DNSResourceRecord) {
        guard record.type == .opt else { return nil }
        self.udpPayloadSize = record.recordClass.rawValue
        self.extendedResponseCode = UInt8(truncatingIfNeeded: record.ttl >> 24)
        self.version = UInt8(truncatingIfNeeded: record.ttl >> 16)
        self.dnssecOK = record.ttl & 0x8000 != 0
        self.options = record.data
    }

    /// The OPT record carrying these parameters (owner: the root).
    public var record: DNSResourceRecord {
        let ttl = UInt32(extendedResponseCode) << 24 | UInt32(version) << 16 | (dnssecOK ? 0x8000 : 0)
        return DNSResourceRecord(name: .root, type: .opt, recordClass: DNSClass(rawValue: udpPayloadSize), ttl: ttl, data: options)
    }
}
