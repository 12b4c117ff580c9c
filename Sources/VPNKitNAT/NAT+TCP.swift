import Logging
import NIOCore
import NIOPosix
import VPNKitBase
import VPNKitStack
import VPNKitTCP
import VPNKitRuntime
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension NAT {
    /// A guest SYN to a forwarded address: connect a host socket first; the guest gets its SYN-ACK
    /// only when that succeeds.
    func openTCP(_ request: TCPConnectionRequest, now: NIODeadline) {
        guard tcpFlows[request] == nil else { return }
        guard let target = hostAddress(for: request.destination) else {
            counters.tcpRefusedHostLoopback &+= 1
            logger.log(.notice, key: "tcp refused: --no-host-loopback", limiter: &logLimiter, now: now,
                       "refused \(request): the host's loopback is not reachable (--no-host-loopback)")
            stack.refuseTCPConnectionRequest(request, with: .reset, now: now)
            return
        }
        guard tcpFlows.count < configuration.maximumConnections else {
            counters.tcpRefusedAtLimit &+= 1
            logger.log(.notice, key: "tcp refused: --max-connections", limiter: &logLimiter, now: now,
                       "refused \(request): \(configuration.maximumConnections) connections are open (--max-connections)")
            stack.refuseTCPConnectionRequest(request, with: .reset, now: now)
            return
        }
        guard let address = SocketAddress.v4(target, port: request.destinationPort) else {
            stack.refuseTCPConnectionRequest(request, with: .unreachable(code: 1), now: now)
            return
        }
        counters.tcpConnectsStarted &+= 1
        let flow = TCPFlow(nat: self, request: request, now: now)
        tcpFlows[request] = flow
        logger.debug("tcp open \(request) via \(address)")
        let boundFlow = NIOLoopBound(flow, eventLoop: eventLoop)
        let configuration = self.configuration
        ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try configuration.configureHostTCPChannel(channel)
                    try channel.pipeline.syncOperations.addHandler(HostTCPHandler(flow: boundFlow.value))
                }
            }
            .connect(to: address)
            .assumeIsolated()
            .whenComplete { result in
                let flow = boundFlow.value
                switch result {
                case .success(let channel): flow.hostConnected(channel)
                case .failure(let error): flow.hostConnectFailed(error)
                }
            }
    }

    func tcpFlowEnded(_ flow: TCPFlow) {
        guard tcpFlows[flow.request] === flow else { return }
        tcpFlows[flow.request] = nil
        counters.tcpFlowsClosed &+= 1
    }
}

/// One guest TCP connection and its host socket. Data moves only as fast as the slower side takes
/// it: guest data is read from the stack only while the host socket is writable (so the window the
/// guest sees closes when the host does not read), and the host socket is read only while the guest
/// connection has send-buffer room.
final class TCPFlow {
    weak var nat: NAT?
    let request: TCPConnectionRequest
    let opened: NIODeadline
    var socket: TCPSocket?
    var channel: (any Channel)?
    /// Host data the guest connection has not taken yet (at most one read's worth).
    var pendingToGuest: ByteBuffer?
    var readInFlight = false
    /// Listed in the NAT's flows to pump at the end of this turn.
    var pumpScheduled = false
    var hostInputClosed = false
    var guestFINSent = false
    var hostOutputClosed = false
    var finished = false
    /// The host socket is closed: nothing more can be written to it.
    var hostGone = false
    var bytesToHost: UInt64 = 0
    /// Pieces written to the host socket that the kernel has not taken yet.
    var piecesToHost = 0
    var bytesToGuest: UInt64 = 0
    /// For published ports: the connection goes from the host into the guest.
    let inbound: Bool

    init(nat: NAT, request: TCPConnectionRequest, now: NIODeadline, inbound: Bool = false) {
        self.nat = nat
        self.request = request
        self.opened = now
        self.inbound = inbound
    }

    func hostConnected(_ channel: any Channel) {
        guard let nat, !finished else {
            channel.close(promise: nil)
            return
        }
        self.channel = channel
        let now = NIODeadline.now()
        guard let socket = nat.stack.acceptTCPConnectionRequest(request, now: now) else {
            // The guest gave up (or the stack refused) meanwhile.
            finish(now: now, resetHost: true)
            nat.flush()
            return
        }
        nat.counters.tcpConnectsSucceeded &+= 1
        attach(socket)
        nat.flush()
    }

    func hostConnectFailed(_ error: any Error) {
        guard let nat, !finished else { return }
        let now = NIODeadline.now()
        var refusal = TCPRefusal.reset
        if let io = error as? IOError {
            switch io.errnoCode {
            case ECONNREFUSED: nat.counters.tcpConnectsRefused &+= 1
            case ENETUNREACH: refusal = .unreachable(code: 0); nat.counters.tcpConnectsFailed &+= 1
            case EHOSTUNREACH: refusal = .unreachable(code: 1); nat.counters.tcpConnectsFailed &+= 1
            default: nat.counters.tcpConnectsFailed &+= 1
            }
        } else if case ChannelError.connectTimeout = error {
            nat.counters.tcpConnectsTimedOut &+= 1
        } else if let connection = error as? NIOConnectionError, connection.connectionErrors.contains(where: { ($0.error as? IOError)?.errnoCode == ECONNREFUSED }) {
            nat.counters.tcpConnectsRefused &+= 1
        } else {
            nat.counters.tcpConnectsFailed &+= 1
        }
        nat.logger.log(.notice, key: "tcp host connect failed", limiter: &nat.logLimiter, now: now, "tcp \(request): host connect failed: \(error)")
        nat.stack.refuseTCPConnectionRequest(request, with: refusal, now: now)
        finished = true
        nat.tcpFlowEnded(self)
        nat.flush()
    }

    /// Wires the guest socket's callbacks to this flow.
    func attach(_ socket: TCPSocket) {
        self.socket = socket
        socket.onConnected = { [weak self] in self?.pumpHostToGuest(now: .now()) }
        socket.onReadable = { [weak self] in self?.guestReadable() }
        socket.onWritable = { [weak self] in self?.pumpHostToGuest(now: .now()) }
        socket.onClosed = { [weak self] reason in self?.guestClosed(reason) }
    }

    var guestEstablished: Bool {
        guard let socket else { return false }
        switch socket.state {
        case .synSent, .synReceived, .closed: return false
        default: return true
        }
    }

    /// At most this many pieces wait in the host socket's write queue; past it the guest's data
    /// stays in its connection, whose window closes.
    static let maximumPiecesToHost = 1024

    /// `count` pieces left the host write queue: when the bound held the guest back, pump again.
    func piecesWritten(_ count: Int) {
        let wasFull = piecesToHost >= Self.maximumPiecesToHost
        piecesToHost -= count
        if wasFull, piecesToHost < Self.maximumPiecesToHost { guestReadable() }
    }

    /// Data (or the guest's FIN) arrived: pumped once this turn's frames are all handed over.
    func guestReadable() {
        guard !pumpScheduled, !finished, let nat else { return }
        pumpScheduled = true
        nat.pumpSoon(self)
    }

    /// Guest → host: read from the guest connection while the host socket takes more.
    func pumpGuestToHost(now: NIODeadline) {
        guard let socket, let channel, !finished else { return }
        if hostGone {
            if socket.bytesToRead > 0 {
                nat?.counters.tcpResetsFromHost &+= 1
                socket.abort(now: now)
                finish(now: now, resetHost: false)
            } else if socket.isReadClosed {
                hostOutputClosed = true
                finishIfDone(now: now)
            }
            return
        }
        var wrote = 0
        // The pieces as they arrived (slices of the frames read from the link), each written as it
        // is: the host write gathers them. The scratch list is taken, not borrowed, because a write
        // can call back into this function (writability).
        var chunks: [ByteBuffer] = []
        if let nat { swap(&chunks, &nat.chunkScratch) }
        // Bounded in bytes by the channel's high water mark (512 KiB) and in pieces by
        // `maximumPiecesToHost`: a guest's tiny segments, one piece per turn of the loop, cannot
        // queue half a million pieces toward a host that does not read.
        while channel.isWritable, piecesToHost < Self.maximumPiecesToHost {
            let taken = socket.readChunks(maximum: 65536, now: now, into: &chunks)
            guard taken > 0 else { break }
            let pieces = chunks.count
            for chunk in chunks.dropLast() { channel.write(chunk, promise: nil) }
            // The last write's promise completes once every piece of this batch left the queue.
            let written = channel.eventLoop.makePromise(of: Void.self)
            channel.write(chunks[pieces - 1], promise: written)
            piecesToHost += pieces
            written.futureResult.assumeIsolated().whenComplete { [weak self] _ in self?.piecesWritten(pieces) }
            chunks.removeAll(keepingCapacity: true)
            wrote += taken
        }
        // Kept for the next pass, unless a guest's tiny segments grew it past what bulk data needs
        // (64 KiB in MTU-sized pieces is about 45): memory stays bounded.
        if let nat, chunks.capacity <= 1024 { swap(&chunks, &nat.chunkScratch) }
        bytesToHost &+= UInt64(wrote)
        nat?.counters.tcpBytesToHost &+= UInt64(wrote)
        // Pumped once per turn of the loop (`guestReadable`): a burst of segments is one write(2).
        if wrote > 0 { channel.flush() }
        if socket.isReadClosed, !hostOutputClosed {
            // The guest sent FIN and everything before it has been handed to the host socket.
            hostOutputClosed = true
            channel.flush()
            channel.close(mode: .output, promise: nil)
            finishIfDone(now: now)
        }
    }

    /// Host → guest: give the guest connection what was read, then read more if it has room.
    func pumpHostToGuest(now: NIODeadline) {
        guard let socket, let channel, !finished, guestEstablished else { return }
        if var pending = pendingToGuest {
            let taken = socket.write(pending, now: now)
            bytesToGuest &+= UInt64(taken)
            nat?.counters.tcpBytesToGuest &+= UInt64(taken)
            pending.moveReaderIndex(forwardBy: taken)
            pendingToGuest = pending.readableBytes > 0 ? pending : nil
        }
        guard pendingToGuest == nil else { return }
        if hostInputClosed {
            if !guestFINSent {
                guestFINSent = true
                socket.close(now: now)
                finishIfDone(now: now)
            }
        } else if !readInFlight, socket.writableBytes > 0 {
            readInFlight = true
            channel.read()
        }
    }

    func hostRead(_ data: ByteBuffer) {
        if var pending = pendingToGuest {
            var more = data
            pending.writeBuffer(&more)
            pendingToGuest = pending
        } else {
            pendingToGuest = data
        }
    }

    func hostReadComplete() {
        readInFlight = false
        pumpHostToGuest(now: .now())
        nat?.flush()
    }

    func hostWritabilityChanged() {
        pumpGuestToHost(now: .now())
        nat?.flush()
    }

    func hostInputEnded() {
        hostInputClosed = true
        readInFlight = false
        pumpHostToGuest(now: .now())
        nat?.flush()
    }

    /// The host socket reset or failed: reset the guest connection.
    func hostFailed(_ error: any Error) {
        guard !finished else { return }
        nat?.counters.tcpResetsFromHost &+= 1
        nat?.logger.debug("tcp \(request): host socket failed: \(error)")
        let now = NIODeadline.now()
        socket?.abort(now: now)
        finish(now: now, resetHost: false)
        nat?.flush()
    }

    /// The host socket closed without an error. NIO closes it outright, without an `inputClosed`
    /// event, when the peer's FIN comes after we shut our output: an orderly end of the host's data,
    /// which the guest gets as FIN once it has taken what is pending.
    func hostInactive() {
        guard !finished else { return }
        let now = NIODeadline.now()
        hostGone = true
        hostInputClosed = true
        readInFlight = false
        if !hostOutputClosed, let socket, socket.bytesToRead > 0 {
            // The guest sent data the host will never read: reset, as the host's kernel would.
            nat?.counters.tcpResetsFromHost &+= 1
            socket.abort(now: now)
            finish(now: now, resetHost: false)
        } else {
            pumpHostToGuest(now: now)
        }
        nat?.flush()
    }

    func guestClosed(_ reason: TCPCloseReason) {
        guard !finished else { return }
        let now = NIODeadline.now()
        switch reason {
        case .closed:
            finish(now: now, resetHost: !(hostInputClosed && hostOutputClosed))
        default:
            nat?.counters.tcpResetsFromGuest &+= 1
            finish(now: now, resetHost: true)
        }
    }

    /// Both directions ended in order: the host socket can go; the guest connection finishes its
    /// close (TIME-WAIT and all) in the stack.
    func finishIfDone(now: NIODeadline) {
        if (hostOutputClosed || hostGone) && hostInputClosed && guestFINSent { finish(now: now, resetHost: false) }
    }

    func finish(now: NIODeadline, resetHost: Bool) {
        guard !finished else { return }
        finished = true
        if let channel {
            if resetHost, let provider = channel as? any SocketOptionProvider {
                // SO_LINGER 0: close sends RST, as the guest's reset asks.
                provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
            } else {
                channel.close(promise: nil)
            }
        }
        pendingToGuest = nil
        nat?.logger.debug("tcp close \(request) to host \(bytesToHost) B, to guest \(bytesToGuest) B")
        nat?.tcpFlowEnded(self)
    }

    /// A published port's connection that the guest did not answer within `connectTimeout`: the
    /// host client gets RST and the guest connection is dropped (no SYN again).
    func guestConnectTimedOut(now: NIODeadline, port: PublishedPort) {
        guard !finished, let nat else { return }
        nat.counters.publishedTimedOut &+= 1
        nat.logger.log(.notice, key: "published port: the guest did not answer", limiter: &nat.logLimiter, now: now,
                       "published \(port): \(request.guestAddress):\(request.guestPort) did not answer within \(nat.configuration.connectTimeout); the host connection is reset")
        // Finished first, so the guest connection's close is not counted as a reset from the guest.
        finish(now: now, resetHost: true)
        socket?.abort(now: now)
    }

    /// Resets both sides (the NAT is shutting down).
    func abort(now: NIODeadline) {
        socket?.abort(now: now)
        finish(now: now, resetHost: true)
    }

    func snapshot(now: NIODeadline) -> NATFlowSnapshot {
        NATFlowSnapshot(
            protocol: "tcp", guest: "\(request.guestAddress):\(request.guestPort)",
            remote: "\(request.destination):\(request.destinationPort)",
            state: socket.map { "\($0.state)" } ?? "connecting", bytesToHost: bytesToHost, bytesToGuest: bytesToGuest,
            ageSeconds: Double((now - opened).nanoseconds) / 1e9)
    }
}

/// The host socket's end of a flow.
final class HostTCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let flow: TCPFlow

    init(flow: TCPFlow) { self.flow = flow }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        flow.hostRead(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flow.hostReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flow.hostWritabilityChanged() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { flow.hostInputEnded() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        flow.hostFailed(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        flow.hostInactive()
    }
}
