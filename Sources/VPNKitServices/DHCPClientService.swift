public import NIOCore
public import VPNKitBase
import VPNKitARP
import VPNKitIPv4
public import VPNKitStack
public import VPNKitDHCP

/// A change of the client's lease.
public enum DHCPClientEvent: Sendable {
    /// The stack now uses the lease's address: a first bind, a new address, or changed parameters.
    case bound(DHCPClientLease)
    /// The lease was extended with the same parameters.
    case renewed(DHCPClientLease)
    /// The address was removed from the stack: the lease expired, a NAK, the server moved the lease, or a
    /// release. `reason` says which.
    case lost(IPv4Address, reason: String)
}

/// The DHCP client attached to a stack: it binds UDP port 68, probes offered addresses with ARP,
/// configures the stack's address, subnet and default router when a lease is bound, and removes
/// them when it is lost. Its timers run through the stack's (`StackTimerClient`). Confined to the
/// thread driving the stack. `events` yields every change for Swift concurrency; `onEvent` sees them
/// synchronously.
public final class DHCPClientService: StackTimerClient {
    /// The client state machine, for its state, lease and counters.
    public private(set) var client: DHCPClient
    private weak var stack: NetworkStack?
    private var socket: UDPSocket?
    /// Called synchronously on the stack's thread for every event, before it is yielded to `events`.
    public var onEvent: ((DHCPClientEvent) -> Void)?
    /// Every lease change, in order (the newest 16 are kept for a slow reader).
    public let events: AsyncStream<DHCPClientEvent>
    private let continuation: AsyncStream<DHCPClientEvent>.Continuation

    /// Binds UDP port 68 on `stack`, takes over the stack's `arpObserver`, and registers with the stack's
    /// timers. Nothing is sent before `start(now:)`.
    ///
    /// Throws `StackError.addressInUse` when port 68 is already bound. The stack holds the service
    /// weakly: keep a reference while it should run.
    public init(stack: NetworkStack, configuration: DHCPClientConfiguration) throws(StackError) {
        self.stack = stack
        self.client = DHCPClient(configuration: configuration)
        (events, continuation) = AsyncStream.makeStream(of: DHCPClientEvent.self, bufferingPolicy: .bufferingNewest(16))
        // Weak references: the service may go away before the stack.
        self.socket = try stack.bindUDP(port: BOOTP.clientPort) { [weak self] message in
            guard let self, message.sourcePort == BOOTP.serverPort, let reply = try? DHCPMessage(parsing: DHCPPacket(message.payload)) else { return }
            self.perform(self.client.receive(reply, now: message.receivedAt), now: message.receivedAt)
        }
        stack.arpObserver = { [weak self] arp, now in
            guard let self else { return }
            self.perform(
                self.client.arpSeen(
                    sender: arp.senderProtocolAddress, senderHardwareAddress: arp.senderHardwareAddress, target: arp.targetProtocolAddress,
                    isRequest: arp.operation == .request, now: now), now: now)
        }
        stack.registerTimerClient(self)
    }

    /// The current lease; nil unless BOUND, RENEWING or REBINDING.
    public var lease: DHCPClientLease? { client.lease }
    /// The client's current state.
    public var state: DHCPClient.State { client.state }

    /// Starts acquiring an address: sends a DISCOVER, or a REQUEST for `previousAddress` when the
    /// configuration names one.
    public func start(now: NIODeadline) { perform(client.start(now: now), now: now) }

    /// Sends a RELEASE for the lease (when there is one), removes the address from the stack, and stops
    /// the client. `start(now:)` begins again.
    public func release(now: NIODeadline) { perform(client.release(now: now), now: now) }

    /// When the client next needs `poll(now:)`; read by the stack's timer.
    public var nextDeadline: NIODeadline? { client.nextDeadline }

    /// Runs the client's due timers and performs what they produce (sends, probes, configuration
    /// changes). Called by the stack's timer.
    public func poll(now: NIODeadline) { perform(client.poll(now: now), now: now) }

    private func perform(_ actions: [DHCPClientAction], now: NIODeadline) {
        guard let stack else { return }
        for action in actions {
            switch action {
            case .send(let message, let from, let to):
                var payload = ByteBuffer.withHeadroom(capacity: message.encodedLength)
                message.write(to: &payload)
                try? stack.sendUDP(
                    payload, from: .v4(from), port: BOOTP.clientPort, to: .v4(to), port: BOOTP.serverPort,
                    linkDestination: to == .broadcast ? .broadcast : nil, now: now)
            case .probe(let address):
                stack.sendARPProbe(for: address)
            case .bind(let lease):
                // RFC 3442: with classless routes the Router option is ignored; the default route is the /0 one.
                let router = lease.classlessStaticRoutes.isEmpty
                    ? lease.routers.first : lease.classlessStaticRoutes.first { $0.prefixLength == 0 }?.router
                stack.configure(address: lease.address, subnet: lease.subnet, router: router, now: now)
                emit(.bound(lease))
            case .renewed(let lease):
                emit(.renewed(lease))
            case .unbind(let address, let reason):
                stack.unconfigure(address: address)
                emit(.lost(address, reason: reason))
            }
        }
    }

    private func emit(_ event: DHCPClientEvent) {
        onEvent?(event)
        continuation.yield(event)
    }

    /// Unbinds port 68, clears the stack's `arpObserver` and finishes `events`. The lease is not released
    /// (call `release(now:)` first for that) and the address stays configured.
    public func close() {
        socket?.close()
        socket = nil
        stack?.arpObserver = nil
        continuation.finish()
    }
}
