import NIOCore
import Testing
import VPNKitBase
import VPNKitDHCP

@Suite("DHCP")
struct DHCPTests {
    let client = MACAddress("52:54:00:12:34:56")!

    func discover() -> DHCPMessage {
        var m = DHCPMessage(op: DHCPMessage.bootRequest, transactionID: 0x1234_5678, clientHardwareAddress: client)
        m.broadcastFlag = true
        m.options.messageType = .discover
        m.options.parameterRequestList = [.subnetMask, .router, .domainNameServer, .interfaceMTU, .domainSearch]
        m.options.hostName = "guest"
        m.options.clientIdentifier = [1] + client.bytes
        m.padToMinimumSize()
        return m
    }

    func encode(_ m: DHCPMessage) -> ByteBuffer {
        var out = ByteBuffer()
        m.write(to: &out)
        return out
    }

    @Test("construct → bytes → deconstruct")
    func roundTrip() throws {
        let m = discover()
        let bytes = encode(m)
        #expect(bytes.readableBytes == 300)
        #expect(bytes.readableBytes == m.encodedLength)
        let packet = try DHCPPacket(bytes)
        #expect(packet.op == 1 && packet.transactionID == 0x1234_5678)
        #expect(packet.broadcastFlag)
        #expect(packet.clientHardwareAddress == client)
        #expect(packet.hasMagicCookie)
        let parsed = try DHCPMessage(parsing: packet)
        #expect(parsed == m)
        #expect(parsed.options.messageType == .discover)
        #expect(parsed.options.parameterRequestList == [.subnetMask, .router, .domainNameServer, .interfaceMTU, .domainSearch])
        #expect(parsed.options.hostName == "guest")
        #expect(parsed.options.clientIdentifier == [1] + client.bytes)
        #expect(parsed.clientHardwareAddress == client)
        // Byte layout spot checks (RFC 2131 §2): cookie at 236, first option at 240.
        #expect(ByteView(bytes).loadU32(at: 236) == 0x6382_5363)
        #expect(bytes.getBytes(at: bytes.readerIndex + 240, length: 3) == [53, 1, 1])
    }

    @Test("every typed accessor round-trips")
    func typedOptions() throws {
        var o = DHCPOptions()
        o.messageType = .ack
        o.subnetMask = IPv4Address(255, 255, 255, 0)
        o.routers = [IPv4Address(192, 168, 65, 1)]
        o.domainNameServers = [IPv4Address(192, 168, 65, 1), IPv4Address(192, 168, 65, 2)]
        o.hostName = "vm"
        o.domainName = "internal"
        o.interfaceMTU = 65520
        o.broadcastAddress = IPv4Address(192, 168, 65, 255)
        o.requestedIPAddress = IPv4Address(192, 168, 65, 3)
        o.leaseTime = 7200
        o.serverIdentifier = IPv4Address(192, 168, 65, 1)
        o.parameterRequestList = [.subnetMask, .router]
        o.maximumMessageSize = 1500
        o.renewalTime = 3600
        o.rebindingTime = 6300
        o.clientIdentifier = [1, 2, 3]
        try o.setDomainSearch(["internal", "example.test"])
        o.setClasslessStaticRoutes([ClasslessStaticRoute(destination: IPv4Address(10, 0, 0, 0), prefixLength: 8, router: IPv4Address(192, 168, 65, 1))])
        var m = DHCPMessage(op: DHCPMessage.bootReply, transactionID: 1, clientHardwareAddress: client)
        m.options = o
        let parsed = try DHCPMessage(parsing: DHCPPacket(encode(m))).options
        #expect(parsed.messageType == .ack)
        #expect(parsed.subnetMask == IPv4Address(255, 255, 255, 0))
        #expect(parsed.routers == [IPv4Address(192, 168, 65, 1)])
        #expect(parsed.domainNameServers == [IPv4Address(192, 168, 65, 1), IPv4Address(192, 168, 65, 2)])
        #expect(parsed.hostName == "vm")
        #expect(parsed.domainName == "internal")
        #expect(parsed.interfaceMTU == 65520)
        #expect(parsed.broadcastAddress == IPv4Address(192, 168, 65, 255))
        #expect(parsed.requestedIPAddress == IPv4Address(192, 168, 65, 3))
        #expect(parsed.leaseTime == 7200)
        #expect(parsed.serverIdentifier == IPv4Address(192, 168, 65, 1))
        #expect(parsed.parameterRequestList == [.subnetMask, .router])
        #expect(parsed.maximumMessageSize == 1500)
        #expect(parsed.renewalTime == 3600 && parsed.rebindingTime == 6300)
        #expect(parsed.clientIdentifier == [1, 2, 3])
        #expect(try parsed.domainSearch() == ["internal", "example.test"])
        #expect(try parsed.classlessStaticRoutes()?.first?.prefixLength == 8)
        #expect(parsed.codes.first == .messageType)
    }

    @Test("RFC 3397 §2 example: eng.apple.com and marketing.apple.com, compressed")
    func domainSearchRFCExample() throws {
        let expected: [UInt8] =
            [3] + Array("eng".utf8) + [5] + Array("apple".utf8) + [3] + Array("com".utf8) + [0]
            + [9] + Array("marketing".utf8) + [0xC0, 0x04]
        #expect(expected.count == 27)
        #expect(try DomainNameList.encode(["eng.apple.com.", "marketing.apple.com."]) == expected)
        #expect(try DomainNameList.decode(expected) == ["eng.apple.com", "marketing.apple.com"])
    }

    @Test("domain names: loops, forward pointers, overruns and bad labels are typed errors")
    func domainSearchMalformed() {
        #expect(throws: WireError.malformedOption(kind: 119, reason: "pointer 0 does not point backward")) {
            try DomainNameList.decode([0xC0, 0x00])
        }
        #expect(throws: WireError.malformedOption(kind: 119, reason: "pointer 5 does not point backward")) {
            try DomainNameList.decode([0xC0, 0x05, 1, 0x61, 0])
        }
        // a → pointer back to a: a loop, caught by the length or jump limits.
        #expect(throws: WireError.self) { try DomainNameList.decode([1, 0x61, 0xC0, 0x00]) }
        #expect(throws: WireError.malformedOption(kind: 119, reason: "label runs past the option")) {
            try DomainNameList.decode([5, 0x61])
        }
        #expect(throws: WireError.malformedOption(kind: 119, reason: "name runs past the option")) {
            try DomainNameList.decode([1, 0x61])
        }
        #expect(throws: WireError.malformedOption(kind: 119, reason: "reserved label type 1")) {
            try DomainNameList.decode([0x40, 0])
        }
        #expect(throws: WireError.self) { try DomainNameList.encode(["a..b"]) }
        #expect(throws: WireError.self) { try DomainNameList.encode([String(repeating: "x", count: 64) + ".test"]) }
    }

    @Test("RFC 3442 examples for classless static routes")
    func classlessRoutes() throws {
        let router = IPv4Address(10, 0, 0, 1)
        let routes = [
            ClasslessStaticRoute(destination: .any, prefixLength: 0, router: router),
            ClasslessStaticRoute(destination: IPv4Address(10, 0, 0, 0), prefixLength: 8, router: router),
            ClasslessStaticRoute(destination: IPv4Address(10, 17, 0, 0), prefixLength: 16, router: router),
            ClasslessStaticRoute(destination: IPv4Address(10, 229, 0, 128), prefixLength: 25, router: router),
        ]
        var o = DHCPOptions()
        o.setClasslessStaticRoutes(routes)
        #expect(o[.classlessStaticRoute] == [0, 10, 0, 0, 1, 8, 10, 10, 0, 0, 1, 16, 10, 17, 10, 0, 0, 1, 25, 10, 229, 0, 128, 10, 0, 0, 1])
        #expect(try o.classlessStaticRoutes() == routes)
        o.set(.classlessStaticRoute, [33, 1, 2, 3, 4, 5, 6, 7, 8])
        #expect(throws: WireError.malformedOption(kind: 121, reason: "prefix length 33 exceeds 32")) { try o.classlessStaticRoutes() }
        o.set(.classlessStaticRoute, [24, 10, 0, 0, 10, 0])
        #expect(throws: WireError.malformedOption(kind: 121, reason: "route 1 is truncated")) { try o.classlessStaticRoutes() }
    }

    @Test("RFC 3396: a long option is split on emit and concatenated on parse")
    func longOptions() throws {
        let names = (0..<40).map { "host\($0).zone\($0).example.test" }
        var m = discover()
        try m.options.setDomainSearch(names)
        let value = m.options[.domainSearch]!
        #expect(value.count > 255)
        #expect(m.options.instances.filter { $0.code == .domainSearch }.count == (value.count + 254) / 255)
        let parsed = try DHCPMessage(parsing: DHCPPacket(encode(m)))
        #expect(parsed.options[.domainSearch] == value)
        #expect(try parsed.options.domainSearch() == names)
        // Instances need not be adjacent (RFC 3396 §5).
        var split = DHCPOptions([DHCPOption(code: .hostName, data: Array("ab".utf8)), DHCPOption(code: .leaseTime, data: [0, 0, 0, 9]),
                                 DHCPOption(code: .hostName, data: Array("cd".utf8))])
        #expect(split.hostName == "abcd")
        split.hostName = "x"
        #expect(split.instances.map(\.code) == [.hostName, .leaseTime])
    }

    @Test("option overload: options carried in file and sname are merged, file first")
    func overload() throws {
        var m = discover()
        m.options.overload = 3
        m.options.hostName = nil
        var file = [UInt8](repeating: 0, count: 128)
        let inFile: [UInt8] = [12, 4] + Array("file".utf8) + [255]
        file.replaceSubrange(0..<inFile.count, with: inFile)
        var sname = [UInt8](repeating: 0, count: 64)
        let inSname: [UInt8] = [15, 4] + Array("snam".utf8) + [12, 2] + Array("xy".utf8) + [255]
        sname.replaceSubrange(0..<inSname.count, with: inSname)
        m.bootFile = file
        m.serverName = sname
        let parsed = try DHCPMessage(parsing: DHCPPacket(encode(m)))
        #expect(parsed.options.hostName == nil)
        let all = try parsed.allOptions()
        #expect(all.hostName == "filexy")
        #expect(all.domainName == "snam")
        #expect(all.messageType == .discover)
    }

    @Test("malformed and truncated messages are typed errors; no cookie means BOOTP")
    func malformed() throws {
        #expect(throws: WireError.truncated(needed: 236, available: 235)) {
            try DHCPPacket(ByteBuffer(bytes: [UInt8](repeating: 0, count: 235)))
        }
        var bytes = encode(discover()).readableByteArray
        // Make the first option (53) claim 200 bytes when fewer remain.
        bytes[241] = 200
        #expect(throws: WireError.malformedOption(kind: 53, reason: "length 200 runs past the options (58 left)")) { try DHCPMessage(parsing: DHCPPacket(ByteBuffer(bytes: bytes))) }
        let bootp = try DHCPMessage(parsing: DHCPPacket(ByteBuffer(bytes: [UInt8](repeating: 0, count: 300))))
        #expect(!bootp.hasMagicCookie && bootp.options.instances.isEmpty)
        #expect(encode(bootp).readableBytes == 300)
        // Missing END is tolerated and preserved.
        var noEnd = discover()
        noEnd.hasEndOption = false
        noEnd.trailer = []
        let reparsed = try DHCPMessage(parsing: DHCPPacket(encode(noEnd)))
        #expect(!reparsed.hasEndOption && reparsed.options.hostName == "guest")
    }
}
