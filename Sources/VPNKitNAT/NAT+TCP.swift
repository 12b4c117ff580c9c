import Logging
import NIOCore
import NIOPosix
import VPNKitBase
import VPNKitStack
import VPNKitTCP
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
        #if os(Linux)
        if let reactor = eventLoop as? Reactor {
            counters.tcpConnectsStarted &+= 1
            let flow = TCPFlow(nat: self, request: request, now: now)
            tcpFlows[request] = flow
            logger.debug("tcp open \(request) via \(target.description(port: request.destinationPort))")
            connectOnReactor(reactor, flow: flow, target: target, port: request.destinationPort)
            return
        }
        #endif
        guard let address = SocketAddress.ip(target, port: request.destinationPort) else {
            stack.refuseTCPConnectionRequest(request, with: .unreachable(code: 1), now: now)
            return
        }
        counters.tcpConnectsStarted &+= 1
        let flow = TCPFlow(nat: self, request: request, now: now)
        tcpFlows[request] = flow
        logger.debug("tcp open \(request) via \(address)")
        let boundFlow = NIOLoopBound(flow, eventLoop: eventLoop)
        let configuration = self.configuration
        var bootstrap = ClientBootstrap(group: eventLoop)
        // From the outbound address of the destination's family, when one is set.
        if let local = target.family == .v4 ? outboundTCPSource.v4 : outboundTCPSource.v6 { bootstrap = bootstrap.bind(to: local) }
        bootstrap
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
                case .success(let channel): flow.hostConnected(NIOHostStream(channel: channel, flow: flow))
                case .failure(let error): flow.hostConnectFailed(error)
                }
            }
    }

    #if os(Linux)
    /// The reactor's connect: a `ReactorStream` whose events go to the flow; a socket that cannot be
    /// made at all (no descriptors left) fails the flow's connect after this turn, as a refused one does.
    private func connectOnReactor(_ reactor: Reactor, flow: TCPFlow, target: IPAddress, port: UInt16) {
        let source = configuration.outbound(target.family).map { SocketAddressStorage($0, port: 0) }
        do {
            let stream = try ReactorStream.connect(
                on: reactor, to: SocketAddressStorage(target, port: port), from: source, timeout: configuration.connectTimeout,
                options: configuration.hostStreamOptions)
            stream.delegate = flow
            flow.host = stream
        } catch {
            reactor.enqueueLocal { [weak flow] in flow?.hostConnectFailed(error) }
        }
    }
    #endif

    /// A list for a flow's actions, from a small pool (no list is made per event or per flow).
    func takeActionList() -> [NATTCPFlowMachine.Action] {
        actionLists.popLast() ?? []
    }

    /// Back to the pool (empty: emptying it here would copy it, since the caller still holds it);
    /// a list grown past what events need, or one more than the pool keeps (nested flows), is let go.
    func returnActionList(_ list: [NATTCPFlowMachine.Action]) {
        guard list.isEmpty, list.capacity <= 64, actionLists.count < 8 else { return }
        actionLists.append(list)
    }

    func tcpFlowEnded(_ flow: TCPFlow) {
        guard tcpFlows[flow.request] === flow else { return }
        tcpFlows[flow.request] = nil
        counters.tcpFlowsClosed &+= 1
    }
}

/// One guest TCP connection and its host socket: the SwiftNIO side of a `NATTCPFlowMachine`. It
/// hands the machine what happens on either end and performs the actions it returns; every decision
/// (when to read which end, when to close or reset, what to count) is the machine's.
///
/// How its work reaches the link (see `NAT`): events from the host socket that may act on the guest
/// connection run inside `driver.perform`; events from the stack (the guest socket's callbacks) and
/// from the NAT's own tasks already run inside a call of the driver's.
final class TCPFlow {
    weak var nat: NAT?
    let request: TCPConnectionRequest
    let opened: NIODeadline
    /// For a published port's flow: the port (the connection goes from the host into the guest).
    let published: PublishedPort?
    var socket: TCPSocket?
    /// The host socket: once connected (SwiftNIO), or from the start of the connect (reactor).
    var host: (any HostStream)?
    private(set) var machine: NATTCPFlowMachine
    /// Events that came while actions were being performed (a write's completion, a close's
    /// callbacks): handed over once those actions are done, in order. The first waits in a slot of
    /// its own (rarely more than one waits: no list is made for it).
    private var queuedFirst: NATTCPFlowMachine.Event?
    private var queued: [NATTCPFlowMachine.Event] = []
    private var dispatching = false
    /// The error the host socket last reported, for the log line the machine asks for.
    private var hostError: (any Error)?

    init(nat: NAT, request: TCPConnectionRequest, now: NIODeadline, published: PublishedPort? = nil) {
        self.nat = nat
        self.request = request
        self.opened = now
        self.published = published
        self.machine = NATTCPFlowMachine(inbound: published != nil)
    }

    var finished: Bool { machine.finished }
    var guestEstablished: Bool { machine.guestEstablished }

    // MARK: Events

    /// From the host socket: inside `driver.perform`, so that what the guest connection produces
    /// goes to the link when the event is handled.
    func hostEvent(_ event: NATTCPFlowMachine.Event) {
        guard !dispatching, let nat else { return handle(event) }
        nat.driver.perform { _, now in handle(event, now: now) }
    }

    /// From the stack or the NAT, already inside a call of the driver's. Without `now`, the clock
    /// is read only when there is something to do (most of a guest's readable callbacks, one per
    /// segment, find a pump already scheduled).
    func handle(_ event: NATTCPFlowMachine.Event, now: NIODeadline? = nil) {
        if dispatching {
            if queuedFirst == nil, queued.isEmpty { queuedFirst = event } else { queued.append(event) }
            return
        }
        dispatching = true
        var now = now
        var next: NATTCPFlowMachine.Event? = event
        // A list from the NAT's pool: its storage is reused event after event, flow after flow.
        var actions = nat?.takeActionList() ?? []
        while let event = next {
            next = nil
            machine.handle(event, sides(), into: &actions)
            if !actions.isEmpty {
                let time = now ?? .now()
                now = time
                // By index: the list stays this call's own while actions run.
                var index = 0
                while index < actions.count {
                    if let result = perform(actions[index], now: time) { next = result }
                    index += 1
                }
                actions.removeAll(keepingCapacity: true)
            }
            // An action's result goes first, so that a pass of moves is not interleaved.
            if next == nil, let first = queuedFirst {
                next = first
                queuedFirst = queued.isEmpty ? nil : queued.removeFirst()
            }
        }
        nat?.returnActionList(actions)
        dispatching = false
    }

    /// Both ends as they are now.
    private func sides() -> NATTCPFlowMachine.Sides {
        guard let socket else { return NATTCPFlowMachine.Sides(hostWritable: host?.isWritable ?? false) }
        return NATTCPFlowMachine.Sides(
            guestUnread: socket.bytesToRead, guestReadClosed: socket.isReadClosed, guestRoom: socket.writableBytes,
            hostWritable: host?.isWritable ?? false)
    }

    func hostConnected(_ host: any HostStream) {
        self.host = host
        hostEvent(.hostConnected)
    }

    func hostConnectFailed(_ error: any Error) {
        let failure: NATTCPFlowMachine.HostConnectFailure
        if let io = error as? IOError {
            failure = connectFailure(errno: io.errnoCode)
        } else if case ChannelError.connectTimeout = error {
            failure = .timedOut
        } else if let connection = error as? NIOConnectionError,
            connection.connectionErrors.contains(where: { ($0.error as? IOError)?.errnoCode == ECONNREFUSED })
        {
            failure = .refused
        } else if let errno = Self.reactorErrno(error) {
            // The reactor reports its connect timeout as ETIMEDOUT.
            failure = errno == ETIMEDOUT ? .timedOut : connectFailure(errno: errno)
        } else {
            failure = .other
        }
        hostError = error
        hostEvent(.hostConnectFailed(failure))
    }

    /// The errno of a reactor socket's error (nil for any other error, and off Linux).
    private static func reactorErrno(_ error: any Error) -> CInt? {
        #if os(Linux)
        return (error as? SystemError)?.errno
        #else
        return nil
        #endif
    }

    /// What a connect's errno means for the guest.
    private func connectFailure(errno: CInt) -> NATTCPFlowMachine.HostConnectFailure {
        switch errno {
        case ECONNREFUSED: return .refused
        case ENETUNREACH: return .networkUnreachable
        case EHOSTUNREACH: return .hostUnreachable
        // A host without IPv6 (no IPv6 source address, or no IPv6 at all): no route, as far as
        // the guest can tell, so it tries IPv4 at once rather than taking the port as closed.
        case EADDRNOTAVAIL where request.destination.family == .v6, EAFNOSUPPORT where request.destination.family == .v6:
            return .networkUnreachable
        default: return .other
        }
    }

    func hostFailed(_ error: any Error) {
        hostError = error
        hostEvent(.hostFailed)
    }

    /// Makes this flow the guest socket's delegate (it holds the flow until the guest connection
    /// ends: TIME-WAIT's segments still find it).
    func attach(_ socket: TCPSocket) {
        self.socket = socket
        socket.delegate = self
    }

    /// A published port's connection that the guest did not answer within `connectTimeout`: the
    /// host client gets RST and the guest connection is dropped (no SYN again).
    func guestConnectTimedOut(now: NIODeadline) { handle(.guestConnectTimedOut, now: now) }

    /// Resets both sides (the NAT is shutting down, or the guest went away).
    func abort(now: NIODeadline) { handle(.abort, now: now) }

    // MARK: Actions

    /// Performs one action; returns its result, for actions that have one.
    private func perform(_ action: NATTCPFlowMachine.Action, now: NIODeadline) -> NATTCPFlowMachine.Event? {
        switch action {
        case .acceptGuest:
            guard let socket = nat?.stack.acceptTCPConnectionRequest(request, now: now) else { return .guestAcceptFailed }
            attach(socket)
            return .guestAccepted
        case .refuseGuest(let refusal):
            nat?.stack.refuseTCPConnectionRequest(request, with: refusal, now: now)
        case .moveToHost(let maximum):
            return moveToHost(maximum: maximum, now: now)
        case .writeToGuest(let bytes):
            return .guestTook(socket?.write(bytes, now: now) ?? 0)
        case .closeGuest:
            socket?.close(now: now)
        case .abortGuest:
            socket?.abort(now: now)
        case .schedulePump:
            nat?.pumpSoon(self)
        case .readHost:
            host?.read()
        case .flushHost:
            host?.flush()
        case .shutdownHostOutput:
            host?.shutdownOutput()
        case .closeHost(let reset):
            host?.close(reset: reset)
        case .count(let count):
            nat?.counters.add(count)
        case .log(let line):
            log(line, now: now)
        case .forget:
            // The machine is closed: the guest connection finishes its close (TIME-WAIT and all)
            // without the flow, which goes once its host socket has.
            socket?.delegate = nil
            nat?.tcpFlowEnded(self)
        }
        return nil
    }

    /// Takes up to `maximum` bytes from the guest connection in the pieces they arrived in (slices
    /// of the frames read from the link) and writes each as it is: the host write gathers them.
    private func moveToHost(maximum: Int, now: NIODeadline) -> NATTCPFlowMachine.Event {
        guard let socket, let host else { return .movedToHost(bytes: 0, pieces: 0) }
        // The NAT's scratch list, taken rather than borrowed: its storage is reused move after move.
        var chunks: [ByteBuffer] = []
        if let nat { swap(&chunks, &nat.chunkScratch) }
        let taken = socket.readChunks(maximum: maximum, now: now, into: &chunks)
        let pieces = taken > 0 ? chunks.count : 0
        // The host write gathers them; `hostTookPieces` follows once they have left its queue.
        if pieces > 0 { host.writePieces(chunks) }
        chunks.removeAll(keepingCapacity: true)
        // Kept for the next move, unless a guest's tiny segments grew it past what bulk data needs
        // (64 KiB in MTU-sized pieces is about 45): memory stays bounded.
        if let nat, chunks.capacity <= 1024 { swap(&chunks, &nat.chunkScratch) }
        return .movedToHost(bytes: taken, pieces: pieces)
    }

    /// Formatted only when the line is logged.
    private var hostErrorText: String { hostError.map { "\($0)" } ?? "unknown error" }

    private func log(_ line: NATTCPFlowMachine.Log, now: NIODeadline) {
        guard let nat else { return }
        let request = self.request
        switch line {
        case .hostConnectFailed:
            nat.logger.log(.notice, key: "tcp host connect failed", limiter: &nat.logLimiter, now: now,
                           "tcp \(request): host connect failed: \(self.hostErrorText)")
        case .hostFailed:
            nat.logger.debug("tcp \(request): host socket failed: \(self.hostErrorText)")
        case .guestDidNotAnswer:
            guard let port = published else { return }
            nat.logger.log(.notice, key: "published port: the guest did not answer", limiter: &nat.logLimiter, now: now,
                           "published \(port): \(request.guestAddress):\(request.guestPort) did not answer within \(nat.configuration.connectTimeout); the host connection is reset")
        case .closed:
            nat.logger.debug("tcp close \(request) to host \(self.machine.bytesToHost) B, to guest \(self.machine.bytesToGuest) B")
        }
    }

    func snapshot(now: NIODeadline) -> NATFlowSnapshot {
        NATFlowSnapshot(
            protocol: "tcp", guest: request.guestAddress.description(port: request.guestPort),
            remote: request.destination.description(port: request.destinationPort),
            state: socket.map { "\($0.state)" } ?? "connecting", bytesToHost: machine.bytesToHost, bytesToGuest: machine.bytesToGuest,
            ageSeconds: Double((now - opened).nanoseconds) / 1e9)
    }
}

extension NATCounters {
    mutating func add(_ count: NATTCPFlowMachine.Count) {
        switch count {
        case .connectSucceeded: tcpConnectsSucceeded &+= 1
        case .connectRefused: tcpConnectsRefused &+= 1
        case .connectFailed: tcpConnectsFailed &+= 1
        case .connectTimedOut: tcpConnectsTimedOut &+= 1
        case .resetFromHost: tcpResetsFromHost &+= 1
        case .resetFromGuest: tcpResetsFromGuest &+= 1
        case .publishedTimedOut: publishedTimedOut &+= 1
        case .bytesToHost(let bytes): tcpBytesToHost &+= UInt64(bytes)
        case .bytesToGuest(let bytes): tcpBytesToGuest &+= UInt64(bytes)
        }
    }
}

/// The guest socket's events, as the flow's.
extension TCPFlow: TCPSocketDelegate {
    func tcpSocketConnected(_ socket: TCPSocket) { handle(.guestConnected) }
    func tcpSocketReadable(_ socket: TCPSocket) { handle(.guestReadable) }
    func tcpSocketWritable(_ socket: TCPSocket) { handle(.guestWritable) }
    func tcpSocketClosed(_ socket: TCPSocket, _ reason: TCPCloseReason) { handle(.guestClosed(reason)) }
}

/// The host socket's end of a flow: hands each event to the flow.
final class HostTCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let flow: TCPFlow

    init(flow: TCPFlow) { self.flow = flow }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Only kept until the read completes: no driver call needed.
        flow.handle(.hostRead(unwrapInboundIn(data)))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flow.hostEvent(.hostReadComplete)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flow.hostEvent(.hostWritable) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { flow.hostEvent(.hostEOF) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        flow.hostFailed(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        flow.hostEvent(.hostClosed)
    }
}
