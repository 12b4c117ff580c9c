import Logging
import NIOCore
import NIOPosix
import VPNKitBase
import VPNKitIPv4
import VPNKitStack
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Guest pings to outside addresses, sent from one host ICMP socket: a raw socket when the process
/// has CAP_NET_RAW, otherwise an ICMP datagram ("ping") socket when `net.ipv4.ping_group_range`
/// admits our group. Each request goes out with a sequence number of ours (the kernel or we pick the
/// identifier), and the reply is mapped back to the guest's identifier and sequence number.
final class ICMPForwarder {
    struct Outstanding {
        var guest: IPv4Address
        var destination: IPv4Address
        var identifier: UInt16
        var sequenceNumber: UInt16
        var sent: NIODeadline
    }

    weak var nat: NAT?
    let channel: any Channel
    let raw: Bool
    /// Our identifier on a raw socket (a ping socket's is chosen by the kernel).
    let identifier: UInt16
    var nextSequence: UInt16 = 0
    var outstanding: [UInt16: Outstanding] = [:]

    var mode: String { raw ? "raw ICMP socket" : "ICMP datagram socket" }

    init(nat: NAT, channel: any Channel, raw: Bool) {
        self.nat = nat
        self.channel = channel
        self.raw = raw
        self.identifier = UInt16.random(in: 1...UInt16.max)
    }

    /// Opens a raw socket, or failing that a ping socket, and installs the forwarder in `nat`;
    /// succeeds with the mode's description, or nil when neither socket is allowed.
    static func open(nat: NAT) -> EventLoopFuture<String?> {
        let loop = nat.eventLoop
        let boundNAT = NIOLoopBound(nat, eventLoop: loop)
        let slot = NIOLoopBound(Box<ICMPForwarder?>(nil), eventLoop: loop)
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Void> = { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(HostICMPHandler(slot: slot.value))
            }
        }
        return NIORawSocketBootstrap(group: loop).channelInitializer(initializer).bind(host: "0.0.0.0", ipProtocol: .icmp)
            .map { (channel: $0, raw: true) }
            .flatMapError { _ in
                DatagramBootstrap(group: loop)
                    .protocolSubtype(.init(rawValue: CInt(IPPROTO_ICMP)))
                    .channelInitializer(initializer)
                    .bind(host: "0.0.0.0", port: 0)
                    .map { (channel: $0, raw: false) }
            }
            .assumeIsolated()
            .map { opened -> String? in
                let forwarder = ICMPForwarder(nat: boundNAT.value, channel: opened.channel, raw: opened.raw)
                slot.value.value = forwarder
                boundNAT.value.icmp = forwarder
                return forwarder.mode
            }
            .nonisolated()
            .recover { _ in nil }
    }

    func forward(_ request: ICMPEchoRequest, now: NIODeadline) {
        guard let nat else { return }
        guard outstanding.count < nat.configuration.maximumICMPEchoesInFlight else {
            nat.counters.icmpEchoDropped &+= 1
            return
        }
        // The host socket speaks ICMPv4: a request of another family is dropped.
        guard case .v4(let guest) = request.guestAddress, case .v4(let destination) = request.destination else {
            nat.counters.icmpEchoDropped &+= 1
            return
        }
        guard let remote = SocketAddress.v4(destination, port: 0) else { return }
        var sequence = nextSequence
        while outstanding[sequence] != nil { sequence &+= 1 }
        nextSequence = sequence &+ 1
        outstanding[sequence] = Outstanding(
            guest: guest, destination: destination, identifier: request.identifier,
            sequenceNumber: request.sequenceNumber, sent: now)
        var message = ByteBuffer.withHeadroom(capacity: request.payload.readableBytes)
        message.writeImmutableBuffer(request.payload)
        ICMPv4Header.echo(reply: false, identifier: identifier, sequenceNumber: sequence).prepend(to: &message)
        nat.counters.icmpEchoRequests &+= 1
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: message), promise: nil)
    }

    /// Messages read in one wakeup: to the guest in one driver call.
    func received(_ envelopes: [AddressedEnvelope<ByteBuffer>]) {
        guard let nat else { return }
        nat.driver.perform { _, now in
            for envelope in envelopes { received(envelope, nat: nat, now: now) }
        }
    }

    /// A message from the socket (with its IP header on a raw socket).
    private func received(_ envelope: AddressedEnvelope<ByteBuffer>, nat: NAT, now: NIODeadline) {
        var bytes = envelope.data
        if raw {
            guard let packet = try? IPv4Packet(bytes) else { return }
            bytes = packet.payload.buffer
        }
        guard let icmp = try? ICMPv4Packet(bytes), icmp.type == .echoReply, icmp.isChecksumValid else { return }
        // On a raw socket every ICMP message of the host arrives: only our identifier counts.
        if raw && icmp.identifier != identifier { return }
        guard let from = IPv4Address(envelope.remoteAddress), let entry = outstanding[icmp.sequenceNumber], entry.destination == from
        else { return }
        outstanding[icmp.sequenceNumber] = nil
        nat.counters.icmpEchoReplies &+= 1
        nat.stack.sendForwardedEchoReply(
            from: .v4(entry.destination), to: .v4(entry.guest), identifier: entry.identifier, sequenceNumber: entry.sequenceNumber,
            payload: icmp.payload.buffer, now: now)
    }

    func expire(now: NIODeadline) {
        guard let nat else { return }
        let limit = nat.configuration.icmpEchoTimeout
        for (sequence, entry) in outstanding where now - entry.sent >= limit {
            outstanding[sequence] = nil
            nat.counters.icmpEchoTimedOut &+= 1
        }
    }

    func close() {
        channel.close(promise: nil)
    }
}

final class Box<T> {
    var value: T
    init(_ value: T) { self.value = value }
}

final class HostICMPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let slot: Box<ICMPForwarder?>
    /// This wakeup's messages, handed over together when it ends.
    private var arrived: [AddressedEnvelope<ByteBuffer>] = []

    init(slot: Box<ICMPForwarder?>) { self.slot = slot }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        arrived.append(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        deliverArrived()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed read does not end with `channelReadComplete`.
        deliverArrived()
    }

    private func deliverArrived() {
        guard !arrived.isEmpty else { return }
        slot.value?.received(arrived)
        arrived.removeAll(keepingCapacity: true)
    }
}
