import NIOCore
import Testing
import VPNKitARP
import VPNKitBase
import VPNKitEthernet

@Suite("Ethernet")
struct EthernetTests {
    let frameBytes = hex("ffffffffffff 525400123456 0806") + [UInt8](repeating: 0xAB, count: 46)

    @Test func deconstruct() throws {
        let frame = try EthernetFrame(buffer(frameBytes))
        #expect(frame.destination == .broadcast)
        #expect(frame.source == MACAddress("52:54:00:12:34:56"))
        #expect(frame.etherType == .arp)
        #expect(frame.vlan == nil)
        #expect(frame.headerLength == 14)
        #expect(frame.payload.count == 46)
    }

    @Test("an 802.1Q tag is recognised and reported; the type is the inner one")
    func vlan() throws {
        let tagged = hex("020000000001 020000000002 8100 a005 0800") + [UInt8](repeating: 0, count: 20)
        let frame = try EthernetFrame(buffer(tagged))
        #expect(frame.vlan?.id == 5)
        #expect(frame.vlan?.priority == 5)
        #expect(frame.vlan?.dropEligible == false)
        #expect(frame.etherType == .ipv4)
        #expect(frame.headerLength == 18)
        #expect(frame.payload.count == 20)
        var out = ByteBuffer.withHeadroom(capacity: 20)
        out.writeBytes([UInt8](repeating: 0, count: 20))
        EthernetHeader(parsing: frame).prepend(to: &out)
        #expect(out.readableByteArray == tagged)
    }

    @Test("truncated headers are typed errors")
    func truncated() {
        #expect(throws: WireError.truncated(needed: 14, available: 13)) { try EthernetFrame(buffer(Array(frameBytes.prefix(13)))) }
        #expect(throws: WireError.truncated(needed: 14, available: 0)) { try EthernetFrame(ByteBuffer()) }
        let shortTag = hex("020000000001 020000000002 8100 00")
        #expect(throws: WireError.truncated(needed: 18, available: 15)) { try EthernetFrame(buffer(shortTag)) }
    }

    @Test func construct() {
        var payload = ByteBuffer.withHeadroom(capacity: 46)
        payload.writeBytes([UInt8](repeating: 0xAB, count: 46))
        let header = EthernetHeader(destination: .broadcast, source: MACAddress("52:54:00:12:34:56")!, etherType: .arp)
        header.prepend(to: &payload)
        #expect(payload.readableByteArray == frameBytes)
    }
}

@Suite("ARP")
struct ARPTests {
    // who-has 10.0.0.2 tell 10.0.0.1, from 52:54:00:12:34:56
    let request = hex("0001 0800 06 04 0001 525400123456 0a000001 000000000000 0a000002")

    @Test func deconstruct() throws {
        let arp = try ARPPacket(buffer(request))
        #expect(arp.operation == .request)
        #expect(arp.senderHardwareAddress == MACAddress("52:54:00:12:34:56"))
        #expect(arp.senderProtocolAddress == IPv4Address(10, 0, 0, 1))
        #expect(arp.targetHardwareAddress == .zero)
        #expect(arp.targetProtocolAddress == IPv4Address(10, 0, 0, 2))
    }

    @Test func construct() {
        var out = ByteBuffer.withHeadroom(capacity: 0)
        ARPHeader(
            operation: .request, senderHardwareAddress: MACAddress("52:54:00:12:34:56")!,
            senderProtocolAddress: IPv4Address(10, 0, 0, 1), targetHardwareAddress: .zero,
            targetProtocolAddress: IPv4Address(10, 0, 0, 2)
        ).prepend(to: &out)
        #expect(out.readableByteArray == request)
    }

    @Test("odd hardware and protocol kinds and lengths are rejected by name")
    func badFields() {
        var bytes = request
        bytes[1] = 6  // IEEE 802 hardware type
        #expect(throws: WireError.unsupported(field: "hardware type", value: 6)) { try ARPPacket(buffer(bytes)) }
        bytes = request
        bytes[2] = 0x86; bytes[3] = 0xDD
        #expect(throws: WireError.unsupported(field: "protocol type", value: 0x86DD)) { try ARPPacket(buffer(bytes)) }
        bytes = request
        bytes[4] = 255
        #expect(throws: WireError.unsupported(field: "hardware length", value: 255)) { try ARPPacket(buffer(bytes)) }
        bytes = request
        bytes[5] = 16
        #expect(throws: WireError.unsupported(field: "protocol length", value: 16)) { try ARPPacket(buffer(bytes)) }
        #expect(throws: WireError.truncated(needed: 28, available: 27)) { try ARPPacket(buffer(Array(request.prefix(27)))) }
        #expect(throws: WireError.truncated(needed: 8, available: 3)) { try ARPPacket(buffer(Array(request.prefix(3)))) }
    }
}
