// A guest on the IPv6 side of the link, for the stack's tests: it builds the frames a Linux guest
// sends (neighbour discovery, pings, UDP) and reads the stack's answers.

import NIOCore
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv6
import VPNKitStack
import VPNKitUDP

let prefix6 = IPv6Address("fd00:65::")!
let gateway6 = IPv6Address("fd00:65::1")!
let gatewayLinkLocal = IPv6Address("fe80::1")!
let guest6 = IPv6Address("fd00:65::3")!
let guestLinkLocal = IPv6Address("fe80::50:ff:fe00:3")!

/// A stack with IPv6 on (the defaults: fd00:65::/64) and no gratuitous ARP at start.
func ipv6Stack(_ configure: (inout IPv6LinkConfiguration) -> Void = { _ in }) -> NetworkStack {
    var configuration = StackConfiguration()
    var link = IPv6LinkConfiguration()
    link.advertisementSeed = 7
    configure(&link)
    configuration.ipv6 = link
    configuration.gratuitousARPOnStart = false
    return NetworkStack(configuration: configuration)
}

/// One IPv6 packet the stack sent, with its frame's link addresses.
struct SentIPv6 {
    var linkDestination: MACAddress
    var packet: IPv6Packet
    var chain: IPv6HeaderChain

    /// The upper-layer bytes.
    var upper: ByteView { packet.bytes.view(from: chain.upperLayerOffset, length: 40 + packet.payloadLength - chain.upperLayerOffset) }
    var icmp: ICMPv6Packet? { chain.upperLayer == .icmpv6 ? try? ICMPv6Packet(upper) : nil }
    var ndp: NDPMessage? { icmp.flatMap { try? NDPMessage(parsing: $0) } }
}

/// The IPv6 packets among `frames`.
func ipv6Packets(in frames: [ByteBuffer]) -> [SentIPv6] {
    frames.compactMap { frame in
        guard let ethernet = try? EthernetFrame(frame), ethernet.etherType == .ipv6, let packet = try? IPv6Packet(ethernet.payload),
            let chain = try? packet.headerChain()
        else { return nil }
        return SentIPv6(linkDestination: ethernet.destination, packet: packet, chain: chain)
    }
}

struct Guest6 {
    var mac = guestMAC
    var address = guest6

    /// An Ethernet frame carrying an IPv6 packet around `upper` (which has its header and checksum).
    func frame(_ upper: ByteBuffer, nextHeader: IPProtocol, from source: IPv6Address? = nil, to destination: IPv6Address,
               hopLimit: UInt8 = 64, linkDestination: MACAddress = gatewayMAC) -> ByteBuffer {
        var packet = upper
        IPv6Header(source: source ?? address, destination: destination, nextHeader: nextHeader, hopLimit: hopLimit).prepend(to: &packet)
        EthernetHeader(destination: linkDestination, source: mac, etherType: .ipv6).prepend(to: &packet)
        return packet
    }

    func ndp(_ message: NDPMessage, from source: IPv6Address? = nil, to destination: IPv6Address, hopLimit: UInt8 = 255) -> ByteBuffer {
        var body = ByteBuffer()
        message.prepend(to: &body, source: source ?? address, destination: destination)
        let linkDestination = destination.isMulticast ? destination.multicastMAC : gatewayMAC
        return frame(body, nextHeader: .icmpv6, from: source, to: destination, hopLimit: hopLimit, linkDestination: linkDestination)
    }

    func routerSolicitation(from source: IPv6Address = guestLinkLocal) -> ByteBuffer {
        ndp(.routerSolicitation(options: source.isUnspecified ? [] : [.sourceLinkLayerAddress(mac)]), from: source, to: .allRouters)
    }

    func neighborSolicitation(for target: IPv6Address, hopLimit: UInt8 = 255) -> ByteBuffer {
        ndp(.neighborSolicitation(target: target, options: [.sourceLinkLayerAddress(mac)]), to: target.solicitedNode, hopLimit: hopLimit)
    }

    func duplicateAddressProbe(for target: IPv6Address) -> ByteBuffer {
        ndp(.neighborSolicitation(target: target, options: []), from: .unspecified, to: target.solicitedNode)
    }

    func neighborAdvertisement(solicited: Bool, to destination: IPv6Address = gateway6) -> ByteBuffer {
        ndp(
            .neighborAdvertisement(
                NDPNeighborAdvertisement(
                    router: false, solicited: solicited, override: true, target: address, options: [.targetLinkLayerAddress(mac)])),
            to: destination)
    }

    func echoRequest(size: Int, identifier: UInt16 = 0x77, sequence: UInt16 = 1, to destination: IPv6Address = gateway6) -> ByteBuffer {
        var body = ByteBuffer(bytes: (0..<size).map { UInt8(truncatingIfNeeded: $0) })
        ICMPv6Header.echo(reply: false, identifier: identifier, sequenceNumber: sequence).prepend(to: &body, source: address, destination: destination)
        return frame(body, nextHeader: .icmpv6, to: destination)
    }

    func udp(_ payload: [UInt8], from port: UInt16 = 40000, to destinationPort: UInt16, destination: IPv6Address = gateway6, checksum: Bool = true) -> ByteBuffer {
        var body = ByteBuffer(bytes: payload)
        var header = UDPHeader(sourcePort: port, destinationPort: destinationPort)
        header.checksumEnabled = checksum
        header.prepend(to: &body, source: .v6(address), destination: .v6(destination))
        return frame(body, nextHeader: .udp, to: destination)
    }

    /// `packet` (a whole IPv6 packet in a frame) cut into fragments of at most `mtu` bytes.
    func fragments(of frame: ByteBuffer, mtu: Int, identification: UInt32 = 0x1234) -> [ByteBuffer] {
        guard let ethernet = try? EthernetFrame(frame), let packet = try? IPv6Packet(ethernet.payload) else { return [] }
        let header = IPv6Header(parsing: packet)
        let payload = packet.payload
        let chunk = (mtu - 48) & ~7
        var frames: [ByteBuffer] = []
        var offset = 0
        while offset < payload.count {
            let length = min(chunk, payload.count - offset)
            var piece = ByteBuffer(bytes: payload.view(from: offset, length: length).array)
            IPv6FragmentHeader(nextHeader: header.nextHeader, offset: offset, moreFragments: offset + length < payload.count, identification: identification)
                .prepend(to: &piece)
            var fragmentHeader = header
            fragmentHeader.nextHeader = .ipv6Fragment
            fragmentHeader.prepend(to: &piece)
            EthernetHeader(destination: gatewayMAC, source: mac, etherType: .ipv6).prepend(to: &piece)
            frames.append(piece)
            offset += length
        }
        return frames
    }
}
