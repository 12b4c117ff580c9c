public import VPNKitBase

/// One option instance as it appears on the wire (code 0 is a pad byte with no data).
public struct DHCPOption: Sendable, Hashable {
    /// The option code.
    public var code: DHCPOptionCode
    /// The value bytes, without code and length. Keep it to 255 bytes: the length is encoded in one byte.
    /// `DHCPOptions.set(_:_:)` splits longer values into several instances.
    public var data: [UInt8]
    /// Creates one option instance; `data` is not checked.
    public init(code: DHCPOptionCode, data: [UInt8]) {
        self.code = code
        self.data = data
    }
}

/// An ordered list of option instances with RFC 3396 semantics: several instances of one code are a
/// single option whose value is their concatenation. Setting a value longer than 255 bytes splits it
/// into several instances.
public struct DHCPOptions: Sendable, Hashable {
    /// The instances in wire order (pads included, END excluded).
    public var instances: [DHCPOption]

    /// Creates an options list from instances in wire order (empty by default).
    public init(_ instances: [DHCPOption] = []) { self.instances = instances }

    /// The concatenated value of `code`, or nil when absent.
    public subscript(code: DHCPOptionCode) -> [UInt8]? {
        guard code != .pad else { return nil }
        var value: [UInt8]?
        for instance in instances where instance.code == code {
            if value == nil { value = instance.data } else { value!.append(contentsOf: instance.data) }
        }
        return value
    }

    /// The codes present, in order of first appearance.
    public var codes: [DHCPOptionCode] {
        var seen = Set<DHCPOptionCode>()
        return instances.compactMap { $0.code != .pad && seen.insert($0.code).inserted ? $0.code : nil }
    }

    /// Replaces any instances of `code` with `value` (split into 255-byte pieces, RFC 3396), keeping
    /// the position of the first one; nil removes the option.
    public mutating func set(_ code: DHCPOptionCode, _ value: [UInt8]?) {
        let position = instances.firstIndex { $0.code == code } ?? instances.endIndex
        instances.removeAll { $0.code == code }
        guard let value else { return }
        var pieces: [DHCPOption] = []
        var start = 0
        repeat {
            let end = min(value.count, start + 255)
            pieces.append(DHCPOption(code: code, data: Array(value[start..<end])))
            start = end
        } while start < value.count
        instances.insert(contentsOf: pieces, at: min(position, instances.endIndex))
    }

    /// Appends the options (and the END option when `end` is true) in wire format.
    public func encoded(end: Bool = true) -> [UInt8] {
        var bytes: [UInt8] = []
        for instance in instances {
            bytes.append(instance.code.rawValue)
            if instance.code == .pad { continue }
            bytes.append(UInt8(truncatingIfNeeded: instance.data.count))
            bytes += instance.data
        }
        if end { bytes.append(DHCPOptionCode.end.rawValue) }
        return bytes
    }

    /// Parses an options area. Returns the instances, whether an END option was found, and the bytes
    /// after it. Throws when an option's length runs past the area.
    package static func parse(_ bytes: ArraySlice<UInt8>) throws(WireError) -> (options: DHCPOptions, sawEnd: Bool, trailer: [UInt8]) {
        var instances: [DHCPOption] = []
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let code = bytes[index]
            if code == 255 { return (DHCPOptions(instances), true, Array(bytes[(index + 1)...])) }
            if code == 0 {
                instances.append(DHCPOption(code: .pad, data: []))
                index += 1
                continue
            }
            guard index + 1 < bytes.endIndex else { throw .malformedOption(kind: Int(code), reason: "length byte missing") }
            let length = Int(bytes[index + 1])
            let start = index + 2
            guard start + length <= bytes.endIndex else {
                throw .malformedOption(kind: Int(code), reason: "length \(length) runs past the options (\(bytes.endIndex - start) left)")
            }
            instances.append(DHCPOption(code: DHCPOptionCode(code), data: Array(bytes[start..<(start + length)])))
            index = start + length
        }
        return (DHCPOptions(instances), false, [])
    }
}

// MARK: - Typed accessors

extension DHCPOptions {
    private func address(_ code: DHCPOptionCode) -> IPv4Address? {
        guard let v = self[code], v.count == 4 else { return nil }
        return IPv4Address(v[0], v[1], v[2], v[3])
    }
    private func addresses(_ code: DHCPOptionCode) -> [IPv4Address]? {
        guard let v = self[code], !v.isEmpty, v.count % 4 == 0 else { return nil }
        return stride(from: 0, to: v.count, by: 4).map { IPv4Address(v[$0], v[$0 + 1], v[$0 + 2], v[$0 + 3]) }
    }
    private func u32(_ code: DHCPOptionCode) -> UInt32? {
        guard let v = self[code], v.count == 4 else { return nil }
        return v.reduce(0) { $0 << 8 | UInt32($1) }
    }
    private func u16(_ code: DHCPOptionCode) -> UInt16? {
        guard let v = self[code], v.count == 2 else { return nil }
        return UInt16(v[0]) << 8 | UInt16(v[1])
    }
    private func text(_ code: DHCPOptionCode) -> String? {
        self[code].map { String(decoding: $0, as: UTF8.self) }
    }
    private static func bytes(_ value: UInt32) -> [UInt8] {
        [UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
         UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)]
    }

    /// Option 53; nil when absent or not exactly one byte. Setting nil removes it.
    public var messageType: DHCPMessageType? {
        get { self[.messageType].flatMap { $0.count == 1 ? DHCPMessageType(rawValue: $0[0]) : nil } }
        set { set(.messageType, newValue.map { [$0.rawValue] }) }
    }
    /// Option 1; nil when absent or not 4 bytes. Setting nil removes it.
    public var subnetMask: IPv4Address? {
        get { address(.subnetMask) }
        set { set(.subnetMask, newValue?.octets) }
    }
    /// Option 3; nil when absent, empty or not a multiple of 4 bytes. Setting nil removes it.
    public var routers: [IPv4Address]? {
        get { addresses(.router) }
        set { set(.router, newValue.map { $0.flatMap(\.octets) }) }
    }
    /// Option 6; nil when absent, empty or not a multiple of 4 bytes. Setting nil removes it.
    public var domainNameServers: [IPv4Address]? {
        get { addresses(.domainNameServer) }
        set { set(.domainNameServer, newValue.map { $0.flatMap(\.octets) }) }
    }
    /// Option 12, decoded as UTF-8 (invalid bytes are replaced); nil when absent.
    public var hostName: String? {
        get { text(.hostName) }
        set { set(.hostName, newValue.map { Array($0.utf8) }) }
    }
    /// Option 15, decoded as UTF-8 (invalid bytes are replaced); nil when absent.
    public var domainName: String? {
        get { text(.domainName) }
        set { set(.domainName, newValue.map { Array($0.utf8) }) }
    }
    /// Option 26, in bytes; nil when absent or not 2 bytes.
    public var interfaceMTU: UInt16? {
        get { u16(.interfaceMTU) }
        set { set(.interfaceMTU, newValue.map { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }) }
    }
    /// Option 28; nil when absent or not 4 bytes.
    public var broadcastAddress: IPv4Address? {
        get { address(.broadcastAddress) }
        set { set(.broadcastAddress, newValue?.octets) }
    }
    /// Option 50; nil when absent or not 4 bytes.
    public var requestedIPAddress: IPv4Address? {
        get { address(.requestedIPAddress) }
        set { set(.requestedIPAddress, newValue?.octets) }
    }
    /// Option 51, in seconds (0xFFFFFFFF means infinite in RFC 2132); nil when absent or not 4 bytes.
    public var leaseTime: UInt32? {
        get { u32(.leaseTime) }
        set { set(.leaseTime, newValue.map(Self.bytes)) }
    }
    /// Option 52: 1 = file holds options, 2 = sname holds options, 3 = both.
    public var overload: UInt8? {
        get { self[.overload].flatMap { $0.count == 1 ? $0[0] : nil } }
        set { set(.overload, newValue.map { [$0] }) }
    }
    /// Option 54; nil when absent or not 4 bytes.
    public var serverIdentifier: IPv4Address? {
        get { address(.serverIdentifier) }
        set { set(.serverIdentifier, newValue?.octets) }
    }
    /// Option 55: the requested codes in the client's order; nil when absent.
    public var parameterRequestList: [DHCPOptionCode]? {
        get { self[.parameterRequestList].map { $0.map { DHCPOptionCode(rawValue: $0) } } }
        set { set(.parameterRequestList, newValue.map { $0.map(\.rawValue) }) }
    }
    /// Option 56, decoded as UTF-8 (invalid bytes are replaced); nil when absent.
    public var message: String? {
        get { text(.message) }
        set { set(.message, newValue.map { Array($0.utf8) }) }
    }
    /// Option 57, in bytes; nil when absent or not 2 bytes.
    public var maximumMessageSize: UInt16? {
        get { u16(.maximumMessageSize) }
        set { set(.maximumMessageSize, newValue.map { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }) }
    }
    /// Option 58 (T1), in seconds; nil when absent or not 4 bytes.
    public var renewalTime: UInt32? {
        get { u32(.renewalTime) }
        set { set(.renewalTime, newValue.map(Self.bytes)) }
    }
    /// Option 59 (T2), in seconds; nil when absent or not 4 bytes.
    public var rebindingTime: UInt32? {
        get { u32(.rebindingTime) }
        set { set(.rebindingTime, newValue.map(Self.bytes)) }
    }
    /// Option 61: the type byte followed by the identifier.
    public var clientIdentifier: [UInt8]? {
        get { self[.clientIdentifier] }
        set { set(.clientIdentifier, newValue) }
    }
    /// Option 119: domain names, decoded from RFC 1035 form with compression. Throws when malformed.
    public func domainSearch() throws(WireError) -> [String]? {
        guard let value = self[.domainSearch] else { return nil }
        return try DomainNameList.decode(value)
    }
    /// Sets option 119, compressed. Throws when a name has an empty or over-long label.
    public mutating func setDomainSearch(_ names: [String]?) throws(WireError) {
        guard let names else { return set(.domainSearch, nil) }
        set(.domainSearch, try DomainNameList.encode(names))
    }
    /// Option 121. Throws when malformed.
    public func classlessStaticRoutes() throws(WireError) -> [ClasslessStaticRoute]? {
        guard let v = self[.classlessStaticRoute] else { return nil }
        var routes: [ClasslessStaticRoute] = []
        var i = 0
        while i < v.count {
            let width = Int(v[i])
            guard width <= 32 else { throw .malformedOption(kind: 121, reason: "prefix length \(width) exceeds 32") }
            let significant = (width + 7) / 8
            guard i + 1 + significant + 4 <= v.count else {
                throw .malformedOption(kind: 121, reason: "route \(routes.count + 1) is truncated")
            }
            var destination: UInt32 = 0
            for k in 0..<4 { destination = destination << 8 | UInt32(k < significant ? v[i + 1 + k] : 0) }
            let r = i + 1 + significant
            routes.append(
                ClasslessStaticRoute(
                    destination: IPv4Address(rawValue: destination), prefixLength: width,
                    router: IPv4Address(v[r], v[r + 1], v[r + 2], v[r + 3])))
            i = r + 4
        }
        return routes
    }
    /// Sets option 121, or removes it when `routes` is nil. Prefix lengths outside 0…32 are clamped.
    public mutating func setClasslessStaticRoutes(_ routes: [ClasslessStaticRoute]?) {
        guard let routes else { return set(.classlessStaticRoute, nil) }
        var bytes: [UInt8] = []
        for route in routes {
            let width = max(0, min(32, route.prefixLength))
            bytes.append(UInt8(width))
            bytes += route.destination.octets.prefix((width + 7) / 8)
            bytes += route.router.octets
        }
        set(.classlessStaticRoute, bytes)
    }
}
