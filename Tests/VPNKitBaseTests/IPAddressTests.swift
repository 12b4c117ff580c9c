import Testing
import VPNKitBase

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("IPv6Address text (RFC 4291 §2.2 in, RFC 5952 out)")
struct IPv6AddressTextTests {
    /// RFC 5952 §2 and §4: every spelling on the left has the canonical form on the right.
    static let canonical: [(String, String)] = [
        // §4.1: leading zeros suppressed.
        ("2001:0db8::0001", "2001:db8::1"),
        ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:0001", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1"),
        ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:001", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1"),
        ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:01", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1"),
        ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:1", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1"),
        // §4.2.1: `::` as long as possible.
        ("2001:db8:0:0:0:0:2:1", "2001:db8::2:1"),
        ("2001:db8::0:1", "2001:db8::1"),
        ("2001:db8:0:0:0::1", "2001:db8::1"),
        ("2001:db8:0:0::1", "2001:db8::1"),
        ("2001:db8:0::1", "2001:db8::1"),
        // §4.2.2: never for a single zero group.
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("2001:db8:aaaa:bbbb:cccc:dddd::1", "2001:db8:aaaa:bbbb:cccc:dddd:0:1"),
        // §4.2.3: the longest run; the first of equal runs.
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8::aaaa:0:0:1", "2001:db8::aaaa:0:0:1"),
        ("2001:db8:0:0:aaaa::1", "2001:db8::aaaa:0:0:1"),
        // §2's eight spellings of one address.
        ("2001:0db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8::1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8::0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:0db8::1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:0:1::1", "2001:db8::1:0:0:1"),
        ("2001:db8:0000:0:1::1", "2001:db8::1:0:0:1"),
        ("2001:DB8:0:0:1::1", "2001:db8::1:0:0:1"),
        // §4.3: lowercase.
        ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:AAAA", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:aaaa"),
        ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:AaAa", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:aaaa"),
        // RFC 4291 §2.2's own examples.
        ("ABCD:EF01:2345:6789:ABCD:EF01:2345:6789", "abcd:ef01:2345:6789:abcd:ef01:2345:6789"),
        ("2001:DB8:0:0:8:800:200C:417A", "2001:db8::8:800:200c:417a"),
        ("2001:DB8::8:800:200C:417A", "2001:db8::8:800:200c:417a"),
        ("FF01:0:0:0:0:0:0:101", "ff01::101"),
        ("FF01::101", "ff01::101"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("::1", "::1"),
        ("0:0:0:0:0:0:0:0", "::"),
        ("::", "::"),
        // Embedded IPv4 (§2.2 form 3): IPv4-mapped prints mixed (RFC 5952 §5), anything else in hex.
        ("0:0:0:0:0:FFFF:129.144.52.38", "::ffff:129.144.52.38"),
        ("::FFFF:129.144.52.38", "::ffff:129.144.52.38"),
        ("::ffff:0.0.0.0", "::ffff:0.0.0.0"),
        ("0:0:0:0:0:0:13.1.68.3", "::d01:4403"),
        ("::13.1.68.3", "::d01:4403"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
        ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
        // `::` standing for one group is read (RFC 4291 allows it), and not written.
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
        ("1:2:3::5:6:7:8", "1:2:3:0:5:6:7:8"),
        // The zero run at either end.
        ("1::", "1::"),
        ("1:0:0:0:0:0:0:0", "1::"),
        ("0:0:0:0:0:0:0:8", "::8"),
        ("fe80:0:0:0:0:0:0:1", "fe80::1"),
        ("ff02::1:ff00:1", "ff02::1:ff00:1"),
        ("0:1:0:1:0:1:0:1", "0:1:0:1:0:1:0:1"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ]

    @Test("RFC 5952 §2/§4 and RFC 4291 §2.2 forms parse to the canonical text", arguments: Self.canonical)
    func canonicalForm(text: String, expected: String) throws {
        let address = try #require(IPv6Address(text), "\(text) should parse")
        #expect(address.description == expected)
        // The canonical text parses back to the same address.
        #expect(IPv6Address(expected) == address)
        #expect(IPAddress(text) == .v6(address))
    }

    /// Text that is not an IPv6 address: each returns nil (and none traps).
    static let malformed: [String] = [
        "", ":", ":::", "::::", "1", "1:2", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9",
        "1::2::3", "::1::", "1::2::", ":1::2", "1::2:", ":1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:",
        "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "1:2:3:4::5:6:7:8", "1:2:3:4:5:6::7:8",
        "12345::", "00000::", "::10000", "g::", "1:2:3:4:5:6:7:g", "::fffg", "0x1::", "-1::", "+1::",
        "::+1", "1:-2::", " ::1", "::1 ", "1 :: 2", "1: :2", "::1%eth0", "fe80::1%1", "[::1]", "::1/128",
        "1.2.3.4", "::1.2.3", "::1.2.3.4.5", "::256.0.0.1", "::1.2.3.04", "::01.2.3.4", "::1.2.3.", "::.1.2.3",
        "::1..2.3", "::1.2.3.4.", "1.2.3.4::", "::1.2.3.4:5", "1:2:3:4:5:6:7:1.2.3.4", "1:2:3:4:5:6:1.2.3.4:5",
        "::1.2.3.-4", "::1.2.3.+4", "::1.2.3.4a", "::ffff:1.2.3.4/96", "::1000.2.3.4",
        "１::", "::١", "::é", "::\n", "1::2\t", "\u{0}::", "::ffff:1.2.3.4\u{0}",
        String(repeating: "1:", count: 100) + "1", String(repeating: "0", count: 46) + "::",
        "2001:db8:aaaa:bbbb:cccc:dddd:eeee:aaaa:", "::ffff:1.2.3.4:",
    ]

    @Test("malformed text returns nil")
    func malformedText() {
        #expect(Self.malformed.count >= 50)
        for text in Self.malformed {
            #expect(IPv6Address(text) == nil, "\(text.debugDescription) should not parse")
            #expect(IPAddress(text) == nil || IPv4Address(text) != nil, "\(text.debugDescription)")
        }
    }

    @Test("the parser agrees with the C library's inet_pton on 20,000 generated strings, and never traps")
    func agreesWithInetPton() {
        // Pieces an address is made of, and some that break it, joined by separators that may or
        // may not belong: valid and nearly valid text in about equal measure.
        let hex = Array("0123456789abcdefABCDEF")
        let junk = Array("g%/ -+x[]é")
        let separators = [":", ":", ":", "::", ".", ":::", ""]
        var random = SplitMix64(seed: 0x5EED_1234)
        func pick(_ n: Int) -> Int { Int(random.next() % UInt64(n)) }
        var parsed = 0
        for _ in 0..<20_000 {
            var text = pick(4) == 0 ? "::" : ""
            for index in 0..<(1 + pick(9)) {
                if index > 0 { text += separators[pick(separators.count)] }
                switch pick(10) {
                case 0: text += "\(pick(300)).\(pick(300)).\(pick(260)).\(pick(256))"
                case 1: text.append(junk[pick(junk.count)])
                case 2: text += "0" + String(pick(10))
                default: text += String((0..<(1 + pick(5))).map { _ in hex[pick(hex.count)] })
                }
            }
            if pick(8) == 0 { text += "::" }
            let ours = IPv6Address(text)
            #expect(ours?.octets == Self.inetPton(text), "\(text.debugDescription)")
            if let ours {
                parsed += 1
                #expect(IPv6Address(ours.description) == ours)
            }
        }
        #expect(parsed > 500)
    }

    @Test("random addresses (many with zero runs) round-trip through text, and print as inet_ntop does")
    func roundTrip() {
        var random = SplitMix64(seed: 42)
        for _ in 0..<5_000 {
            // Groups are zero half the time, so runs of every length and position occur.
            let groups = (0..<8).map { _ in random.next() % 2 == 0 ? 0 : UInt16(truncatingIfNeeded: random.next() >> (random.next() % 16)) }
            let address = IPv6Address(groups[0], groups[1], groups[2], groups[3], groups[4], groups[5], groups[6], groups[7])
            #expect(address.groups == groups)
            #expect(IPv6Address(address.description) == address, "\(address)")
            #expect(IPv6Address(octets: address.octets) == address)
            // glibc's inet_ntop writes IPv4-compatible addresses (::a.b.c.d) in mixed form, which
            // RFC 5952 does not ask for: compare everywhere else.
            if address.high != 0 || address.low >> 32 != 0 || address.ipv4Mapped != nil {
                #expect(address.description == Self.inetNtop(address.octets), "\(address.groups)")
            }
        }
    }

    @Test("octets, groups, halves and the IPv4-mapped form")
    func components() throws {
        let address = try #require(IPv6Address("2001:db8::ff00:42:8329"))
        #expect(address.high == 0x2001_0db8_0000_0000 && address.low == 0x0000_ff00_0042_8329)
        #expect(address.groups == [0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329])
        #expect(address.octets == [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0x42, 0x83, 0x29])
        #expect(IPv6Address(octets: address.octets) == address)
        #expect(IPv6Address(octets: [UInt8](repeating: 0, count: 15)) == nil)
        #expect(IPv6Address(octets: [UInt8](repeating: 0, count: 17)) == nil)
        #expect(IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329) == address)
        let mapped = IPv6Address(ipv4Mapped: IPv4Address(192, 0, 2, 1))
        #expect(mapped.description == "::ffff:192.0.2.1")
        #expect(mapped.ipv4Mapped == IPv4Address(192, 0, 2, 1))
        #expect(address.ipv4Mapped == nil)
        #expect(IPv6Address("::1.2.3.4")?.ipv4Mapped == nil)
    }

    @Test("predicates: unspecified, loopback, multicast, link-local")
    func predicates() {
        #expect(IPv6Address.any.isUnspecified && IPv6Address.unspecified == .any && IPv6Address.any.description == "::")
        #expect(IPv6Address.loopback.isLoopback && IPv6Address.loopback.description == "::1")
        #expect(!IPv6Address.loopback.isUnspecified && !IPv6Address.any.isLoopback)
        for text in ["fe80::1", "fe80::", "febf:ffff::1", "fe80::1:2:3:4"] { #expect(IPv6Address(text)?.isLinkLocal == true, "\(text)") }
        for text in ["fec0::1", "fe7f::1", "ff02::1", "::1", "2001:db8::1"] { #expect(IPv6Address(text)?.isLinkLocal == false, "\(text)") }
        for text in ["ff02::1", "ff00::", "ff05::1:3", "ffff::"] { #expect(IPv6Address(text)?.isMulticast == true, "\(text)") }
        for text in ["fe80::1", "2001:db8::1", "::"] { #expect(IPv6Address(text)?.isMulticast == false, "\(text)") }
    }

    @Test("ordering is numeric")
    func ordering() throws {
        let sorted = ["::", "::1", "::ffff:1.2.3.4", "1::", "2001:db8::1", "2001:db8::2", "fe80::1", "ff02::1"]
        let addresses = try sorted.map { try #require(IPv6Address($0)) }
        #expect(addresses.shuffled().sorted() == addresses)
    }

    /// The C library's parse of `text` as IPv6, as 16 octets, or nil.
    static func inetPton(_ text: String) -> [UInt8]? {
        var raw = in6_addr()
        guard inet_pton(AF_INET6, text, &raw) == 1 else { return nil }
        return withUnsafeBytes(of: raw) { Array($0) }
    }

    /// The C library's text for 16 octets.
    static func inetNtop(_ octets: [UInt8]) -> String {
        var raw = in6_addr()
        withUnsafeMutableBytes(of: &raw) { bytes in
            for (index, octet) in octets.enumerated() { bytes[index] = octet }
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        _ = inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

@Suite("IPAddress: either family")
struct IPAddressTests {
    @Test("parses either family; family, accessors and text")
    func parse() throws {
        let v4 = try #require(IPAddress("192.168.65.1"))
        #expect(v4 == .v4(IPv4Address(192, 168, 65, 1)))
        #expect(v4.family == .v4 && v4.ipv4 == IPv4Address(192, 168, 65, 1) && v4.ipv6 == nil)
        #expect(v4.description == "192.168.65.1")
        let v6 = try #require(IPAddress("2001:DB8::1"))
        #expect(v6.family == .v6 && v6.ipv4 == nil && v6.ipv6 == IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
        #expect(v6.description == "2001:db8::1")
        // An IPv4-mapped address stays IPv6.
        let mapped = try #require(IPAddress("::ffff:10.0.0.1"))
        #expect(mapped.family == .v6 && mapped.ipv4 == nil && mapped.ipv6?.ipv4Mapped == IPv4Address(10, 0, 0, 1))
        #expect(IPAddress.Family.v4.description == "IPv4" && IPAddress.Family.v6.description == "IPv6")
        for text in ["", "1.2.3", "256.1.1.1", "localhost", "::g", "1.2.3.4:80", "[::1]", "::1%lo"] {
            #expect(IPAddress(text) == nil, "\(text)")
        }
    }

    @Test("predicates and the well-known addresses of each family")
    func predicates() {
        #expect(IPAddress.any(.v4) == .v4(.any) && IPAddress.any(.v6) == .v6(.any))
        #expect(IPAddress.loopback(.v4) == .v4(IPv4Address(127, 0, 0, 1)) && IPAddress.loopback(.v6) == .v6(.loopback))
        #expect(IPAddress.any(.v4).isUnspecified && IPAddress.any(.v6).isUnspecified)
        #expect(IPAddress.loopback(.v4).isLoopback && IPAddress.loopback(.v6).isLoopback)
        #expect(IPAddress.v4(IPv4Address(127, 9, 9, 9)).isLoopback)
        #expect(IPAddress.v4(IPv4Address(224, 0, 0, 1)).isMulticast && IPAddress("ff02::1")?.isMulticast == true)
        #expect(!IPAddress.v4(IPv4Address(10, 0, 0, 1)).isMulticast && !IPAddress.v4(IPv4Address(10, 0, 0, 1)).isLoopback)
    }

    @Test("orders IPv4 before IPv6, numerically within a family; hashes by value")
    func orderingAndHashing() throws {
        let sorted: [IPAddress] = [
            .v4(IPv4Address(0, 0, 0, 0)), .v4(IPv4Address(10, 0, 0, 1)), .v4(IPv4Address(255, 255, 255, 255)),
            .v6(.any), .v6(.loopback), try #require(IPAddress("fe80::1")),
        ]
        #expect(sorted.reversed().sorted() == sorted)
        // 0.0.0.1 and ::1 differ although their bits are alike.
        #expect(IPAddress.v4(IPv4Address(rawValue: 1)) != .v6(.loopback))
        #expect(Set(sorted + sorted).count == sorted.count)
    }
}
