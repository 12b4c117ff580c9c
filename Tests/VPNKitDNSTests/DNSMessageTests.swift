import NIOCore
import Testing
import VPNKitBase
import VPNKitDNS

@Suite("DNS wire format")
struct DNSMessageTests {
    /// `dig example.com A` as sent: id 0xBEEF, RD and AD, one question, an OPT record advertising
    /// 1232 bytes with an 8-byte client cookie option.
    static let exampleQuery: [UInt8] = [
        0xBE, 0xEF, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x07, 0x65, 0x78, 0x61, 0x6D, 0x70, 0x6C, 0x65, 0x03, 0x63, 0x6F, 0x6D, 0x00,  // example.com
        0x00, 0x01, 0x00, 0x01,  // A IN
        0x00, 0x00, 0x29, 0x04, 0xD0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0C,  // OPT, 1232, rdlength 12
        0x00, 0x0A, 0x00, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,  // COOKIE
    ]

    /// An answer for www.example.com: a CNAME to example.com (data compressed) and its A record,
    /// both owner names compressed.
    static let exampleAnswer: [UInt8] = [
        0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x03, 0x77, 0x77, 0x77, 0x07, 0x65, 0x78, 0x61, 0x6D, 0x70, 0x6C, 0x65, 0x03, 0x63, 0x6F, 0x6D, 0x00,  // www.example.com at 12
        0x00, 0x01, 0x00, 0x01,
        0xC0, 0x0C, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2C, 0x00, 0x02, 0xC0, 0x10,  // CNAME → example.com (offset 16)
        0xC0, 0x10, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x0E, 0x10, 0x00, 0x04, 0x5D, 0xB8, 0xD8, 0x22,  // A 93.184.216.34
    ]

    @Test("a real query parses: header, question, EDNS size")
    func parseQuery() throws {
        let message = try DNSMessage(parsing: buffer(Self.exampleQuery))
        #expect(message.header.id == 0xBEEF)
        #expect(!message.header.isResponse)
        #expect(message.header.opcode == .query)
        #expect(message.header.recursionDesired)
        #expect(message.header.authenticData)
        #expect(!message.header.isTruncated && !message.header.isAuthoritative)
        #expect(message.questions == [DNSQuestion(name: try DNSName("example.com"), type: .a, recordClass: .internet)])
        #expect(message.questions.first?.name.description == "example.com")
        #expect(message.answers.isEmpty && message.authorities.isEmpty)
        #expect(message.additionals.count == 1)
        #expect(message.ednsUDPPayloadSize == 1232)
        let edns = try #require(message.edns)
        #expect(edns.version == 0 && !edns.dnssecOK)
        #expect(edns.options == [0x00, 0x0A, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8])
        #expect(message.optRecord?.name == .root)
    }

    @Test("a real answer parses: compressed owner names and compressed data stay as sent")
    func parseAnswer() throws {
        let message = try DNSMessage(parsing: buffer(Self.exampleAnswer))
        #expect(message.header.id == 0x1234)
        #expect(message.header.isResponse && message.header.recursionDesired && message.header.recursionAvailable)
        #expect(message.header.responseCode == .noError)
        #expect(message.questions.first?.name == (try DNSName("www.example.com")))
        #expect(message.answers.count == 2)
        let cname = message.answers[0]
        #expect(cname.name == (try DNSName("WWW.Example.Com")))
        #expect(cname.type == .cname && cname.ttl == 300)
        #expect(cname.data == [0xC0, 0x10])
        let a = message.answers[1]
        #expect(a.name.description == "example.com")
        #expect(a.ttl == 3600)
        #expect(a.ipv4Address == IPv4Address(93, 184, 216, 34))
        #expect(message.edns == nil && message.ednsUDPPayloadSize == nil)
        // The name in the CNAME's data, read in the context of the message.
        let target = try DNSName.read(from: ByteView(buffer(Self.exampleAnswer)), at: 45)
        #expect(target.name.description == "example.com" && target.end == 47)
    }

    @Test("every proper prefix of a message is rejected with an error, never a trap")
    func truncatedPrefixes() {
        for message in [Self.exampleQuery, Self.exampleAnswer] {
            for length in 0..<message.count {
                #expect(throws: DNSError.self, "prefix of \(length) bytes") {
                    try DNSMessage(parsing: buffer(Array(message.prefix(length))))
                }
            }
            #expect(throws: Never.self) { try DNSMessage(parsing: buffer(message)) }
        }
    }

    /// A header with one question whose name starts at offset 12 and is `nameBytes`.
    func oneQuestion(_ nameBytes: [UInt8]) -> ByteBuffer {
        buffer([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0] + nameBytes + [0, 1, 0, 1])
    }

    @Test("compression loops and forward pointers are rejected")
    func compressionAbuse() {
        // A pointer to itself.
        #expect(throws: DNSError.badCompressionPointer(offset: 12, target: 12)) {
            try DNSMessage(parsing: self.oneQuestion([0xC0, 0x0C]))
        }
        // A label, then a pointer back to that label: points backward, but loops.
        #expect(throws: DNSError.badCompressionPointer(offset: 14, target: 12)) {
            try DNSMessage(parsing: self.oneQuestion([0x01, 0x61, 0xC0, 0x0C]))
        }
        // Two names pointing at each other (the second question's pointer goes back to the first,
        // whose pointer goes forward to the second).
        let mutual = buffer([0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0xC0, 0x12, 0, 1, 0, 1, 0xC0, 0x0C, 0, 1, 0, 1])
        #expect(throws: DNSError.badCompressionPointer(offset: 12, target: 18)) { try DNSMessage(parsing: mutual) }
        // A forward pointer to a perfectly good name.
        let forward = buffer([0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0xC0, 0x12, 0, 1, 0, 1] + wireName("a.b") + [0, 1, 0, 1])
        #expect(throws: DNSError.badCompressionPointer(offset: 12, target: 18)) { try DNSMessage(parsing: forward) }
        // A pointer past the end.
        #expect(throws: DNSError.self) { try DNSMessage(parsing: self.oneQuestion([0xFF, 0xFF])) }
        // A chain of backward pointers is fine.
        let chain = buffer(
            [0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0] + wireName("b.c") + [0, 1, 0, 1] + [0x01, 0x61, 0xC0, 0x0C, 0, 1, 0, 1]
                + [0x01, 0x7A, 0xC0, 0x15, 0, 1, 0, 1])
        #expect((try? DNSMessage(parsing: chain))?.questions.map(\.name.description) == ["b.c", "a.b.c", "z.a.b.c"])
    }

    @Test("over-long names, reserved label types and impossible counts are rejected")
    func limits() throws {
        let label63 = [UInt8(63)] + Array(repeating: UInt8(ascii: "x"), count: 63)
        // 4 × 64 + 1 = 257 bytes.
        #expect(throws: DNSError.nameTooLong(257)) {
            try DNSMessage(parsing: self.oneQuestion(label63 + label63 + label63 + label63 + [0]))
        }
        // 3 × 64 + 62 + 1 = 255 bytes: the longest legal name.
        let label61 = [UInt8(61)] + Array(repeating: UInt8(ascii: "y"), count: 61)
        let longest = try DNSMessage(parsing: oneQuestion(label63 + label63 + label63 + label61 + [0]))
        #expect(longest.questions.first?.name.wireLength == 255)
        // Over 255 only through a pointer: 205 bytes, then a 51-byte label in front of them.
        let label50 = [UInt8(50)] + Array(repeating: UInt8(ascii: "z"), count: 50)
        let viaPointer = buffer(
            [0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0] + label50 + label50 + label50 + label50 + [0, 0, 1, 0, 1] + label50 + [0xC0, 0x0C, 0, 1, 0, 1])
        #expect(throws: DNSError.nameTooLong(256)) { try DNSMessage(parsing: viaPointer) }
        // Label lengths 64…191 use the reserved 0b01 / 0b10 prefixes.
        #expect(throws: DNSError.reservedLabelType(offset: 12, byte: 0x40)) {
            try DNSMessage(parsing: self.oneQuestion([0x40] + Array(repeating: 0x61, count: 64) + [0]))
        }
        #expect(throws: DNSError.reservedLabelType(offset: 12, byte: 0x80)) { try DNSMessage(parsing: self.oneQuestion([0x80, 0])) }
        // Counts that cannot fit are rejected before anything is read or reserved.
        #expect(throws: DNSError.countsExceedMessage(questions: 65535, records: 0, available: 0)) {
            try DNSMessage(parsing: buffer([0, 1, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0]))
        }
        #expect(throws: DNSError.countsExceedMessage(questions: 0, records: 3 * 65535, available: 5)) {
            try DNSMessage(parsing: buffer([0, 1, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 1, 0, 1]))
        }
        // Record data longer than the message.
        let shortData = buffer([0, 1, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0] + [0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 9, 1, 2, 3])
        #expect(throws: DNSError.truncated(offset: 23, needed: 9, available: 26)) { try DNSMessage(parsing: shortData) }
    }

    @Test("names: text form, case-insensitive equality, limits, reverse names")
    func names() throws {
        let name = try DNSName("Host.Docker.Internal.")
        #expect(name == (try DNSName("host.docker.internal")))
        #expect(Set([name, try DNSName("HOST.docker.INTERNAL")]).count == 1)
        #expect(name.description == "Host.Docker.Internal")
        #expect(name.lowercased().description == "host.docker.internal")
        #expect(name.wireLength == 22)
        #expect(try DNSName(".") == .root && (try DNSName("")).isRoot)
        #expect(DNSName.root.description == ".")
        #expect(throws: DNSError.emptyLabel("a..b")) { try DNSName("a..b") }
        #expect(throws: DNSError.emptyLabel(".a")) { try DNSName(".a") }
        #expect(throws: DNSError.labelTooLong(64)) { try DNSName(String(repeating: "a", count: 64) + ".com") }
        let tooLong = Array(repeating: String(repeating: "a", count: 63), count: 4).joined(separator: ".")
        #expect(throws: DNSError.nameTooLong(257)) { try DNSName(tooLong) }
        let reverse = DNSName(reverseOf: IPv4Address(192, 168, 65, 2))
        #expect(reverse.description == "2.65.168.192.in-addr.arpa")
        #expect(reverse.reverseIPv4Address == IPv4Address(192, 168, 65, 2))
        #expect((try DNSName("2.65.168.192.IN-ADDR.ARPA")).reverseIPv4Address == IPv4Address(192, 168, 65, 2))
        #expect((try DNSName("256.65.168.192.in-addr.arpa")).reverseIPv4Address == nil)
        #expect((try DNSName("65.168.192.in-addr.arpa")).reverseIPv4Address == nil)
        #expect((try DNSName("x.65.168.192.in-addr.arpa")).reverseIPv4Address == nil)
        let odd = try DNSName(labels: [Array("a.b".utf8), [0x20, 0x5C]])
        #expect(odd.description == "a\\.b.\\032\\\\")
    }

    @Test("encode → parse round trip, with and without compression")
    func roundTrip() throws {
        var header = DNSHeader(id: 0xABCD)
        header.isResponse = true
        header.isAuthoritative = true
        header.recursionDesired = true
        header.responseCode = .nameError
        let owner = try DNSName("svc.example.org")
        let message = DNSMessage(
            header: header,
            questions: [DNSQuestion(name: owner, type: .any)],
            answers: [.a(owner, IPv4Address(10, 0, 0, 1), ttl: 5), .a(try DNSName("other.example.org"), IPv4Address(10, 0, 0, 2), ttl: 6)],
            authorities: [.ptr(try DNSName("1.0.0.10.in-addr.arpa"), owner, ttl: 7)],
            additionals: [DNSEDNS(udpPayloadSize: 4096, dnssecOK: true).record])
        let compressed = try message.encoded()
        let plain = try message.encoded(compressNames: false)
        #expect(compressed.readableBytes < plain.readableBytes)
        #expect(try DNSMessage(parsing: compressed) == message)
        #expect(try DNSMessage(parsing: plain) == message)
        // Header bytes as RFC 1035 lays them out: QR|AA|RD and NXDOMAIN → 0x8503.
        #expect(compressed.getBytes(at: 0, length: 12) == [0xAB, 0xCD, 0x85, 0x03, 0, 1, 0, 2, 0, 1, 0, 1])
        // The first answer's owner is a pointer to the question name at 12.
        let afterQuestion = 12 + owner.wireLength + 4
        #expect(compressed.getBytes(at: afterQuestion, length: 2) == [0xC0, 0x0C])
        let parsed = try DNSMessage(parsing: compressed)
        #expect(parsed.edns == DNSEDNS(udpPayloadSize: 4096, dnssecOK: true))
        #expect(parsed.header.flags == header.flags)
    }

    @Test("encoding refuses what cannot be represented")
    func encodingLimits() throws {
        var message = DNSMessage(header: DNSHeader(id: 1))
        message.answers = [DNSResourceRecord(name: .root, type: .txt, ttl: 0, data: Array(repeating: 0, count: 65536))]
        #expect(throws: DNSError.rdataTooLong(65536)) { try message.encoded() }
        message.answers = Array(repeating: DNSResourceRecord(name: .root, type: .txt, ttl: 0, data: Array(repeating: 0, count: 40000)), count: 2)
        var out = ByteBuffer()
        out.writeBytes([1, 2, 3])
        #expect(throws: DNSError.self) { try message.write(to: &out) }
        #expect(out.readableBytes == 3)
    }

    @Test("random and mutated input never traps; whatever parses re-encodes to the same message")
    func fuzz() throws {
        var random = SplitMix64(seed: 0xD15EA5E)
        let seeds = [Self.exampleQuery, Self.exampleAnswer]
        var parsedCount = 0
        for round in 0..<4000 {
            var bytes: [UInt8]
            if round % 4 == 0 {
                bytes = (0..<Int(random.next() % 80)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            } else {
                bytes = seeds[round % 2]
                for _ in 0..<(1 + random.next() % 4) {
                    let index = Int(random.next() % UInt64(bytes.count))
                    bytes[index] = UInt8(truncatingIfNeeded: random.next())
                }
                if random.next() % 3 == 0 { bytes = Array(bytes.prefix(Int(random.next() % UInt64(bytes.count + 1)))) }
            }
            guard let message = try? DNSMessage(parsing: buffer(bytes)) else { continue }
            parsedCount += 1
            #expect(try DNSMessage(parsing: message.encoded()) == message)
            #expect(try DNSMessage(parsing: message.encoded(compressNames: false)) == message)
        }
        #expect(parsedCount > 100)
    }
}
