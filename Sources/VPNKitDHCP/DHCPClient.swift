public import NIOCore
public import VPNKitBase
public import VPNKitIPv4

/// What a DHCP client needs to know about itself.
public struct DHCPClientConfiguration: Sendable, Hashable {
    /// The client's MAC address, sent in `chaddr`. Replies for another address are ignored.
    public var hardwareAddress: MACAddress
    /// Option 61; nil sends none (the server then keys on the MAC).
    public var clientIdentifier: [UInt8]?
    /// Option 12, sent in DISCOVER and REQUEST (not in DECLINE or RELEASE); nil sends none.
    public var hostName: String?
    /// A previous lease's address: start in INIT-REBOOT and ask for it again.
    public var previousAddress: IPv4Address?
    /// Option 55, sent in DISCOVER and REQUEST. The default asks for everything ``DHCPClientLease`` holds.
    public var parameterRequestList: [DHCPOptionCode] = [
        .subnetMask, .router, .domainNameServer, .hostName, .domainName, .interfaceMTU, .broadcastAddress, .leaseTime,
        .renewalTime, .rebindingTime, .domainSearch, .classlessStaticRoute,
    ]
    /// The first retransmission timeout; default 4 s. It doubles on each retry up to `maximumRetransmit`
    /// (RFC 2131 §4.1), with ±1 s of random jitter and never under 1 s.
    public var initialRetransmit: TimeAmount = .seconds(4)
    /// The ceiling of the doubling retransmission timeout; default 64 s.
    public var maximumRetransmit: TimeAmount = .seconds(64)
    /// REQUESTs sent in REQUESTING or INIT-REBOOT without an answer before the client starts over with a
    /// DISCOVER; default 4.
    public var maximumRequestAttempts = 4
    /// Whether to probe an acknowledged address with ARP before taking it (RFC 5227); default true.
    /// INIT-REBOOT does not probe.
    public var probeAddress = true
    /// ARP probes sent for an address before taking it; default 3.
    public var probeCount = 3
    /// The time between two ARP probes; default 1 s.
    public var probeInterval: TimeAmount = .seconds(1)
    /// How long to wait after the last probe before taking the address (ANNOUNCE_WAIT); default 2 s. A
    /// conflict seen meanwhile still declines it.
    public var probeWait: TimeAmount = .seconds(2)
    /// The wait after a DECLINE before starting over; default 10 s, the minimum RFC 2131 §3.1 asks for.
    public var declineBackoff: TimeAmount = .seconds(10)
    /// Seed of the pseudo-random transaction IDs and retransmission jitter; by default derived from
    /// `hardwareAddress`, so clients on one link do not retransmit in step.
    public var seed: UInt64

    /// Creates a configuration for `hardwareAddress`, with the defaults given on each property and a seed
    /// derived from the address.
    public init(hardwareAddress: MACAddress) {
        self.hardwareAddress = hardwareAddress
        self.seed = hardwareAddress.rawValue | 1
    }
}

/// A lease as the client sees it.
public struct DHCPClientLease: Sendable, Hashable {
    /// The address assigned to the client (`yiaddr`).
    public var address: IPv4Address
    /// The address's subnet, from option 1 (a /24 when the server sent no mask).
    public var subnet: IPv4Subnet
    /// Routers from option 3, in the server's order; empty when none was sent.
    public var routers: [IPv4Address]
    /// DNS servers from option 6; empty when none was sent.
    public var dnsServers: [IPv4Address]
    /// The domain name from option 15, if sent.
    public var domainName: String?
    /// The DNS search list from option 119; empty when absent or malformed.
    public var searchDomains: [String]
    /// The interface MTU from option 26, in bytes, if sent.
    public var mtu: Int?
    /// The server that granted the lease: option 54, or `siaddr` when the option is missing. Renewals are
    /// sent to it.
    public var serverIdentifier: IPv4Address
    /// The lease duration from option 51; one hour when the server sent none.
    public var leaseTime: TimeAmount
    /// T1, counted from `acquired`: when the client starts renewing with its server. Option 58, or half
    /// the lease; never longer than the lease.
    public var renewalTime: TimeAmount
    /// T2, counted from `acquired`: when the client starts asking any server. Option 59, or 7/8 of the
    /// lease; kept between T1 and the lease time.
    public var rebindingTime: TimeAmount
    /// Routes from option 121; empty when absent or malformed. When present, ``DHCPClientService`` takes
    /// the default route from their /0 entry and ignores `routers` (RFC 3442).
    public var classlessStaticRoutes: [ClasslessStaticRoute]
    /// When the lease (or its last renewal) was acknowledged.
    public var acquired: NIODeadline

    /// When RENEWING begins: `acquired` plus `renewalTime`.
    public var renewAt: NIODeadline { acquired + renewalTime }
    /// When REBINDING begins: `acquired` plus `rebindingTime`.
    public var rebindAt: NIODeadline { acquired + rebindingTime }
    /// When the lease ends and the address must no longer be used: `acquired` plus `leaseTime`.
    public var expiresAt: NIODeadline { acquired + leaseTime }
}

/// What the client asks its owner to do.
public enum DHCPClientAction: Sendable {
    /// Send `message` from port 68 to `destination` port 67 (255.255.255.255 means broadcast).
    /// `from` is 0.0.0.0 until an address is bound.
    case send(DHCPMessage, from: IPv4Address, to: IPv4Address)
    /// Send an ARP probe for the address.
    case probe(IPv4Address)
    /// Take the lease's address (first bind, or a renewal that changed something).
    case bind(DHCPClientLease)
    /// The lease was renewed or rebound with the same parameters.
    case renewed(DHCPClientLease)
    /// Stop using the address.
    case unbind(IPv4Address, reason: String)
}

/// The RFC 2131 client as a state machine: messages, ARP sightings and the time go in; messages to
/// send, probes and (un)binding come out.
public struct DHCPClient: Sendable {
    /// The client's RFC 2131 state. The raw values are the RFC's names, for logs.
    public enum State: String, Sendable {
        /// `stopped`: not started, or released. `initial`: waiting out `declineBackoff` before starting
        /// over. `selecting`: DISCOVER sent, waiting for an offer. `requesting`: REQUEST sent for the
        /// offer. `probing`: acknowledged, checking with ARP that nobody else uses the address.
        case stopped, initial = "INIT", selecting = "SELECTING", requesting = "REQUESTING", probing = "PROBING"
        /// `bound`: using the lease. `renewing`: past T1, REQUEST sent to the lease's server.
        /// `rebinding`: past T2, REQUEST broadcast to any server. `rebooting`: INIT-REBOOT, asking to
        /// keep `previousAddress`.
        case bound = "BOUND", renewing = "RENEWING", rebinding = "REBINDING", rebooting = "INIT-REBOOT"
    }

    /// The configuration the client was created with.
    public let configuration: DHCPClientConfiguration
    /// The current state; `stopped` until `start(now:)`.
    public private(set) var state: State = .stopped
    /// The lease in use while BOUND, RENEWING or REBINDING; nil otherwise.
    public private(set) var lease: DHCPClientLease?
    /// Messages sent so far, retransmissions, DECLINEs and RELEASEs included.
    public private(set) var transmissions = 0
    /// NAKs received in answer to a REQUEST; each one sends the client back to a DISCOVER.
    public private(set) var naks = 0
    /// DECLINEs sent because an ARP probe found the offered address in use.
    public private(set) var declines = 0

    private var random: SplitMix64
    private var xid: UInt32 = 0
    private var attempts = 0
    private var retransmitAt: NIODeadline?
    private var currentTimeout: TimeAmount = .zero
    private var waitUntil: NIODeadline?
    /// The offer being requested or probed.
    private var offer: DHCPClientLease?
    private var probesSent = 0
    private var started: NIODeadline = .uptimeNanoseconds(0)

    /// Creates a stopped client. Nothing is sent until `start(now:)`.
    public init(configuration: DHCPClientConfiguration) {
        self.configuration = configuration
        self.random = SplitMix64(seed: configuration.seed)
    }

    /// Starts: INIT-REBOOT when a previous address is known, INIT otherwise.
    public mutating func start(now: NIODeadline) -> [DHCPClientAction] {
        if let previous = configuration.previousAddress {
            state = .rebooting
            newTransaction(now: now)
            offer = nil
            return sendRequest(requested: previous, server: nil, ciaddr: .any, now: now)
        }
        return restart(now: now)
    }

    /// When `poll(now:)` next has work: a retransmission, a probe, the end of a wait, or T1, T2 or
    /// expiry. Nil when stopped.
    public var nextDeadline: NIODeadline? {
        var times = [retransmitAt, waitUntil].compactMap { $0 }
        if let lease, [.bound, .renewing, .rebinding].contains(state) {
            times.append(state == .bound ? lease.renewAt : state == .renewing ? lease.rebindAt : lease.expiresAt)
        }
        return times.min()
    }

    // MARK: - Timers

    /// Runs the timers due at `now`: retransmissions (starting over after `maximumRequestAttempts`),
    /// probes, the end of a wait, and the T1, T2 and expiry transitions. Call it at or after
    /// `nextDeadline`; an early call returns nothing.
    public mutating func poll(now: NIODeadline) -> [DHCPClientAction] {
        var actions: [DHCPClientAction] = []
        if let until = waitUntil, now >= until {
            waitUntil = nil
            switch state {
            case .probing:
                return finishProbing(now: now)
            case .initial:
                return restart(now: now)
            default:
                break
            }
        }
        if let lease, [.bound, .renewing, .rebinding].contains(state) {
            if now >= lease.expiresAt {
                state = .initial
                self.lease = nil
                actions.append(.unbind(lease.address, reason: "lease expired"))
                return actions + restart(now: now)
            }
            if state == .renewing, now >= lease.rebindAt {
                state = .rebinding
                newTransaction(now: now)
                return actions + sendRequest(requested: nil, server: nil, ciaddr: lease.address, now: now)
            }
            if state == .bound, now >= lease.renewAt {
                state = .renewing
                newTransaction(now: now)
                return actions + sendRequest(requested: nil, server: nil, ciaddr: lease.address, now: now)
            }
        }
        guard let at = retransmitAt, now >= at else { return actions }
        switch state {
        case .selecting:
            return actions + sendDiscover(now: now, retry: true)
        case .requesting, .rebooting:
            if attempts >= configuration.maximumRequestAttempts { return actions + restart(now: now) }
            return actions + resendRequest(now: now)
        case .renewing, .rebinding:
            return actions + resendRequest(now: now)
        case .probing:
            return actions + sendProbe(now: now)
        default:
            retransmitAt = nil
            return actions
        }
    }

    // MARK: - Messages

    /// Feeds a message from a server (port 67 to 68). Replies to another transaction or hardware address,
    /// and messages unexpected in the current state, are ignored: the result is empty.
    public mutating func receive(_ message: DHCPMessage, now: NIODeadline) -> [DHCPClientAction] {
        guard message.op == DHCPMessage.bootReply, message.transactionID == xid,
            message.clientHardwareAddress == configuration.hardwareAddress, let options = try? message.allOptions(),
            let type = options.messageType
        else { return [] }
        switch (state, type) {
        case (.selecting, .offer):
            guard let offered = makeLease(message, options, now: now) else { return [] }
            offer = offered
            state = .requesting
            attempts = 0
            currentTimeout = configuration.initialRetransmit
            return sendRequest(requested: offered.address, server: offered.serverIdentifier, ciaddr: .any, now: now)
        case (.requesting, .ack), (.rebooting, .ack):
            guard let acked = makeLease(message, options, now: now) else { return [] }
            if state == .requesting, let offer, acked.address != offer.address || acked.serverIdentifier != offer.serverIdentifier {
                return []
            }
            offer = acked
            retransmitAt = nil
            if configuration.probeAddress && state == .requesting {
                state = .probing
                probesSent = 0
                return sendProbe(now: now)
            }
            return bind(acked)
        case (.renewing, .ack), (.rebinding, .ack):
            guard let renewed = makeLease(message, options, now: now), let old = lease else { return [] }
            retransmitAt = nil
            if renewed.address != old.address {
                state = .bound
                lease = renewed
                return [.unbind(old.address, reason: "server moved the lease"), .bind(renewed)]
            }
            lease = renewed
            state = .bound
            var compared = renewed
            compared.acquired = old.acquired
            return [compared == old ? .renewed(renewed) : .bind(renewed)]
        case (.requesting, .nak), (.rebooting, .nak):
            naks += 1
            return restart(now: now)
        case (.renewing, .nak), (.rebinding, .nak):
            naks += 1
            let lost = lease?.address
            lease = nil
            return (lost.map { [.unbind($0, reason: "server said NAK")] } ?? []) + restart(now: now)
        default:
            return []
        }
    }

    /// An ARP packet seen on the link: during probing, anyone claiming the offered address (or
    /// probing for it too) is a conflict (RFC 5227 §2.1.1); the address is declined.
    public mutating func arpSeen(sender: IPv4Address, senderHardwareAddress: MACAddress, target: IPv4Address, isRequest: Bool, now: NIODeadline) -> [DHCPClientAction] {
        guard state == .probing, let offer, senderHardwareAddress != configuration.hardwareAddress else { return [] }
        let conflict = sender == offer.address || (isRequest && sender == .any && target == offer.address)
        guard conflict else { return [] }
        declines += 1
        var decline = baseMessage(.decline)
        decline.options.requestedIPAddress = offer.address
        decline.options.serverIdentifier = offer.serverIdentifier
        // Table 5: no parameter list or maximum size, flags 0.
        decline.options.parameterRequestList = nil
        decline.options.maximumMessageSize = nil
        decline.broadcastFlag = false
        decline.padToMinimumSize()
        transmissions += 1
        self.offer = nil
        state = .initial
        retransmitAt = nil
        waitUntil = now + configuration.declineBackoff
        return [.send(decline, from: .any, to: .broadcast)]
    }

    /// Gives the lease back (RFC 2131 §4.4.6) and stops.
    public mutating func release(now: NIODeadline) -> [DHCPClientAction] {
        defer {
            state = .stopped
            retransmitAt = nil
            waitUntil = nil
        }
        guard let lease else { return [] }
        self.lease = nil
        var message = baseMessage(.release)
        message.clientAddress = lease.address
        message.options.serverIdentifier = lease.serverIdentifier
        message.options.parameterRequestList = nil
        message.options.maximumMessageSize = nil
        message.broadcastFlag = false
        message.padToMinimumSize()
        transmissions += 1
        return [.send(message, from: lease.address, to: lease.serverIdentifier), .unbind(lease.address, reason: "released")]
    }

    // MARK: - Internals

    private mutating func restart(now: NIODeadline) -> [DHCPClientAction] {
        state = .selecting
        offer = nil
        waitUntil = nil
        newTransaction(now: now)
        return sendDiscover(now: now, retry: false)
    }

    private mutating func newTransaction(now: NIODeadline) {
        xid = UInt32(truncatingIfNeeded: random.next())
        attempts = 0
        started = now
        currentTimeout = configuration.initialRetransmit
    }

    private func baseMessage(_ type: DHCPMessageType) -> DHCPMessage {
        var m = DHCPMessage(op: DHCPMessage.bootRequest, transactionID: xid, clientHardwareAddress: configuration.hardwareAddress)
        // We cannot receive unicast before we have an address: ask for broadcast replies.
        m.broadcastFlag = true
        m.options.messageType = type
        if let id = configuration.clientIdentifier { m.options.clientIdentifier = id }
        if let name = configuration.hostName, type != .decline, type != .release { m.options.hostName = name }
        m.options.maximumMessageSize = 1500
        m.options.parameterRequestList = configuration.parameterRequestList
        return m
    }

    private mutating func sendDiscover(now: NIODeadline, retry: Bool) -> [DHCPClientAction] {
        var message = baseMessage(.discover)
        message.seconds = UInt16(clamping: (now - started).nanoseconds / 1_000_000_000)
        message.padToMinimumSize()
        scheduleRetransmit(now: now, retry: retry)
        transmissions += 1
        return [.send(message, from: .any, to: .broadcast)]
    }

    private var pendingRequest: (requested: IPv4Address?, server: IPv4Address?, ciaddr: IPv4Address)?

    private mutating func sendRequest(requested: IPv4Address?, server: IPv4Address?, ciaddr: IPv4Address, now: NIODeadline) -> [DHCPClientAction] {
        pendingRequest = (requested, server, ciaddr)
        attempts = 0
        currentTimeout = configuration.initialRetransmit
        return resendRequest(now: now, first: true)
    }

    private mutating func resendRequest(now: NIODeadline, first: Bool = false) -> [DHCPClientAction] {
        guard let (requested, server, ciaddr) = pendingRequest else { return [] }
        var message = baseMessage(.request)
        message.clientAddress = ciaddr
        message.broadcastFlag = ciaddr == .any
        message.seconds = UInt16(clamping: (now - started).nanoseconds / 1_000_000_000)
        if let requested { message.options.requestedIPAddress = requested }
        if let server { message.options.serverIdentifier = server }
        message.padToMinimumSize()
        transmissions += 1
        attempts += 1
        // RENEWING: unicast to the server; REBINDING and the rest: broadcast.
        let destination = state == .renewing ? (lease?.serverIdentifier ?? .broadcast) : .broadcast
        let from = ciaddr
        if state == .renewing || state == .rebinding, let lease {
            // RFC 2131 §4.4.5: retry after half the time left until T2 (or expiry), at least 60 s
            // but never past that point.
            let limit = state == .renewing ? lease.rebindAt : lease.expiresAt
            let half = TimeAmount.nanoseconds(max(0, (limit - now).nanoseconds / 2))
            let wait = max(half, min(.seconds(60), limit - now))
            retransmitAt = now + max(wait, .seconds(1))
        } else {
            scheduleRetransmit(now: now, retry: !first)
        }
        return [.send(message, from: from, to: destination)]
    }

    private mutating func scheduleRetransmit(now: NIODeadline, retry: Bool) {
        if retry { currentTimeout = min(currentTimeout + currentTimeout, configuration.maximumRetransmit) }
        // ±1 s of jitter, never below one second.
        let jitter = Int64(random.next() % 2_000_000_001) - 1_000_000_000
        let wait = max(TimeAmount.seconds(1), currentTimeout + .nanoseconds(jitter))
        retransmitAt = now + wait
    }

    private mutating func sendProbe(now: NIODeadline) -> [DHCPClientAction] {
        guard let offer else { return [] }
        probesSent += 1
        if probesSent >= configuration.probeCount {
            retransmitAt = nil
            waitUntil = now + configuration.probeWait
        } else {
            retransmitAt = now + configuration.probeInterval
        }
        return [.probe(offer.address)]
    }

    private mutating func finishProbing(now: NIODeadline) -> [DHCPClientAction] {
        guard var offer else { return restart(now: now) }
        offer.acquired = now
        return bind(offer)
    }

    private mutating func bind(_ acked: DHCPClientLease) -> [DHCPClientAction] {
        state = .bound
        lease = acked
        offer = nil
        retransmitAt = nil
        waitUntil = nil
        return [.bind(acked)]
    }

    private func makeLease(_ message: DHCPMessage, _ options: DHCPOptions, now: NIODeadline) -> DHCPClientLease? {
        let address = message.yourAddress
        // Only a plausible unicast host address (not 0/8, loopback, multicast or broadcast).
        guard address.rawValue >> 24 != 0, !address.isLoopback, !address.isMulticast, address != .broadcast,
            address.rawValue >> 28 != 0xF,
            let server = options.serverIdentifier ?? (message.serverAddress != .any ? message.serverAddress : nil)
        else { return nil }
        let mask = options.subnetMask ?? IPv4Address(255, 255, 255, 0)
        let prefix = mask.rawValue.nonzeroBitCount
        guard let subnet = IPv4Subnet(address: address, prefixLength: prefix), prefix <= 30 || prefix == 32,
            address != subnet.network || prefix == 32, address != subnet.broadcast || prefix == 32
        else { return nil }
        let leaseSeconds = Int64(options.leaseTime ?? 3600)
        let lease = TimeAmount.seconds(leaseSeconds)
        let renewal = options.renewalTime.map { TimeAmount.seconds(Int64($0)) } ?? .seconds(leaseSeconds / 2)
        let rebinding = options.rebindingTime.map { TimeAmount.seconds(Int64($0)) } ?? .seconds(leaseSeconds * 7 / 8)
        return DHCPClientLease(
            address: message.yourAddress, subnet: subnet, routers: options.routers ?? [], dnsServers: options.domainNameServers ?? [],
            domainName: options.domainName, searchDomains: (try? options.domainSearch()) ?? [],
            mtu: options.interfaceMTU.map(Int.init), serverIdentifier: server, leaseTime: lease, renewalTime: min(renewal, lease),
            rebindingTime: min(max(rebinding, renewal), lease), classlessStaticRoutes: (try? options.classlessStaticRoutes()) ?? [],
            acquired: now)
    }
}

