import NIOCore
import Testing
import VPNKitBase

/// Packets made by the Linux kernel (6.x), captured with an AF_PACKET socket and pasted here as
/// the IP packet (link header removed). None was sent anywhere but between network namespaces
/// created for the capture:
///
/// - UDP over IPv6 and over IPv4: two namespaces made with `ip netns add`, joined by a veth pair
///   (fd00:5afe::1/64 ↔ fd00:5afe::2/64; 10.77.0.1/24 ↔ 10.77.0.2/24). Transmit checksum offload
///   was turned off on the sending end (the ETHTOOL_STXCSUM ioctl, as `ethtool -K vA tx off`), so
///   the kernel computed the whole checksum in software; a Python UDP socket bound to port 40000
///   sent "SwiftVPNKit IPv6 pseudo-header" (or "…IPv4…") to port 5353, captured on the receiving end.
/// - ICMPv6 echo reply: `unshare -n`, `ip link set lo up`, `ping -6 -c 1 -s 16 ::1`; the reply is
///   the kernel's own (icmpv6_echo_reply), captured on lo. (A UDP datagram on lo cannot serve: its
///   checksum is left partial, offloaded.)
enum KernelPackets {
    static let udp6 = bytes(
        "60049ffc00261140fd005afe000000000000000000000001fd005afe0000000000000000000000029c4014e90026f640"
            + "537769667456504e4b697420495076362070736575646f2d686561646572")
    static let icmp6EchoReply = bytes(
        "60093af000183a40000000000000000000000000000000010000000000000000000000000000000181"
            + "00d09b57db00015c40166b00000000d7870c0000000000")
    static let udp4 = bytes(
        "4500003a1b06400040110b110a4d00010a4d00029c4014e9002691a7537769667456504e4b697420495076342070736575646f2d686561646572")

    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16) ?? 0)
            index = next
        }
        return out
    }
}

@Suite("IPPseudoHeader: transport checksums for either family")
struct PseudoHeaderTests {
    /// The pseudo-header of an IPv6 packet (no extension headers) and its upper-layer bytes.
    static func ipv6(_ packet: [UInt8]) throws -> (IPPseudoHeader, [UInt8]) {
        let source = try #require(IPv6Address(octets: packet[8..<24]))
        let destination = try #require(IPv6Address(octets: packet[24..<40]))
        let length = Int(packet[4]) << 8 | Int(packet[5])
        let header = IPPseudoHeader(
            source: .v6(source), destination: .v6(destination), protocol: IPProtocol(rawValue: packet[6]), length: length)
        return (header, Array(packet[40..<(40 + length)]))
    }

    /// The checksum `header` computes over `transport` with its checksum field (at `field`) zeroed.
    static func computed(_ header: IPPseudoHeader, _ transport: [UInt8], field: Int) -> UInt16 {
        var zeroed = transport
        zeroed[field] = 0
        zeroed[field + 1] = 0
        var c = header.checksum
        c.add(ByteBuffer(bytes: zeroed))
        return c.value
    }

    @Test("UDP over IPv6 from the Linux kernel: verifies, and recomputes to the kernel's value")
    func kernelUDP6() throws {
        let (header, udp) = try Self.ipv6(KernelPackets.udp6)
        #expect(header.protocol == .udp && header.length == 38)
        #expect(header.source.description == "fd00:5afe::1" && header.destination.description == "fd00:5afe::2")
        #expect(header.verifies(ByteView(ByteBuffer(bytes: udp))))
        #expect(Self.computed(header, udp, field: 6) == 0xF640)
        // Any change to the addresses, the length or the next header breaks it.
        var other = header
        other.destination = .v6(IPv6Address(0xfd00, 0x5afe, 0, 0, 0, 0, 0, 3))
        #expect(!other.verifies(ByteView(ByteBuffer(bytes: udp))))
        other = header
        other.protocol = .tcp
        #expect(!other.verifies(ByteView(ByteBuffer(bytes: udp))))
        other = header
        other.length += 0x1_0000
        #expect(!other.verifies(ByteView(ByteBuffer(bytes: udp))), "the upper-layer length is 32 bits")
    }

    @Test("ICMPv6 echo reply from the Linux kernel: verifies, and recomputes to the kernel's value")
    func kernelICMPv6() throws {
        let (header, icmp) = try Self.ipv6(KernelPackets.icmp6EchoReply)
        #expect(header.protocol == .icmpv6 && header.protocol.description == "ICMPv6")
        #expect(header.source == .v6(.loopback) && header.destination == .v6(.loopback))
        #expect(icmp[0] == 129)
        #expect(header.verifies(ByteView(ByteBuffer(bytes: icmp))))
        #expect(Self.computed(header, icmp, field: 2) == 0xD09B)
    }

    @Test("UDP over IPv4 from the Linux kernel: the IPv4 sum is the 12-byte RFC 768 form, unchanged")
    func kernelUDP4() throws {
        let packet = KernelPackets.udp4
        let source = IPv4Address(packet[12], packet[13], packet[14], packet[15])
        let destination = IPv4Address(packet[16], packet[17], packet[18], packet[19])
        let udp = Array(packet[20...])
        let header = IPPseudoHeader(source: .v4(source), destination: .v4(destination), protocol: .udp, length: udp.count)
        #expect(header.verifies(ByteView(ByteBuffer(bytes: udp))))
        #expect(Self.computed(header, udp, field: 6) == 0x91A7)
        // The sum is exactly the RFC 768 pseudo-header's: addresses, zero, protocol, 16-bit length.
        let twelve = source.octets + destination.octets + [0, 17, UInt8(udp.count >> 8), UInt8(udp.count & 0xFF)]
        var reference = InternetChecksum()
        reference.add(ByteBuffer(bytes: twelve))
        #expect(header.checksum == reference)
    }

    @Test("the IPv4 pseudo-header sums the same as before for random headers (four additions)")
    func ipv4Unchanged() {
        var random = SplitMix64(seed: 7)
        for _ in 0..<2_000 {
            let source = IPv4Address(rawValue: UInt32(truncatingIfNeeded: random.next()))
            let destination = IPv4Address(rawValue: UInt32(truncatingIfNeeded: random.next()))
            let proto = IPProtocol(rawValue: UInt8(truncatingIfNeeded: random.next()))
            let length = Int(random.next() % 70_000)
            let header = IPPseudoHeader(source: .v4(source), destination: .v4(destination), protocol: proto, length: length)
            // What IPv4PseudoHeader.checksum did.
            var before = InternetChecksum()
            before.add(source.rawValue)
            before.add(destination.rawValue)
            before.add(UInt16(proto.rawValue))
            before.add(UInt16(truncatingIfNeeded: length))
            #expect(header.checksum == before)
        }
    }

    @Test("the IPv6 sum is RFC 8200 §8.1's 40-byte pseudo-header")
    func ipv6Layout() {
        var random = SplitMix64(seed: 8)
        for _ in 0..<2_000 {
            let source = IPv6Address(high: random.next(), low: random.next())
            let destination = IPv6Address(high: random.next(), low: random.next())
            let length = Int(random.next() % 0x1_0000_0000)
            let header = IPPseudoHeader(source: .v6(source), destination: .v6(destination), protocol: .udp, length: length)
            let forty = source.octets + destination.octets
                + [UInt8(length >> 24 & 0xFF), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
                + [0, 0, 0, 17]
            var reference = InternetChecksum()
            reference.add(ByteBuffer(bytes: forty))
            #expect(header.checksum == reference)
        }
    }

    @Test("mixed families are summed as IPv6 with the IPv4 address mapped (defined, no trap)")
    func mixedFamilies() {
        let v4 = IPv4Address(10, 0, 0, 1)
        let v6 = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
        let mixed = IPPseudoHeader(source: .v4(v4), destination: .v6(v6), protocol: .tcp, length: 20)
        let mapped = IPPseudoHeader(source: .v6(IPv6Address(ipv4Mapped: v4)), destination: .v6(v6), protocol: .tcp, length: 20)
        #expect(mixed.checksum == mapped.checksum)
    }
}
