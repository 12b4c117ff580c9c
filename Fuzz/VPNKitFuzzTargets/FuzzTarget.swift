import NIOCore
import NIOEmbedded
import VPNKitARP
import VPNKitBase
import VPNKitDHCP
import VPNKitDNS
import VPNKitEthernet
import VPNKitIPv4
import VPNKitStack
import VPNKitTCP
import VPNKitTransport
import VPNKitUDP

/// One fuzzing entry point per parser, one for the decoder on IPv6 packets, and one for the whole
/// stack. Each takes arbitrary bytes and must neither trap nor hang nor leak; a parser may reject the
/// bytes (that is what typed errors are for), but what it accepts must survive every accessor and a
/// round trip through its encoder.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case ethernet, arp, ipv4, ipv6, icmp, icmpv6, ndp, udp, tcp, dhcp, dns, decode, qemu, vmnet, stack

    /// Runs the target on one input.
    public func run(_ bytes: UnsafeRawBufferPointer) {
        let buffer = ByteBuffer(bytes: bytes)
        switch self {
        case .ethernet: fuzzEthernet(buffer)
        case .arp: fuzzARP(buffer)
        case .ipv4: fuzzIPv4(buffer)
        case .ipv6: fuzzIPv6(buffer)
        case .icmp: fuzzICMP(buffer)
        case .icmpv6: fuzzICMPv6(buffer)
        case .ndp: fuzzNDP(buffer)
        case .udp: fuzzUDP(buffer)
        case .tcp: fuzzTCP(buffer)
        case .dhcp: fuzzDHCP(buffer)
        case .dns: fuzzDNS(buffer)
        case .decode: fuzzDecode(buffer)
        case .qemu: fuzzStreamFraming(buffer, vmnet: false)
        case .vmnet: fuzzStreamFraming(buffer, vmnet: true)
        case .stack: StackFuzzer.run(buffer)
        }
    }

    /// Runs the target on bytes held in an array (for regression files and tests).
    public func run(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { run($0) }
    }
}

/// Keeps values alive so the optimizer cannot drop the reads that exercise accessors.
@inline(never) func consume<T>(_ value: T) { withExtendedLifetime(value) {} }

func fuzzEthernet(_ buffer: ByteBuffer) {
    guard let frame = try? EthernetFrame(buffer) else { return }
    consume((frame.destination, frame.source, frame.etherType, frame.vlan, frame.headerLength))
    var payload = ByteBuffer.withHeadroom(capacity: frame.payload.count)
    payload.writeImmutableBuffer(frame.payload.buffer)
    EthernetHeader(parsing: frame).prepend(to: &payload)
    guard let again = try? EthernetFrame(payload) else { fatalError("a re-encoded Ethernet frame does not parse") }
    precondition(again.etherType == frame.etherType && again.source == frame.source, "Ethernet round trip changed the header")
}

func fuzzARP(_ buffer: ByteBuffer) {
    guard let packet = try? ARPPacket(buffer) else { return }
    let header = ARPHeader(parsing: packet)
    consume(header)
    var out = ByteBuffer.withHeadroom(capacity: 0)
    header.prepend(to: &out)
    guard let again = try? ARPPacket(out) else { fatalError("a re-encoded ARP packet does not parse") }
    precondition(ARPHeader(parsing: again) == header, "ARP round trip changed the header")
}

func fuzzIPv4(_ buffer: ByteBuffer) {
    guard let packet = try? IPv4Packet(buffer) else { return }
    consume((packet.isHeaderChecksumValid, packet.source, packet.destination, packet.protocol, packet.payload.count))
    let header = IPv4Header(parsing: packet)
    var out = ByteBuffer.withHeadroom(capacity: packet.payloadLength)
    out.writeImmutableBuffer(packet.payload.buffer)
    header.prepend(to: &out)
    consume(try? IPv4Packet(out))
    // Reassembly of whatever fragment this is, bounded as configured.
    var reassembler = IPv4Reassembler(configuration: ReassemblyConfiguration())
    consume(reassembler.add(packet, now: .uptimeNanoseconds(1)))
    consume(reassembler.poll(now: .uptimeNanoseconds(60_000_000_000)))
    consume(fragment(packet, mtu: 576))
}

func fuzzICMP(_ buffer: ByteBuffer) {
    guard let packet = try? ICMPv4Packet(buffer) else { return }
    consume((packet.isChecksumValid, packet.type, packet.code, packet.identifier, packet.sequenceNumber))
    consume(ICMPv4Header(parsing: packet))
}

func fuzzUDP(_ buffer: ByteBuffer) {
    guard let datagram = try? UDPDatagram(buffer) else { return }
    consume((datagram.sourcePort, datagram.destinationPort, datagram.payload.count))
    consume(UDPHeader(parsing: datagram))
}

func fuzzTCP(_ buffer: ByteBuffer) {
    guard let segment = try? TCPSegment(buffer) else { return }
    consume((segment.sequenceNumber, segment.acknowledgmentNumber, segment.flags, segment.window, segment.urgentPointer))
    guard let header = try? TCPHeader(parsing: segment) else { return }
    var out = ByteBuffer.withHeadroom(capacity: segment.payload.count)
    out.writeImmutableBuffer(segment.payload.buffer)
    header.prepend(to: &out, source: .v4(IPv4Address(10, 0, 0, 1)), destination: .v4(IPv4Address(10, 0, 0, 2)))
    guard let again = try? TCPSegment(out) else { fatalError("a re-encoded TCP segment does not parse") }
    precondition(again.sequenceNumber == segment.sequenceNumber && again.flags == segment.flags, "TCP round trip changed the header")
}

func fuzzDHCP(_ buffer: ByteBuffer) {
    fuzzDHCPv6(buffer)
    guard let message = try? DHCPMessage(parsing: DHCPPacket(buffer)) else { return }
    var out = ByteBuffer()
    message.write(to: &out)
    precondition(out.readableBytes == message.encodedLength, "DHCP encodedLength disagrees with what write wrote")
    consume(try? DHCPMessage(parsing: DHCPPacket(out)))
    // The server's answer to whatever this is.
    var server = DHCPServer(
        configuration: DHCPServerConfiguration(serverAddress: IPv4Address(192, 168, 65, 1), subnet: IPv4Subnet("192.168.65.0/24")!))
    consume(server.handle(message, now: .uptimeNanoseconds(1)))
}

/// The same bytes as DHCPv6 (the `dhcp` target covers both families): what parses survives a round
/// trip, and the stateless server answers or refuses it without a trap.
func fuzzDHCPv6(_ buffer: ByteBuffer) {
    let bytes = buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? []
    if let message = try? DHCPv6Message(parsing: bytes) {
        precondition((try? DHCPv6Message(parsing: message.encoded)) == message, "DHCPv6 round trip differs")
        consume(message.requestedOptions)
    }
    var server = DHCPv6Server(
        configuration: DHCPv6ServerConfiguration(macAddress: MACAddress(rawValue: 0x5A94_EFE4_0CEE), dnsServers: [IPv6Address(high: 0xFD00_0065_0000_0000, low: 1)]))
    consume(server.handle(bytes))
}

func fuzzDNS(_ buffer: ByteBuffer) {
    if let message = try? DNSMessage(parsing: buffer) {
        consume(try? message.encoded())
        consume(try? message.encoded(compressNames: false))
    }
    var configuration = DNSResolverConfiguration(
        staticRecords: ["host.internal": [.v4(IPv4Address(192, 168, 65, 2))]], upstreams: [DNSUpstream(address: IPv4Address(10, 0, 0, 53))])
    configuration.seed = 1  // repeatable: an input replays as it ran
    var resolver = DNSResolver(configuration: configuration)
    let client = DNSClient(address: .v4(IPv4Address(192, 168, 65, 3)), port: 5353)
    for action in resolver.handleQuery(buffer, from: client, overTCP: false, now: .uptimeNanoseconds(1)) {
        // Feed a forwarded query back as the upstream's answer: the response path sees fuzzed bytes too.
        if case .forward(let query, let upstream, _) = action {
            consume(resolver.handleUpstreamResponse(query, from: upstream, now: .uptimeNanoseconds(2)))
            consume(resolver.handleUpstreamResponse(buffer, from: upstream, now: .uptimeNanoseconds(3)))
        }
    }
    consume(resolver.poll(now: .uptimeNanoseconds(60_000_000_000)))
}

/// The qemu and vmnet stream framings, through the real channel handler on an embedded channel: the
/// first byte picks how the rest is cut into reads, so frames and handshakes arrive in any pieces.
func fuzzStreamFraming(_ buffer: ByteBuffer, vmnet: Bool) {
    var input = buffer
    let step = Int(input.readInteger(as: UInt8.self) ?? 0) + 1
    let channel = EmbeddedChannel()
    let preamble: (any StreamPreamble)? =
        vmnet ? VmnetServerHandshake(mtu: 1500, maxPacketSize: 1550) { _, _ in .success(MACAddress(rawValue: 0x0200_0000_0001)) } : nil
    let handler = FramedStreamHandler(
        prefix: vmnet ? .uint16LittleEndian : .uint32BigEndian, maxReceiveFrame: 1550, maxSendFrame: 1550, preamble: preamble)
    var frames = 0
    handler.onFrame = { frame in
        frames += 1
        precondition(frame.readableBytes <= 1550, "a frame longer than the limit was delivered")
    }
    handler.onClose = { _ in }
    handler.onPreambleFailure = { _ in }
    do {
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        while input.readableBytes > 0 {
            let piece = input.readSlice(length: min(step, input.readableBytes))!
            try channel.writeInbound(piece)
        }
    } catch {}
    // Close (whether or not the handler already did), let the handshake timer fire and the pipeline
    // tear down: what a real event loop does, so nothing is left holding the handler.
    _ = try? channel.finish(acceptAlreadyClosed: true)
    channel.embeddedEventLoop.advanceTime(by: .seconds(60))
    channel.embeddedEventLoop.run()
    consume(frames)
}
