import NIOCore
import VPNKitBase
import VPNKitDHCP
import VPNKitEthernet
import VPNKitIPv4
import VPNKitIPv6
import VPNKitStack
import VPNKitTCP
import VPNKitServices

/// The whole stack as a hostile guest sees it: a gateway with a DHCP server, a TCP listener that
/// echoes, a UDP echo socket and a forwarder standing in for the NAT's host side (it accepts or
/// refuses TCP, echoes UDP and answers pings, all in memory). The input is a sequence of frames, each
/// preceded by one byte that advances the clock and two bytes of length; whatever the stack sends
/// is parsed back, and every invariant that must hold after each frame is checked.
///
/// The stack holds ACKs as `StackDriver` makes it: frames whose clock byte is 0 arrive in the same
/// loop turn, and the held ACKs go out when the clock next moves (and at the end), as the driver's
/// per-turn flush sends them.
enum StackFuzzer {
    static let gatewayMAC = MACAddress(rawValue: 0x5A94_EFE4_0CEE)
    static let subnet = IPv4Subnet("192.168.65.0/24")!

    static func run(_ input: ByteBuffer) {
        var configuration = StackConfiguration(
            macAddress: gatewayMAC, subnet: subnet, gateway: IPv4Address(192, 168, 65, 1),
            additionalAddresses: [IPv4Address(192, 168, 65, 2)])
        configuration.maximumTCPConnections = 64
        configuration.tcpSYNBacklog = 16
        configuration.reassembly.maximumDatagrams = 8
        configuration.reassembly.maximumTotalBytes = 256 << 10
        configuration.tcpSecret = 1
        // Dual-stack, with small IPv6 tables so the fuzzer reaches their bounds.
        var ipv6 = IPv6LinkConfiguration()
        ipv6.advertisementSeed = 1
        ipv6.neighbors.maximumEntries = 16
        ipv6.neighbors.maximumPendingTotal = 32
        ipv6.extensionHeaders.maximumHeaders = 4
        configuration.ipv6 = ipv6
        let stack = NetworkStack(configuration: configuration)
        stack.holdsACKs = true
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let forwarder = FakeHostSide(stack: stack)
        stack.forwarder = forwarder
        var dhcpServer = DHCPServerConfiguration(serverAddress: IPv4Address(192, 168, 65, 1), subnet: subnet, firstLease: IPv4Address(192, 168, 65, 3))
        dhcpServer.poolEnd = IPv4Address(192, 168, 65, 10)
        let dhcp = try? DHCPService(stack: stack, configuration: dhcpServer)
        // Stateless DHCPv6 on ff02::1:2 port 547, as vpnkit run serves it.
        let dhcpv6 = try? DHCPv6Service(
            stack: stack, configuration: DHCPv6ServerConfiguration(macAddress: configuration.macAddress, dnsServers: [ipv6.gateway]))
        var sockets: [TCPSocket] = []
        try? stack.listenTCP(port: 7) { socket in
            sockets.append(socket)
            socket.onReadable = { [unowned socket] in
                while let data = socket.read(now: now) { _ = socket.write(data, now: now) }
                if socket.isReadClosed { socket.close(now: now) }
            }
        }
        let udp = try? stack.bindUDP(port: 7) { message in
            try? stack.sendUDP(message.payload, from: message.destination, port: 7, to: message.source, port: message.sourcePort, now: message.receivedAt)
        }
        let udp6 = try? stack.bindUDP(port: 7, address: .v6(.unspecified)) { message in
            try? stack.sendUDP(message.payload, from: message.destination, port: 7, to: message.source, port: message.sourcePort, now: message.receivedAt)
        }
        stack.start(now: now)
        drain(stack)

        var rest = input
        while let tick = rest.readInteger(as: UInt8.self), let length = rest.readInteger(as: UInt16.self) {
            // Time moves by 0–255 ms, and a tick of 255 jumps a minute (timers, expiry, reassembly).
            if tick != 0 { endTurn(stack, now: now) }
            now = now + (tick == 255 ? .seconds(61) : .milliseconds(Int64(tick)))
            let frame = rest.readSlice(length: min(Int(length), rest.readableBytes))!
            stack.receive(frame, now: now)
            forwarder.now = now
            forwarder.flushPending()
            stack.poll(now: now)
            drain(stack)
            check(stack)
        }
        endTurn(stack, now: now)
        // Let every timer run out: nothing may be left that never ends.
        for _ in 0..<20 {
            now = now + .seconds(120)
            forwarder.now = now
            stack.poll(now: now)
            drain(stack)
        }
        check(stack)
        consume((dhcp, dhcpv6, udp, udp6, sockets.count))
    }

    /// The end of a loop turn: the held ACKs go out, and none may stay held.
    static func endTurn(_ stack: NetworkStack, now: NIODeadline) {
        if stack.hasHeldACKs { stack.sendHeldACKs(now: now) }
        precondition(!stack.hasHeldACKs, "an ACK still held after sendHeldACKs")
        drain(stack)
    }

    /// Everything the stack sends must be a well-formed frame from the gateway's MAC.
    static func drain(_ stack: NetworkStack) {
        stack.drainOutput { outgoing in
            let frame = outgoing.joined
            guard let ethernet = try? EthernetFrame(frame) else { fatalError("the stack sent a frame that does not parse") }
            precondition(ethernet.source == gatewayMAC, "the stack sent a frame from another MAC")
            if ethernet.etherType == .ipv4 {
                guard let ip = try? IPv4Packet(ethernet.payload) else { fatalError("the stack sent an IPv4 packet that does not parse") }
                precondition(ip.isHeaderChecksumValid, "the stack sent an IPv4 header with a bad checksum")
            }
            if ethernet.etherType == .ipv6 {
                guard let ip = try? IPv6Packet(ethernet.payload), let chain = try? ip.headerChain() else {
                    fatalError("the stack sent an IPv6 packet that does not parse")
                }
                precondition(40 + ip.payloadLength <= 1500, "the stack sent an IPv6 packet above the MTU")
                // A whole packet's upper layer carries a valid checksum (fragments are checked whole by the guest).
                if chain.fragment == nil, [IPProtocol.icmpv6, .udp, .tcp].contains(chain.upperLayer) {
                    let upper = ip.bytes.view(from: chain.upperLayerOffset, length: 40 + ip.payloadLength - chain.upperLayerOffset)
                    let pseudo = IPPseudoHeader(source: .v6(ip.source), destination: .v6(ip.destination), protocol: chain.upperLayer, length: upper.count)
                    precondition(pseudo.verifies(upper), "the stack sent an IPv6 \(chain.upperLayer) message with a bad checksum")
                }
            }
        }
    }

    /// Bounds that hold whatever the guest sent.
    static func check(_ stack: NetworkStack) {
        precondition(stack.tcpConnectionCount <= stack.configuration.maximumTCPConnections, "TCP connections beyond the limit")
        precondition(stack.reassembler.count <= stack.configuration.reassembly.maximumDatagrams, "reassembly beyond its limit")
        precondition(stack.arpCache.count <= stack.configuration.arp.maximumEntries, "ARP cache beyond its limit")
        if let neighbors = stack.neighborCache {
            precondition(neighbors.count <= neighbors.configuration.maximumEntries, "neighbour cache beyond its limit")
        }
        if let reassembler = stack.ipv6Reassembler {
            precondition(reassembler.count <= reassembler.configuration.maximumDatagrams, "IPv6 reassembly beyond its limit")
            precondition(reassembler.bytesHeld <= reassembler.configuration.maximumTotalBytes, "IPv6 reassembly holds too many bytes")
        }
    }
}

/// The NAT's host side, in memory: TCP to even ports is accepted and echoed, to odd ports refused;
/// UDP is echoed back from the destination; pings are answered.
final class FakeHostSide: PacketForwarder {
    unowned let stack: NetworkStack
    var now = NIODeadline.uptimeNanoseconds(0)
    private var pending: [TCPConnectionRequest] = []
    private var accepted: [TCPSocket] = []

    init(stack: NetworkStack) { self.stack = stack }

    func forwards(_ destination: IPAddress) -> Bool {
        guard case .v4(let destination) = destination else { return false }
        return destination == IPv4Address(192, 168, 65, 2) || !StackFuzzer.subnet.contains(destination)
    }

    func tcpConnectionRequested(_ request: TCPConnectionRequest, now: NIODeadline) {
        // Answered on the next frame, as a host connect would be: retransmitted SYNs meet a held request.
        if pending.count < 32 { pending.append(request) }
    }

    func flushPending() {
        let requests = pending
        pending.removeAll()
        for request in requests {
            if request.destinationPort % 2 == 0 {
                guard let socket = stack.acceptTCPConnectionRequest(request, now: now) else { continue }
                socket.onReadable = { [unowned socket, unowned self] in
                    while let data = socket.read(now: self.now) { _ = socket.write(data, now: self.now) }
                    if socket.isReadClosed { socket.close(now: self.now) }
                }
                if accepted.count < 64 { accepted.append(socket) }
            } else {
                stack.refuseTCPConnectionRequest(request, with: request.destinationPort % 4 == 1 ? .reset : .unreachable(code: 1), now: now)
            }
        }
    }

    func udpDatagramReceived(_ message: UDPMessage, now: NIODeadline) {
        if message.destinationPort % 2 == 0 {
            try? stack.sendForwardedUDP(message.payload, from: message.destination, port: message.destinationPort, to: message.source, port: message.sourcePort, now: now)
        } else {
            stack.sendForwardedUDPUnreachable(code: 3, guest: message.source, guestPort: message.sourcePort, remote: message.destination, remotePort: message.destinationPort, now: now)
        }
    }

    func icmpEchoRequested(_ request: ICMPEchoRequest, now: NIODeadline) {
        stack.sendForwardedEchoReply(
            from: request.destination, to: request.guestAddress, identifier: request.identifier, sequenceNumber: request.sequenceNumber,
            payload: request.payload, now: now)
    }
}
