import Foundation
import NIOCore
import Testing
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv4
import VPNKitStack
import VPNKitTransport

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures")

/// A frame's bytes with the fields that must differ between two implementations zeroed: the IP
/// identification and, because it covers it, the IP header checksum.
func normalized(_ frame: ByteBuffer) -> [UInt8] {
    var bytes = frame.readableByteArray
    guard let e = try? EthernetFrame(frame), e.etherType == .ipv4 else { return bytes }
    let ip = e.headerLength
    bytes[ip + 4] = 0; bytes[ip + 5] = 0
    bytes[ip + 10] = 0; bytes[ip + 11] = 0
    return bytes
}

func hasIPOptions(_ frame: ByteBuffer) -> Bool {
    guard let e = try? EthernetFrame(frame), e.etherType == .ipv4, let p = try? IPv4Packet(e.payload) else { return false }
    return p.headerLength > 20
}

@Suite("Pcap replay against the stack")
struct ReplayTests {
    /// Replays the frames that one host sent in a kernel capture to a stack standing in for the
    /// other host, and compares the stack's answers with what the kernel answered, frame by frame.
    func replay(_ name: String, stackIP: IPv4Address, stackMAC: MACAddress, subnet: IPv4Subnet, skip: @escaping (ByteBuffer) -> Bool = { _ in false }) throws -> (ours: [ByteBuffer], kernel: [ByteBuffer]) {
        let path = fixtures.appendingPathComponent(name).path
        var configuration = StackConfiguration(macAddress: stackMAC, subnet: subnet, gateway: stackIP)
        configuration.gratuitousARPOnStart = false
        let stack = NetworkStack(configuration: configuration)
        let replay = try PcapReplayTransport(path: path)
        var kernel: [ByteBuffer] = []
        var skipping = false
        replay.onFrame = { frame in
            guard let e = try? EthernetFrame(frame) else { return }
            if e.source == stackMAC {
                // The kernel's own answer: the expectation (unless it answers a skipped request).
                if !skipping { kernel.append(frame) }
                return
            }
            guard e.etherType == .ipv4 || e.etherType == .arp else { return }  // IPv6 is not ours
            skipping = skip(frame)
            if skipping { return }
            stack.receive(frame, now: replay.now)
            for out in stack.takeOutput() { replay.send(out) }
        }
        while replay.step() != nil {}
        return (replay.transmitted.map(\.frame), kernel)
    }

    @Test("ping.pcap: ARP and echo replies (fragmented ones included) match the kernel's, frame by frame")
    func ping() throws {
        let (ours, kernel) = try replay(
            "ping.pcap", stackIP: IPv4Address(10, 200, 2, 2), stackMAC: MACAddress("02:00:00:00:00:0b")!,
            subnet: IPv4Subnet("10.200.2.0/24")!, skip: hasIPOptions)
        #expect(ours.count == kernel.count)
        #expect(ours.count > 50)
        for (index, (mine, theirs)) in zip(ours, kernel).enumerated() {
            #expect(normalized(mine) == normalized(theirs), "frame \(index + 1) of the answers")
        }
    }

    @Test("udp.pcap: the port-unreachable answer matches the kernel's")
    func udpClosedPort() throws {
        // Only the datagram to the closed port (9): the kernel had a server on 7777.
        let (ours, kernel) = try replay(
            "udp.pcap", stackIP: IPv4Address(10, 200, 4, 2), stackMAC: MACAddress("02:00:00:00:00:0b")!,
            subnet: IPv4Subnet("10.200.4.0/24")!,
            skip: { frame in
                guard let e = try? EthernetFrame(frame), e.etherType == .ipv4, let p = try? IPv4Packet(e.payload) else { return false }
                return p.protocol == .udp && p.payload.loadU16(at: 2) != 9
            })
        try #require(ours.count == kernel.count)
        #expect(ours.count == 2)  // ARP reply, ICMP port unreachable
        for (mine, theirs) in zip(ours, kernel) { #expect(normalized(mine) == normalized(theirs)) }
    }
}
