import Logging
import NIOCore
import NIOPosix
import VPNKitBase
import VPNKitIPv4
import VPNKitIPv6
import VPNKitStack
#if os(Linux)
import VPNKitReactor
import VPNKitSystem
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Guest pings to outside addresses of one family, sent from one host socket: a raw ICMP (or
/// ICMPv6) socket when the process has CAP_NET_RAW, otherwise an ICMP datagram ("ping") socket when
/// `net.ipv4.ping_group_range` (which governs ICMPv6 ping sockets too) admits our group. Each request
/// goes out with a sequence number of ours (the kernel or we pick the identifier), and the reply is
/// mapped back to the guest's identifier and sequence number.
final class ICMPForwarder {
    struct Outstanding {
        var guest: IPAddress
        var destination: IPAddress
        var identifier: UInt16
        var sequenceNumber: UInt16
        var sent: NIODeadline
    }

    weak var nat: NAT?
    /// The host socket on SwiftNIO's loop (nil on the reactor: `datagram`).
    let channel: (any Channel)?
    #if os(Linux)
    /// The host socket on the reactor.
    var datagram: ReactorDatagram?
    #endif
    let raw: Bool
    /// The family of the socket (and of the pings it carries).
    let family: IPAddress.Family
    /// Our identifier on a raw socket (a ping socket's is chosen by the kernel).
    let identifier: UInt16
    var nextSequence: UInt16 = 0
    var outstanding: [UInt16: Outstanding] = [:]

    var mode: String {
        let kind = family == .v6 ? "ICMPv6" : "ICMP"
        return raw ? "raw \(kind) socket" : "\(kind) datagram socket"
    }

    init(nat: NAT, channel: (any Channel)?, raw: Bool, family: IPAddress.Family) {
        self.nat = nat
        self.channel = channel
        self.raw = raw
        self.family = family
        self.identifier = UInt16.random(in: 1...UInt16.max)
    }

    /// Opens the forwarders of both families (IPv6's only when the stack has IPv6) and installs them
    /// in `nat`; succeeds with the modes' description, or nil when no socket of either family is
    /// allowed.
    static func open(nat: NAT) -> EventLoopFuture<String?> {
        #if os(Linux)
        if let reactor = nat.eventLoop as? Reactor {
            let opened = [open(nat: nat, family: .v4, on: reactor), nat.stack.configuration.ipv6 == nil ? nil : open(nat: nat, family: .v6, on: reactor)]
                .compactMap { $0 }
            return reactor.makeSucceededFuture(opened.isEmpty ? nil : opened.joined(separator: ", "))
        }
        #endif
        let v4 = open(nat: nat, family: .v4)
        guard nat.stack.configuration.ipv6 != nil else { return v4 }
        return v4.and(open(nat: nat, family: .v6)).map { modes in
            let opened = [modes.0, modes.1].compactMap { $0 }
            return opened.isEmpty ? nil : opened.joined(separator: ", ")
        }
    }

    /// Opens a raw socket of `family`, or failing that a ping socket, and installs the forwarder in
    /// `nat`; succeeds with the mode's description, or nil when neither socket is allowed.
    private static func open(nat: NAT, family: IPAddress.Family) -> EventLoopFuture<String?> {
        let loop = nat.eventLoop
        let boundNAT = NIOLoopBound(nat, eventLoop: loop)
        let slot = NIOLoopBound(Box<ICMPForwarder?>(nil), eventLoop: loop)
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Void> = { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(HostICMPHandler(slot: slot.value))
            }
        }
        let any = family == .v6 ? "::" : "0.0.0.0"
        let proto = family == .v6 ? CInt(IPPROTO_ICMPV6) : CInt(IPPROTO_ICMP)
        // NIO's raw bootstrap sets IPV6_V6ONLY on every AF_INET6 socket, which a raw one refuses
        // (EINVAL): the raw ICMPv6 socket is made here and handed over bound.
        let raw: EventLoopFuture<any Channel>
        if family == .v6 {
            let fd = openRawICMPv6Socket()
            raw = fd < 0
                ? loop.makeFailedFuture(IOError(errnoCode: errno, reason: "socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)"))
                : DatagramBootstrap(group: loop).channelInitializer(initializer).withBoundSocket(fd)
        } else {
            raw = NIORawSocketBootstrap(group: loop).channelInitializer(initializer).bind(host: any, ipProtocol: .icmp)
        }
        return raw
            .map { (channel: $0, raw: true) }
            .flatMapError { _ in
                DatagramBootstrap(group: loop)
                    .protocolSubtype(.init(rawValue: proto))
                    .channelInitializer(initializer)
                    .bind(host: any, port: 0)
                    .map { (channel: $0, raw: false) }
            }
            .assumeIsolated()
            .map { opened -> String? in
                let forwarder = ICMPForwarder(nat: boundNAT.value, channel: opened.channel, raw: opened.raw, family: family)
                slot.value.value = forwarder
                if family == .v6 { boundNAT.value.icmp6 = forwarder } else { boundNAT.value.icmp = forwarder }
                return forwarder.mode
            }
            .nonisolated()
            .recover { _ in nil }
    }

    /// A non-blocking, close-on-exec raw ICMPv6 socket bound to ::, or -1 with errno set (EPERM
    /// without CAP_NET_RAW).
    private static func openRawICMPv6Socket() -> CInt {
        #if os(Linux)
        let fd = socket(AF_INET6, CInt(SOCK_RAW.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), CInt(IPPROTO_ICMPV6))
        guard fd >= 0 else { return -1 }
        #else
        let fd = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)
        guard fd >= 0 else { return -1 }
        guard fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0, fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else {
            let error = errno
            closeDescriptor(fd)
            errno = error
            return -1
        }
        #endif
        var any = sockaddr_in6()
        any.sin6_family = sa_family_t(AF_INET6)
        let bound = withUnsafePointer(to: &any) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
        guard bound == 0 else {
            let error = errno
            closeDescriptor(fd)
            errno = error
            return -1
        }
        return fd
    }

    private static func closeDescriptor(_ fd: CInt) {
        #if canImport(Glibc)
        _ = Glibc.close(fd)
        #else
        _ = Darwin.close(fd)
        #endif
    }

    func forward(_ request: ICMPEchoRequest, now: NIODeadline) {
        guard let nat else { return }
        guard outstanding.count < nat.configuration.maximumICMPEchoesInFlight else {
            nat.counters.icmpEchoDropped &+= 1
            return
        }
        // The host socket speaks one family: a request of another (or mixed) is dropped.
        guard request.guestAddress.family == family, request.destination.family == family else {
            nat.counters.icmpEchoDropped &+= 1
            return
        }
        var sequence = nextSequence
        while outstanding[sequence] != nil { sequence &+= 1 }
        nextSequence = sequence &+ 1
        outstanding[sequence] = Outstanding(
            guest: request.guestAddress, destination: request.destination, identifier: request.identifier,
            sequenceNumber: request.sequenceNumber, sent: now)
        var message = ByteBuffer.withHeadroom(capacity: request.payload.readableBytes)
        message.writeImmutableBuffer(request.payload)
        if family == .v6 {
            // The kernel computes an ICMPv6 socket's checksums (RFC 3542 §3.1): the field stays 0.
            message.prependICMPv6EchoRequest(identifier: identifier, sequenceNumber: sequence)
        } else {
            ICMPv4Header.echo(reply: false, identifier: identifier, sequenceNumber: sequence).prepend(to: &message)
        }
        nat.counters.icmpEchoRequests &+= 1
        #if os(Linux)
        if let datagram {
            // A full socket buffer or a refusal (no route): the request is lost, as on a wire.
            _ = try? datagram.send(message, to: SocketAddressStorage(request.destination, port: 0))
            return
        }
        #endif
        guard let channel, let remote = SocketAddress.ip(request.destination, port: 0) else { return }
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: message), promise: nil)
    }

    /// Messages read in one wakeup: to the guest in one driver call.
    func received(_ envelopes: [AddressedEnvelope<ByteBuffer>]) {
        guard let nat else { return }
        nat.driver.perform { _, now in
            for envelope in envelopes {
                guard let from = IPAddress(envelope.remoteAddress) else { continue }
                received(envelope.data, from: from, nat: nat, now: now)
            }
        }
    }

    /// A message from `from` on the socket (with its IP header on a raw IPv4 socket; ICMPv6 sockets
    /// never give the header).
    func received(_ data: ByteBuffer, from: IPAddress, nat: NAT, now: NIODeadline) {
        let reply: (identifier: UInt16, sequenceNumber: UInt16, payload: ByteBuffer)
        if family == .v6 {
            // The kernel checked the checksum of what it hands an ICMPv6 socket.
            guard let icmp = try? ICMPv6Packet(data), icmp.type == .echoReply else { return }
            reply = (icmp.identifier, icmp.sequenceNumber, icmp.body.buffer)
        } else {
            var bytes = data
            if raw {
                guard let packet = try? IPv4Packet(bytes) else { return }
                bytes = packet.payload.buffer
            }
            guard let icmp = try? ICMPv4Packet(bytes), icmp.type == .echoReply, icmp.isChecksumValid else { return }
            reply = (icmp.identifier, icmp.sequenceNumber, icmp.payload.buffer)
        }
        // On a raw socket every ICMP message of the host arrives: only our identifier counts.
        if raw && reply.identifier != identifier { return }
        guard let entry = outstanding[reply.sequenceNumber], entry.destination == from else { return }
        outstanding[reply.sequenceNumber] = nil
        nat.counters.icmpEchoReplies &+= 1
        nat.stack.sendForwardedEchoReply(
            from: entry.destination, to: entry.guest, identifier: entry.identifier, sequenceNumber: entry.sequenceNumber,
            payload: reply.payload, now: now)
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
        channel?.close(promise: nil)
        #if os(Linux)
        datagram?.close()
        #endif
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

extension ByteBuffer {
    /// Puts an ICMPv6 echo request header (type 128, code 0, checksum 0) in front of the readable
    /// bytes, for a socket whose kernel fills the checksum in.
    mutating func prependICMPv6EchoRequest(identifier: UInt16, sequenceNumber: UInt16) {
        var header = ByteBuffer()
        header.writeInteger(UInt8(128))
        header.writeInteger(UInt8(0))
        header.writeInteger(UInt16(0))
        header.writeInteger(identifier)
        header.writeInteger(sequenceNumber)
        header.writeImmutableBuffer(self)
        self = header
    }
}
