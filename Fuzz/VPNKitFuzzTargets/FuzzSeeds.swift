import NIOCore
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv4
import VPNKitPcap
import VPNKitTransport
import VPNKitUDP

/// Seed inputs for every target, cut from real captures: each Ethernet frame seeds `ethernet`, its
/// ARP, IPv4, ICMP, UDP, TCP, DHCP and DNS layers seed those targets, the frames framed as qemu and
/// vmnet streams seed the framing targets, and the capture as a whole (frames with clock ticks)
/// seeds `stack`.
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
            guard ethernet.etherType == .ipv4 else { continue }
            seeds[.ipv4, default: []].append(payload)
            guard let ip = try? IPv4Packet(ethernet.payload), !ip.isFragment else { continue }
            let transport = [UInt8](ip.payload.buffer.readableBytesView)
            switch ip.protocol {
            case .icmp: seeds[.icmp, default: []].append(transport)
            case .tcp: seeds[.tcp, default: []].append(transport)
            case .udp:
                seeds[.udp, default: []].append(transport)
                guard let udp = try? UDPDatagram(ip.payload) else { continue }
                let body = [UInt8](udp.payload.buffer.readableBytesView)
                let ports = [udp.sourcePort, udp.destinationPort]
                if ports.contains(67) || ports.contains(68) { seeds[.dhcp, default: []].append(body) }
                if ports.contains(53) { seeds[.dns, default: []].append(body) }
            default: break
            }
        }
        if !stackInput.isEmpty { seeds[.stack, default: []].append(stackInput) }
        if frames > 0 {
            seeds[.qemu, default: []].append(qemu)
            seeds[.vmnet, default: []].append(vmnet)
        }
        return seeds
    }
}
