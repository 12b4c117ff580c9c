import NIOCore
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv4
import VPNKitIPv6
import VPNKitPcap
import VPNKitTransport
import VPNKitUDP

/// Seed inputs for every target, cut from real captures: each Ethernet frame seeds `ethernet`, its
/// ARP, IPv4, IPv6, ICMP, ICMPv6, UDP, TCP, DHCP and DNS layers seed those targets (neighbour
/// discovery messages seed `ndp`, IPv6 packets `decode` as well), the frames framed as qemu and vmnet
/// streams seed the framing targets, and the capture as a whole (frames with clock ticks) seeds
/// `stack`.
public enum FuzzSeeds {
    /// The seeds of one capture file (empty when it cannot be read or is not Ethernet).
    public static func extract(fromCapture path: String, maximumFrames: Int = 2000) -> [FuzzTarget: [[UInt8]]] {
        guard let reader = try? PcapReader(path: path), reader.linkType == .ethernet else { return [:] }
        var seeds: [FuzzTarget: [[UInt8]]] = [:]
        var stackInput: [UInt8] = []
        var qemu: [UInt8] = [64]
        var vmnet: [UInt8] = [64]
        var handshake = ByteBuffer()
        VmnetInitMessage.ours.write(to: &handshake)
        vmnet += handshake.readableBytesView
        // The ethernet command: type 1, a UUID as 36 ASCII characters, padding to 41 bytes.
        vmnet += [1] + Array("c0ffee00-1234-4abc-8def-0123456789ab".utf8) + [0, 0, 0, 0]
        var frames = 0
        while let record = reader.next(), frames < maximumFrames {
            frames += 1
            let frame = record.data
            let bytes = [UInt8](frame.readableBytesView)
            seeds[.ethernet, default: []].append(bytes)
            if stackInput.count < 256 << 10 {
                stackInput += [1, UInt8(truncatingIfNeeded: bytes.count >> 8), UInt8(truncatingIfNeeded: bytes.count)] + bytes
            }
            if qemu.count < 64 << 10 {
                qemu += [UInt8(truncatingIfNeeded: bytes.count >> 24), UInt8(truncatingIfNeeded: bytes.count >> 16),
                         UInt8(truncatingIfNeeded: bytes.count >> 8), UInt8(truncatingIfNeeded: bytes.count)] + bytes
                vmnet += [UInt8(truncatingIfNeeded: bytes.count), UInt8(truncatingIfNeeded: bytes.count >> 8)] + bytes
            }
            guard let ethernet = try? EthernetFrame(frame) else { continue }
            let payload = [UInt8](ethernet.payload.buffer.readableBytesView)
            if ethernet.etherType == .arp { seeds[.arp, default: []].append(payload) }
            if ethernet.etherType == .ipv6 {
                seeds[.ipv6, default: []].append(payload)
                seeds[.decode, default: []].append(payload)
                addIPv6Seeds(ethernet.payload, to: &seeds)
                continue
            }
            guard ethernet.etherType == .ipv4 else { continue }
            seeds[.ipv4, default: []].append(payload)
            guard let ip = try? IPv4Packet(ethernet.payload), !ip.isFragment else { continue }
            addTransportSeeds(ip.protocol, ip.payload, to: &seeds)
        }
        if !stackInput.isEmpty { seeds[.stack, default: []].append(stackInput) }
        if frames > 0 {
            seeds[.qemu, default: []].append(qemu)
            seeds[.vmnet, default: []].append(vmnet)
        }
        return seeds
    }

    /// The upper layer of an unfragmented IPv6 packet seeds its target (and `ndp` for RS, RA, NS, NA).
    static func addIPv6Seeds(_ bytes: ByteView, to seeds: inout [FuzzTarget: [[UInt8]]]) {
        guard let packet = try? IPv6Packet(bytes), let chain = try? packet.headerChain(), chain.fragment?.isAtomic ?? true else { return }
        let upper = packet.bytes.view(from: chain.upperLayerOffset, length: IPv6Packet.headerLength + packet.payloadLength - chain.upperLayerOffset)
        if chain.upperLayer == .icmpv6 {
            let message = [UInt8](upper.buffer.readableBytesView)
            seeds[.icmpv6, default: []].append(message)
            if let type = message.first, (133...136).contains(type) { seeds[.ndp, default: []].append(message) }
        } else {
            addTransportSeeds(chain.upperLayer, upper, to: &seeds)
        }
    }

    /// An ICMP, TCP or UDP payload of either family seeds its target, and a UDP datagram's payload
    /// seeds `dhcp` (ports 67, 68, and DHCPv6's 546, 547) or `dns` (port 53).
    static func addTransportSeeds(_ proto: IPProtocol, _ payload: ByteView, to seeds: inout [FuzzTarget: [[UInt8]]]) {
        let transport = [UInt8](payload.buffer.readableBytesView)
        switch proto {
        case .icmp: seeds[.icmp, default: []].append(transport)
        case .tcp: seeds[.tcp, default: []].append(transport)
        case .udp:
            seeds[.udp, default: []].append(transport)
            guard let udp = try? UDPDatagram(payload) else { return }
            let body = [UInt8](udp.payload.buffer.readableBytesView)
            let ports = [udp.sourcePort, udp.destinationPort]
            if ports.contains(67) || ports.contains(68) || ports.contains(546) || ports.contains(547) { seeds[.dhcp, default: []].append(body) }
            if ports.contains(53) { seeds[.dns, default: []].append(body) }
        default: break
        }
    }
}
