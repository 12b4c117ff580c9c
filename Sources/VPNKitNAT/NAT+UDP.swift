#if canImport(CVPNKitLinux)
import CVPNKitLinux
#endif
import Logging
import NIOCore
import NIOPosix
import VPNKitBase
import VPNKitStack
import VPNKitRuntime
#if os(Linux)
import VPNKitReactor
import VPNKitSystem
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct UDPFlowKey: Hashable {
    var guestAddress: IPAddress
    var guestPort: UInt16
}

extension NAT {
    /// A guest datagram to a forwarded address: through the flow's host socket (opened on first use).
    func forwardUDP(_ message: UDPMessage, now: NIODeadline) {
        guard let target = hostAddress(for: message.destination) else {
            counters.udpRefusedHostLoopback &+= 1
            stack.sendForwardedUDPUnreachable(
                code: 3, guest: message.source, guestPort: message.sourcePort, remote: message.destination,
                remotePort: message.destinationPort, now: now)
            return
        }
        // A flow's host socket is of its guest's family (see `openHostUDPSocket`): the destination must be too.
        guard target.family == message.source.family else {
            counters.udpDropsAddressFamily &+= 1
            return
        }
        let key = UDPFlowKey(guestAddress: message.source, guestPort: message.sourcePort)
        let flow: UDPFlow
        if let existing = udpFlows[key] {
            flow = existing
        } else {
            if udpFlows.count >= configuration.maximumUDPFlows { evictLeastRecentlyUsedUDPFlow(now: now) }
            guard let opened = openUDPFlow(key, now: now) else { return }
            flow = opened
        }
        flow.lastActivity = now
        flow.send(message.payload, to: target, port: message.destinationPort)
    }

    /// A non-blocking, close-on-exec UDP socket of `family` bound to 0.0.0.0 (or ::, IPv6 only) on an
    /// ephemeral port, with buffers of `size` bytes (0: the defaults). On Linux it has IP_RECVERR (or
    /// IPV6_RECVERR), so ICMP errors about what it sends reach `UDPFlow.socketError`; elsewhere there
    /// is no such queue and they are not reported. Returns the fd, or -1 with errno set.
    private static func openHostUDPSocket(family: IPAddress.Family, bufferBytes size: UInt32, from outbound: IPAddress? = nil) -> CInt {
        #if os(Linux)
        switch outbound {
        case .v4(let address)?:
            var bytes = address.rawValue.bigEndian
            return withUnsafeBytes(of: &bytes) { vpnkit_udp_socket_from(0, $0.bindMemory(to: UInt8.self).baseAddress, size, size) }
        case .v6(let address)?:
            var bytes = (address.high.bigEndian, address.low.bigEndian)
            return withUnsafeBytes(of: &bytes) { vpnkit_udp_socket_from(1, $0.bindMemory(to: UInt8.self).baseAddress, size, size) }
        case nil:
            return family == .v6 ? vpnkit_udp_socket6(size, size) : vpnkit_udp_socket(size, size)
        }
        #else
        let fd = Darwin.socket(family == .v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0)
        guard fd >= 0 else { return -1 }
        var ok = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0
        if ok, size > 0 {
            var value = CInt(clamping: size)
            let length = socklen_t(MemoryLayout<CInt>.size)
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, length)
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &value, length)
        }
        if ok, family == .v6 {
            var one: CInt = 1
            ok = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, socklen_t(MemoryLayout<CInt>.size)) == 0
            var any = sockaddr_in6()
            any.sin6_len = UInt8(MemoryLayout<sockaddr_in6>.size)
            any.sin6_family = sa_family_t(AF_INET6)
            ok = ok && withUnsafePointer(to: &any) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Darwin.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            } == 0
        } else if ok {
            var any = sockaddr_in()
            any.sin_len = UInt8(MemoryLayout<sockaddr_in>.size)
            any.sin_family = sa_family_t(AF_INET)
            ok = withUnsafePointer(to: &any) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Darwin.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            } == 0
        }
        guard ok else {
            let error = errno
            Darwin.close(fd)
            errno = error
            return -1
        }
        return fd
        #endif
    }

    private func openUDPFlow(_ key: UDPFlowKey, now: NIODeadline) -> UDPFlow? {
        let size = configuration.udpSocketBufferBytes
        let family = key.guestAddress.family
        let fd = Self.openHostUDPSocket(family: family, bufferBytes: size, from: configuration.outbound(family))
        guard fd >= 0 else {
            counters.udpDropsSocketError &+= 1
            let error = errno
            logger.log(.notice, key: "udp: cannot open a host socket", limiter: &logLimiter, now: now,
                       "udp \(key.guestAddress):\(key.guestPort): cannot open a host socket: errno \(error)")
            return nil
        }
        let flow = UDPFlow(nat: self, key: key, fd: fd, now: now)
        udpFlows[key] = flow
        counters.udpFlowsOpened &+= 1
        logger.debug("udp open \(key.guestAddress):\(key.guestPort)")
        #if os(Linux)
        if let reactor = eventLoop as? Reactor {
            do {
                let socket = try ReactorDatagram(adopting: fd, on: reactor)
                socket.delegate = flow
                flow.datagram = socket
            } catch {
                counters.udpDropsSocketError &+= 1
                udpFlows[key] = nil
                logger.log(.notice, key: "udp: cannot open a host socket", limiter: &logLimiter, now: now,
                           "udp \(key.guestAddress):\(key.guestPort): cannot register a host socket: \(error)")
                return nil
            }
            return flow
        }
        #endif
        let boundFlow = NIOLoopBound(flow, eventLoop: eventLoop)
        DatagramBootstrap(group: eventLoop)
            .channelOption(.maxMessagesPerRead, value: UInt(HostUDPHandler.burst))
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65536))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HostUDPHandler(flow: boundFlow.value))
                }
            }
            .withBoundSocket(fd)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel): boundFlow.value.opened(channel)
                case .failure(let error): boundFlow.value.failed(error)
                }
            }
        return flow
    }

    private func evictLeastRecentlyUsedUDPFlow(now: NIODeadline) {
        guard let oldest = udpFlows.values.min(by: { $0.lastActivity < $1.lastActivity }) else { return }
        counters.udpFlowsEvicted &+= 1
        logger.log(.notice, key: "udp flow evicted: --max-udp-flows", limiter: &logLimiter, now: now,
                   "udp flow \(oldest.key.guestAddress):\(oldest.key.guestPort) evicted: \(configuration.maximumUDPFlows) flows are open (--max-udp-flows)")
        udpFlows[oldest.key] = nil
        oldest.close()
    }

    func expireUDP(now: NIODeadline) {
        let limit = configuration.udpIdleTimeout
        for (key, flow) in udpFlows where now - flow.lastActivity >= limit {
            counters.udpFlowsExpired &+= 1
            logger.debug("udp flow \(key.guestAddress):\(key.guestPort) expired after \(limit.nanoseconds / 1_000_000_000) s idle")
            udpFlows[key] = nil
            flow.close()
        }
    }

    func udpFlowFailed(_ flow: UDPFlow) {
        if udpFlows[flow.key] === flow { udpFlows[flow.key] = nil }
    }
}

/// One guest (address, port) and its host socket: full cone, so datagrams from any remote that
/// reach the socket go back to the guest, from that remote's address.
final class UDPFlow {
    weak var nat: NAT?
    let key: UDPFlowKey
    let fd: CInt
    let opened: NIODeadline
    var lastActivity: NIODeadline
    var channel: (any Channel)?
    #if os(Linux)
    /// The host socket on the daemon's reactor (instead of `channel`).
    var datagram: ReactorDatagram?
    /// The last destination as the kernel takes it, reused while the guest keeps sending there.
    private var lastReactorRemote: (address: IPAddress, port: UInt16, socket: SocketAddressStorage)?
    #endif
    var pending: [(ByteBuffer, SocketAddress)] = []
    var closed = false
    var bytesToHost: UInt64 = 0
    var bytesToGuest: UInt64 = 0
    /// The last destination and its socket address, reused while the guest keeps sending there (a
    /// flow of requests and answers does): making a `SocketAddress` allocates.
    private var lastRemote: (address: IPAddress, port: UInt16, socket: SocketAddress)?

    init(nat: NAT, key: UDPFlowKey, fd: CInt, now: NIODeadline) {
        self.nat = nat
        self.key = key
        self.fd = fd
        self.opened = now
        self.lastActivity = now
    }

    func send(_ payload: ByteBuffer, to address: IPAddress, port: UInt16) {
        #if os(Linux)
        if let datagram { return send(payload, to: address, port: port, on: datagram) }
        #endif
        guard let nat, !closed, let remote = remoteAddress(address, port: port) else { return }
        guard let channel else {
            if pending.count < nat.configuration.udpPendingDatagramLimit {
                pending.append((payload, remote))
            } else {
                nat.counters.udpDropsPending &+= 1
            }
            return
        }
        guard channel.isWritable else {
            nat.counters.udpDropsHostBusy &+= 1
            return
        }
        countSent(payload, nat: nat)
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: payload), promise: nil)
    }

    /// Counts a datagram on its way to the host, whichever loop sends it.
    private func countSent(_ payload: ByteBuffer, nat: NAT) {
        nat.counters.udpDatagramsToHost &+= 1
        nat.counters.udpBytesToHost &+= UInt64(payload.readableBytes)
        bytesToHost &+= UInt64(payload.readableBytes)
    }

    #if os(Linux)
    private func send(_ payload: ByteBuffer, to address: IPAddress, port: UInt16, on datagram: ReactorDatagram) {
        guard let nat, !closed else { return }
        let remote: SocketAddressStorage
        if let last = lastReactorRemote, last.address == address, last.port == port {
            remote = last.socket
        } else {
            remote = SocketAddressStorage(address, port: port)
            lastReactorRemote = (address, port, remote)
        }
        do {
            guard try datagram.send(payload, to: remote) else {
                nat.counters.udpDropsHostBusy &+= 1
                return
            }
        } catch {
            // The kernel refused this datagram (no route, a pending ICMP error): dropped and counted;
            // an error queued for the socket reaches the guest through `socketError`.
            nat.counters.udpDropsSocketError &+= 1
            return
        }
        countSent(payload, nat: nat)
    }
    #endif

    private func remoteAddress(_ address: IPAddress, port: UInt16) -> SocketAddress? {
        if let last = lastRemote, last.address == address, last.port == port { return last.socket }
        guard let socket = SocketAddress.ip(address, port: port) else { return nil }
        lastRemote = (address, port, socket)
        return socket
    }

    func opened(_ channel: any Channel) {
        guard !closed else {
            channel.close(promise: nil)
            return
        }
        self.channel = channel
        let queued = pending
        pending = []
        for (payload, remote) in queued {
            guard let address = IPAddress(remote), let port = remote.port else { continue }
            send(payload, to: address, port: UInt16(port))
        }
    }

    func failed(_ error: any Error) {
        if let nat {
            nat.logger.log(.notice, key: "udp host socket failed", limiter: &nat.logLimiter, now: .now(),
                           "udp \(key.guestAddress):\(key.guestPort): host socket failed: \(error)")
        }
        nat?.counters.udpDropsSocketError &+= UInt64(pending.count)
        pending = []
        closed = true
        nat?.udpFlowFailed(self)
    }

    /// Datagrams from remotes, read in one wakeup: to the guest in one driver call.
    func received(_ envelopes: [AddressedEnvelope<ByteBuffer>]) {
        guard let nat else { return }
        nat.driver.perform { _, now in
            for envelope in envelopes { received(envelope, nat: nat, now: now) }
        }
    }

    private func received(_ envelope: AddressedEnvelope<ByteBuffer>, nat: NAT, now: NIODeadline) {
        guard let remote = IPAddress(envelope.remoteAddress), let port = envelope.remoteAddress.port else { return }
        received(envelope.data, from: remote, port: UInt16(port), nat: nat, now: now)
    }

    /// A datagram from a remote: to the guest, from the remote's guest-side address.
    func received(_ data: ByteBuffer, from remote: IPAddress, port: UInt16, nat: NAT, now: NIODeadline) {
        guard !closed, let source = nat.guestSideAddress(for: remote) else { return }
        lastActivity = now
        nat.counters.udpDatagramsToGuest &+= 1
        nat.counters.udpBytesToGuest &+= UInt64(data.readableBytes)
        bytesToGuest &+= UInt64(data.readableBytes)
        try? nat.stack.sendForwardedUDP(data, from: source, port: port, to: key.guestAddress, port: key.guestPort, now: now)
    }

    /// The socket reported an error (an ICMP error about a datagram we sent): drain the error queue
    /// and tell the guest about each.
    func socketError() {
        guard let nat, !closed else { return }
        nat.driver.perform { _, now in reportErrors(nat: nat, now: now) }
    }

    private func reportErrors(nat: NAT, now: NIODeadline) {
        #if os(Linux)
        var entry = vpnkit_udp_error()
        for _ in 0..<64 {
            let result = vpnkit_udp_next_error(fd, &entry)
            if result < 0 { break }
            guard result == 1 else { continue }
            let destination: IPAddress
            let code: UInt8
            if entry.origin == 2 /* SO_EE_ORIGIN_ICMP */, entry.type == 3 /* destination unreachable */ {
                destination = .v4(IPv4Address(rawValue: entry.address))
                code = entry.code
            } else if entry.origin == 3 /* SO_EE_ORIGIN_ICMP6 */, entry.type == 1 /* destination unreachable */ {
                let octets = withUnsafeBytes(of: entry.address6) { Array($0) }
                guard let address = IPv6Address(octets: octets) else { continue }
                destination = .v6(address)
                code = NAT.icmpv4UnreachableCode(fromICMPv6: entry.code)
            } else {
                continue
            }
            guard let remote = nat.guestSideAddress(for: destination) else { continue }
            nat.counters.udpUnreachablesToGuest &+= 1
            nat.stack.sendForwardedUDPUnreachable(
                code: code, guest: key.guestAddress, guestPort: key.guestPort, remote: remote, remotePort: entry.port, now: now)
        }
        #endif
    }

    func close() {
        guard !closed else { return }
        closed = true
        pending = []
        channel?.close(promise: nil)
        #if os(Linux)
        datagram?.close()
        #endif
    }

    func snapshot(now: NIODeadline) -> NATFlowSnapshot {
        NATFlowSnapshot(
            protocol: "udp", guest: key.guestAddress.description(port: key.guestPort), remote: "*", state: closed ? "closed" : "open",
            bytesToHost: bytesToHost, bytesToGuest: bytesToGuest, ageSeconds: Double((now - opened).nanoseconds) / 1e9)
    }
}

#if os(Linux)
/// The reactor's datagram events, as the flow's (the same ones `HostUDPHandler` hands over).
extension UDPFlow: ReactorDatagramDelegate {
    /// Datagrams from remotes, read in one wakeup: to the guest in one driver call.
    func datagramsArrived(_ socket: ReactorDatagram, _ forEach: ((ByteBuffer, IPAddress, UInt16) -> Void) -> Void) {
        guard let nat else { return }
        nat.driver.perform { _, now in
            forEach { data, address, port in received(data, from: address, port: port, nat: nat, now: now) }
        }
    }

    func datagramError(_ socket: ReactorDatagram, _ error: SystemError) { socketError() }
}
#endif

final class HostUDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let flow: UDPFlow
    /// How many datagrams one wakeup reads (NIO reads until EAGAIN or this many).
    static let burst = 16
    /// Whether the next wakeup reads up to `burst` datagrams or just one: a flow of requests and
    /// answers reads one per wakeup, and the read after it only finds EAGAIN (see `ReadBatching`).
    private var batching = ReadBatching()
    /// Whether the channel's limit is `burst` (else one).
    private var readingBurst = true
    private var readsThisWakeup = 0
    /// This wakeup's datagrams, handed to the stack together when it ends: one driver call, so
    /// what they produce goes to the link in one flush.
    private var arrived: [AddressedEnvelope<ByteBuffer>] = []

    init(flow: UDPFlow) { self.flow = flow }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        readsThisWakeup += 1
        arrived.append(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        adaptReadLimit(context)
        readsThisWakeup = 0
        deliverArrived()
    }

    private func deliverArrived() {
        guard !arrived.isEmpty else { return }
        flow.received(arrived)
        arrived.removeAll(keepingCapacity: true)
    }

    /// Tells the policy what a batched wakeup found, and sets the next wakeup's read limit.
    private func adaptReadLimit(_ context: ChannelHandlerContext) {
        if readingBurst { batching.record(foundMore: readsThisWakeup > 1) }
        // The policy is asked here for the next wakeup: NIO applies the limit when it reads.
        let burstNext = batching.shouldReadPastFirst()
        guard burstNext != readingBurst else { return }
        readingBurst = burstNext
        try? context.channel.syncOptions?.setOption(.maxMessagesPerRead, value: UInt(burstNext ? Self.burst : 1))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed read does not end with `channelReadComplete`: what came before the error first.
        deliverArrived()
        flow.socketError()
    }

    func channelInactive(context: ChannelHandlerContext) {
        deliverArrived()
        guard !flow.closed else { return }
        flow.closed = true
        flow.nat?.udpFlowFailed(flow)
    }
}
