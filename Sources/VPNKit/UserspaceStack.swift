public import Logging
public import NIOCore
import NIOPosix
import Synchronization
import VPNKitBase
import VPNKitDHCP
import VPNKitNAT
public import VPNKitStack
import VPNKitTransport
import VPNKitServices

/// A TCP/IP stack running on a SwiftNIO event loop over a link: the embedding API.
///
/// `UserspaceStack` is `Sendable`; every method may be called from any task or thread and hops to
/// the stack's event loop. Underneath sit the event-loop types — `StackDriver` and the state
/// machine `NetworkStack` — which ``withDriver(_:)`` hands to code that wants to work on the loop
/// directly.
///
/// ```swift
/// let stack = try await UserspaceStack.start(
///     configuration: StackConfiguration(subnet: IPv4Subnet("10.0.0.0/24")!),
///     link: .tap(device: "tap0", namespace: "guest"))
/// let listener = try await stack.listenTCP(port: 7)
/// for await connection in listener {
///     Task { while let bytes = try await connection.read() { try await connection.write(bytes) } }
/// }
/// ```
///
/// Services attach to a running stack: ``configureWithDHCP(hostName:configuration:timeout:)`` (a DHCP client),
/// ``serveDHCP(_:)`` (a DHCP server), ``attachNAT(_:dns:)`` (host sockets for the guest's traffic),
/// ``startCapture(toFile:)`` and ``exportMetrics(every:labelPrefix:dimensions:factory:)``. ``shutdown()``
/// stops all of them, closes the link and, when the stack made its own event loop, stops that too.
public final class UserspaceStack: Sendable {
    /// The loop every part of this stack runs on.
    public let eventLoop: any EventLoop
    /// The configuration the stack started with (a DHCP client changes the live addresses; see
    /// ``snapshot()``).
    public let configuration: StackConfiguration
    let driver: NIOLoopBound<StackDriver>
    let state: NIOLoopBound<State>
    let logger: Logger
    private let ownedGroup: MultiThreadedEventLoopGroup?
    /// Set once shutdown finished, readable from any thread (the loop may be gone by then).
    private let shutDownComplete = Mutex(false)

    /// How the link ended, as ``waitUntilLinkEnds()`` reports it.
    public enum LinkEnd: Sendable, Hashable {
        /// ``UserspaceStack/shutdown()`` was called.
        case shutDown
        /// The other side closed the link in an orderly way (a VM exited, a replay finished).
        case closedByPeer
        /// The link failed; the text says how.
        case failed(String)
    }

    /// State that lives on the event loop next to the driver: every attached service, typed.
    final class State {
        let capture: CaptureSwitch
        /// The fault injector between the capture and the stack, when the link has faults.
        let faults: FaultInjectingTransport?
        /// What the link's recipe left: the guest switch, the vmnet registry.
        let link: LinkContext
        unowned let driver: StackDriver
        var dhcpClient: DHCPClientService?
        var dhcpServer: DHCPService? {
            didSet { link.vmnetRegistry?.dhcp = dhcpServer }
        }
        var dhcpv6Server: DHCPv6Service?
        var nat: NAT?
        var dns: DNSService?
        var diagnostics: DiagnosticServices?
        var udpEcho: UDPSocket?
        var metrics: StackMetricsExporter?
        var listeners: [UInt16: AsyncStream<AsyncTCPConnection>.Continuation] = [:]
        var udpSockets: [Weak<AsyncUDPSocket>] = []
        var isShutDown = false
        /// How the link ended, once it has.
        var linkEnd: LinkEnd?
        var linkEndWaiters: [CheckedContinuation<LinkEnd, Never>] = []
        init(capture: CaptureSwitch, faults: FaultInjectingTransport?, link: LinkContext, driver: StackDriver) {
            self.capture = capture
            self.faults = faults
            self.link = link
            self.driver = driver
        }

        func linkEnded(_ end: LinkEnd) {
            guard linkEnd == nil else { return }
            linkEnd = end
            let waiters = linkEndWaiters
            linkEndWaiters.removeAll()
            for waiter in waiters { waiter.resume(returning: end) }
        }

        /// The guest's address as the DHCP server last bound it.
        func latestLease(now: NIODeadline) -> IPv4Address? {
            dhcpServer?.leases(now: now).filter { $0.state == .bound }.max(by: { $0.expires < $1.expires })?.address
        }

        /// A guest's connection to the switch ended (its VM stopped): the NAT flows of the addresses
        /// its MACs had, from the ARP cache and the DHCP leases, are closed.
        func guestsLeft(_ macs: Set<MACAddress>) {
            guard let nat, !macs.isEmpty else { return }
            let now = NIODeadline.now()
            var addresses = Set<IPv4Address>()
            for (address, mac) in driver.stack.arpCache.resolvedEntries(now: now) where macs.contains(mac) { addresses.insert(address) }
            for lease in dhcpServer?.leases(now: now) ?? [] where macs.contains(lease.hardwareAddress) { addresses.insert(lease.address) }
            for address in addresses { nat.closeFlows(ofGuest: .v4(address)) }
            driver.flush()
        }
    }

    private init(
        eventLoop: any EventLoop, configuration: StackConfiguration, driver: NIOLoopBound<StackDriver>, state: NIOLoopBound<State>,
        logger: Logger, ownedGroup: MultiThreadedEventLoopGroup?
    ) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.driver = driver
        self.state = state
        self.logger = logger
        self.ownedGroup = ownedGroup
    }

    /// Opens `link` and starts a stack on it: the stack announces itself (gratuitous ARP) and
    /// answers ARP, ping and whatever services are attached later.
    ///
    /// - Parameters:
    ///   - configuration: addresses, MTU and limits (the MTU is taken from the link when it differs).
    ///     The default is dual-stack: 192.168.65.0/24 and fd00:65::/64, advertised for SLAAC.
    ///   - link: the transport to run over.
    ///   - eventLoop: the loop to run on; nil uses the link's own loop if it has one, else the stack
    ///     makes a one-thread loop of its own and stops it on ``shutdown()``.
    ///   - logger: where the stack's services log (labels `vpnkit.stack`, `vpnkit.nat`, `vpnkit.dns`
    ///     by default).
    /// - Throws: the link's error when it cannot be opened (`TransportError` for the built-in ones).
    public static func start(
        configuration: StackConfiguration = StackConfiguration(ipv6: IPv6LinkConfiguration()), link: Link, on eventLoop: (any EventLoop)? = nil,
        logger: Logger = Logger(label: "vpnkit.stack")
    ) async throws -> UserspaceStack {
        var ownedGroup: MultiThreadedEventLoopGroup?
        let loop: any EventLoop
        if let given = eventLoop ?? link.eventLoop {
            loop = given
        } else {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            ownedGroup = group
            loop = group.next()
        }
        if let required = link.eventLoop, required !== loop {
            try? await ownedGroup?.shutdownGracefully()
            throw UserspaceStackError.wrongEventLoop
        }
        do {
            let context = LinkContext(loop: loop, stackMAC: configuration.macAddress, logger: logger)
            let transport = try await link.open(context).get()
            let captureFile = link.captureFile
            let faults = link.faults
            let (driver, state, effective) = try await loop.submit {
                var configuration = configuration
                let inner = transport.value
                configuration.mtu = inner.mtu
                // The capture sits next to the guest (it records what is really on the wire, with
                // the link's offloads); the faults sit between the capture and the stack.
                let sink: PcapFileSink?
                do {
                    sink = try captureFile.map { try PcapFileSink(path: $0) }
                } catch {
                    // The link is open and nobody will own it: close it before failing.
                    inner.close()
                    throw error
                }
                let capture = CaptureSwitch(wrapping: inner, sink: sink)
                let injector = faults.map { faults in
                    var reverse = faults
                    reverse.seed = faults.seed &+ 0x9E37_79B9
                    return FaultInjectingTransport(wrapping: capture, on: loop, toGuest: faults, fromGuest: reverse)
                }
                let top: any FrameTransport = injector ?? capture
                let driver = StackDriver(stack: NetworkStack(configuration: configuration), transport: top, eventLoop: loop)
                let state = State(capture: capture, faults: injector, link: context, driver: driver)
                context.vmnetRegistry?.usePool(of: configuration)
                context.guestsLeft = { [unowned state] macs in state.guestsLeft(macs) }
                driver.onTransportClosed = { [unowned state] error in
                    state.linkEnded(error.map { .failed(String(describing: $0)) } ?? .closedByPeer)
                }
                driver.start()
                return (NIOLoopBound(driver, eventLoop: loop), NIOLoopBound(state, eventLoop: loop), configuration)
            }.get()
            return UserspaceStack(
                eventLoop: loop, configuration: effective, driver: driver, state: state, logger: logger, ownedGroup: ownedGroup)
        } catch {
            try? await ownedGroup?.shutdownGracefully()
            throw error
        }
    }

    /// Runs `body` on the event loop with the driver (and through it the `NetworkStack`), then
    /// transmits whatever the stack produced. For work the async API does not cover.
    public func withDriver<T: Sendable>(_ body: @escaping @Sendable (StackDriver) throws -> T) async throws -> T {
        try await onLoop { driver, _ in try body(driver) }
    }

    /// Waits until the link ends: the peer closed it, it failed, or ``shutdown()`` was called.
    public func waitUntilLinkEnds() async -> LinkEnd {
        if shutDownComplete.withLock({ $0 }) { return .shutDown }
        let state = self.state
        let loop = eventLoop
        return await withCheckedContinuation { continuation in
            loop.execute {
                let s = state.value
                if let end = s.linkEnd { return continuation.resume(returning: end) }
                s.linkEndWaiters.append(continuation)
            }
        }
    }

    /// Stops every attached service (a final metrics report, the NAT's host sockets, the DHCP
    /// client — without releasing its lease — and server), resets open TCP connections, flushes a
    /// capture, closes the link, and stops the event loop when the stack made it. Safe to call more
    /// than once. The resets are sent once, best effort: a peer whose MAC address must first be
    /// resolved again (its ARP entry expired) does not get one before the link closes.
    public func shutdown() async {
        let driver = self.driver
        let state = self.state
        try? await eventLoop.submit {
            let s = state.value
            guard !s.isShutDown else { return }
            s.isShutDown = true
            if let metrics = s.metrics {
                metrics.report(driver: driver.value, state: s)
                metrics.stop()
            }
            s.metrics = nil
            s.dhcpClient?.close()
            s.dhcpClient = nil
            s.dhcpServer?.close()
            s.dhcpServer = nil
            s.dhcpv6Server?.close()
            s.dhcpv6Server = nil
            s.dns?.close()
            s.dns = nil
            s.diagnostics = nil
            s.udpEcho?.close()
            s.udpEcho = nil
            s.nat?.close()
            s.nat = nil
            for listener in s.listeners.values { listener.finish() }
            s.listeners.removeAll()
            for socket in s.udpSockets { socket.value?.closeOnEventLoop() }
            s.udpSockets.removeAll()
            driver.value.stack.abortAllTCP(now: .now())
            driver.value.flush()
            s.capture.sink = nil
            driver.value.onTransportClosed = nil
            driver.value.stop()
            s.linkEnded(.shutDown)
        }.get()
        shutDownComplete.withLock { $0 = true }
        try? await ownedGroup?.shutdownGracefully()
    }

    /// Runs `body` on the loop with the live state; fails with ``UserspaceStackError/shutDown``
    /// after ``shutdown()``.
    func onLoop<T: Sendable>(_ body: @escaping @Sendable (StackDriver, State) throws -> T) async throws -> T {
        let driver = self.driver
        let state = self.state
        return try await eventLoop.submit {
            guard !state.value.isShutDown else { throw UserspaceStackError.shutDown }
            let d = driver.value
            defer { d.flush() }
            return try body(d, state.value)
        }.get()
    }
}
