import NIOCore
import VPNKitARP
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv4
import VPNKitStack
import VPNKitTransport
import VPNKitUDP
import VPNKitTCP

let subnet = IPv4Subnet("192.168.65.0/24")!
let gatewayIP = IPv4Address(192, 168, 65, 1)
let guestIP = IPv4Address(192, 168, 65, 3)
let gatewayMAC = MACAddress(rawValue: 0x5A94_EFE4_0CEE)
let guestMAC = MACAddress(rawValue: 0x0250_0000_0003)
let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

func seconds(_ s: Double) -> TimeAmount { .nanoseconds(Int64(s * 1e9)) }

/// Two stacks on an in-memory link under a virtual clock: the "gateway" (192.168.65.1) and a
/// "guest" stack (192.168.65.3). Everything is driven explicitly; nothing runs on its own.
final class Simulation {
    let link: InMemoryLink
    let gateway: NetworkStack
    let guest: NetworkStack
    private(set) var now = t0
    /// Frames the gateway sent with a partial checksum (finished here, as the guest's kernel would).
    private(set) var partialChecksumFrames = 0
    /// Offloaded TCP segments larger than the MTU, and the largest frame among them.
    private(set) var segmentedFrames = 0
    /// Of those, the ones marked as TCP over IPv6.
    private(set) var segmentedIPv6Frames = 0
    private(set) var largestFrame = 0
    /// Offloaded segments whose payload was not a whole number of `segmentSize` pieces (only the
    /// last piece of a send may be short, so any such segment must be the last of what was queued).
    private(set) var segmentationViolations: [String] = []

    /// With `holdACKs`, the gateway holds its ACKs as under `StackDriver`: every frame delivered at
    /// one virtual instant is one read burst, answered by one ACK per connection.
    /// With `ipv6`, both stacks also speak IPv6: the gateway at fd00:65::1, the guest at fd00:65::3
    /// (and fe80::3), each finding the other by neighbour discovery over the same faulty link.
    init(aToB: FaultConfiguration = FaultConfiguration(), bToA: FaultConfiguration = FaultConfiguration(), gatewayConfiguration: StackConfiguration? = nil, mtu: Int = 1500, congestionControl: TCPCongestionControl = .newReno, holdACKs: Bool = false, ipv6: Bool = false) {
        link = InMemoryLink(mtu: mtu, aToB: aToB, bToA: bToA, start: t0)
        var g = gatewayConfiguration ?? StackConfiguration(mtu: mtu)
        g.gratuitousARPOnStart = false
        g.tcp.congestionControl = congestionControl
        if ipv6 { g.ipv6 = IPv6LinkConfiguration() }
        gateway = NetworkStack(configuration: g)
        var c = StackConfiguration(macAddress: guestMAC, subnet: subnet, gateway: guestIP, mtu: mtu)
        c.gratuitousARPOnStart = false
        c.tcp.congestionControl = congestionControl
        if ipv6 {
            var link = IPv6LinkConfiguration()
            link.gateway = guest6
            link.linkLocal = IPv6Address(0xFE80, 0, 0, 0, 0, 0, 0, 3)
            c.ipv6 = link
        }
        guest = NetworkStack(configuration: c)
        gateway.holdsACKs = holdACKs
        link.a.onFrame = { [unowned self] frame in self.gateway.receive(frame, now: self.now) }
        link.b.onFrame = { [unowned self] frame in self.guest.receive(frame, now: self.now) }
    }

    /// Moves output of both stacks onto the link.
    func flush() {
        gateway.drainOutput { outgoing in
            var frame = outgoing.joined
            largestFrame = max(largestFrame, frame.readableBytes)
            let offload = outgoing.offload
            if offload.hasPartialChecksum {
                partialChecksumFrames += 1
                frame.completePartialChecksum(start: Int(offload.checksumStart), offset: Int(offload.checksumOffset))
            }
            if offload.segmentSize > 0 {
                segmentedFrames += 1
                if offload.ipv6 { segmentedIPv6Frames += 1 }
                let payload = frame.readableBytes - Int(offload.headerLength)
                let size = Int(offload.segmentSize)
                if payload <= size || frame.readableBytes - 14 - (offload.ipv6 ? 40 : 0) > 65_535 {
                    segmentationViolations.append("payload \(payload), segment size \(size), frame \(frame.readableBytes)")
                }
            }
            link.a.send(frame)
        }
        for frame in guest.takeOutput() { link.b.send(frame) }
    }

    /// Runs until `deadline` (virtual), handling deliveries and timers in time order.
    func run(for duration: TimeAmount) {
        let deadline = now + duration
        while true {
            flush()
            link.deliver(until: now)
            if gateway.hasHeldACKs { gateway.sendHeldACKs(now: now) }
            for stack in [gateway, guest] where (stack.nextDeadline.map { $0 <= now } ?? false) { stack.poll(now: now) }
            flush()
            if gateway.hasOutput || guest.hasOutput { continue }
            let candidates = [link.nextDelivery, gateway.nextDeadline, guest.nextDeadline].compactMap { $0 }.filter { $0 > now }
            let due = link.nextDelivery.map { $0 <= now } ?? false
            if due { continue }
            guard let next = candidates.min(), next <= deadline else {
                now = deadline
                link.deliver(until: now)
                return
            }
            now = next
        }
    }

    /// The gateway listens on `port` and writes `data` to the first connection, in writes as large
    /// as its send buffer takes (what the NAT does with a host read); `accepted` gets the socket.
    func serve(_ data: ByteBuffer, port: UInt16, accepted: @escaping (TCPSocket) -> Void = { _ in }) throws {
        var left = data
        try gateway.listenTCP(port: port) { [unowned self] socket in
            accepted(socket)
            let push = { [unowned socket] in left.moveReaderIndex(forwardBy: socket.write(left, now: self.now)) }
            socket.onWritable = push
            push()
        }
    }
}

/// Builds frames as a guest would send them, and reads the stack's answers.
struct Peer {
    var mac = guestMAC
    var ip = guestIP
    var identification: UInt16 = 100

    func arpRequest(for target: IPv4Address, from sender: IPv4Address? = nil, broadcast: Bool = true) -> ByteBuffer {
        var buffer = ByteBuffer.withHeadroom(capacity: 0)
        ARPHeader(operation: .request, senderHardwareAddress: mac, senderProtocolAddress: sender ?? ip, targetHardwareAddress: .zero, targetProtocolAddress: target).prepend(to: &buffer)
        EthernetHeader(destination: broadcast ? .broadcast : gatewayMAC, source: mac, etherType: .arp).prepend(to: &buffer)
        return buffer
    }

    /// An IPv4 datagram in a frame to the gateway; `payload` already carries its transport header.
    func ipv4(_ payload: ByteBuffer, protocol proto: IPProtocol, to destination: IPv4Address = gatewayIP, id: UInt16, dontFragment: Bool = false) -> ByteBuffer {
        var buffer = payload
        var header = IPv4Header(source: ip, destination: destination, protocol: proto, identification: id, dontFragment: dontFragment)
        header.timeToLive = 64
        header.prepend(to: &buffer)
        EthernetHeader(destination: gatewayMAC, source: mac, etherType: .ipv4).prepend(to: &buffer)
        return buffer
    }

    func echoRequest(size: Int, id: UInt16 = 7, seq: UInt16 = 1, to destination: IPv4Address = gatewayIP) -> ByteBuffer {
        var body = ByteBuffer.withHeadroom(capacity: size)
        for i in 0..<size { body.writeInteger(UInt8(truncatingIfNeeded: i &* 7 &+ 3)) }
        ICMPv4Header.echo(reply: false, identifier: id, sequenceNumber: seq).prepend(to: &body)
        return ipv4(body, protocol: .icmp, to: destination, id: identification)
    }

    func udp(_ data: [UInt8], from port: UInt16 = 40000, to destinationPort: UInt16, destination: IPv4Address = gatewayIP, id: UInt16? = nil) -> ByteBuffer {
        var body = ByteBuffer.withHeadroom(capacity: data.count)
        body.writeBytes(data)
        UDPHeader(sourcePort: port, destinationPort: destinationPort).prepend(to: &body, source: .v4(ip), destination: .v4(destination))
        return ipv4(body, protocol: .udp, to: destination, id: id ?? identification)
    }

    /// Splits a frame's IPv4 datagram into fragment frames of at most `mtu`.
    func fragments(of frame: ByteBuffer, mtu: Int) -> [ByteBuffer] {
        let ethernet = try! EthernetFrame(frame)
        let packet = try! IPv4Packet(ethernet.payload)
        return VPNKitIPv4.fragment(packet, mtu: mtu).map { piece in
            var f = piece
            EthernetHeader(parsing: ethernet).prepend(to: &f)
            return f
        }
    }
}

/// The IPv4 packets among frames, reassembled (by a fresh reassembler) when fragmented.
func datagrams(in frames: [ByteBuffer]) -> [IPv4Packet] {
    var reassembler = IPv4Reassembler()
    var result: [IPv4Packet] = []
    for frame in frames {
        guard let ethernet = try? EthernetFrame(frame), ethernet.etherType == .ipv4, let packet = try? IPv4Packet(ethernet.payload) else { continue }
        if packet.isFragment {
            if case .complete(let whole) = reassembler.add(packet, now: t0), let p = try? IPv4Packet(whole) { result.append(p) }
        } else {
            result.append(packet)
        }
    }
    return result
}
