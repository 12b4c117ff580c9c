public import NIOCore
public import VPNKitBase
public import VPNKitIPv4

/// What a DHCP client needs to know about itself.
public struct DHCPClientConfiguration: Sendable, Hashable {
    public var hardwareAddress: MACAddress
    /// Option 61; nil sends none (the server then keys on the MAC).
    public var clientIdentifier: [UInt8]?
    /// Option 12.
    public var hostName: String?
    /// A previous lease's address: start in INIT-REBOOT and ask for it again.
    public var previousAddress: IPv4Address?
    /// Option 55.
    public var parameterRequestList: [DHCPOptionCode] = [
        .subnetMask, .router, .domainNameServer, .hostName, .domainName, .interfaceMTU, .broadcastAddress, .leaseTime,
        .renewalTime, .rebindingTime, .domainSearch, .classlessStaticRoute,
    ]
    /// First retransmission timeout; doubled on each retry up to `maximumRetransmit` (RFC 2131 §4.1),
    /// each randomized by ±1 s.
    public var initialRetransmit: TimeAmount = .seconds(4)
    public var maximumRetransmit: TimeAmount = .seconds(64)
    /// REQUESTs in REQUESTING or INIT-REBOOT before starting over.
    public var maximumRequestAttempts = 4
    /// Probe the offered address with ARP before using it (RFC 5227).
    public var probeAddress = true
    public var probeCount = 3
    public var probeInterval: TimeAmount = .seconds(1)
    /// Wait after the last probe before taking the address (ANNOUNCE_WAIT).
    public var probeWait: TimeAmount = .seconds(2)
    /// Wait after a DECLINE before starting over (RFC 2131 §3.1: at least 10 s).
    public var declineBackoff: TimeAmount = .seconds(10)
    /// Seed of the retransmission jitter.
    public var seed: UInt64

    public init(hardwareAddress: MACAddress) {
        self.hardwareAddress = hardwareAddress
        self.seed = hardwareAddress.rawValue | 1
    }
}

/// A lease as the client sees it.
public struct DHCPClientLease: Sendable, Hashable {
    public var address: IPv4Address
    public var subnet: IPv4Subnet
    public var routers: [IPv4Address]
    public var dnsServers: [IPv4Address]
    public var domainName: String?
    public var searchDomains: [String]
    public var mtu: Int?
    public var serverIdentifier: IPv4Address
    public var leaseTime: TimeAmount
    public var renewalTime: TimeAmount
    public var rebindingTime: TimeAmount
    public var classlessStaticRoutes: [ClasslessStaticRoute]
    /// When the lease (or its last renewal) was acknowledged.
    public var acquired: NIODeadline

    public var renewAt: NIODeadline { acquired + renewalTime }
    public var rebindAt: NIODeadline { acquired + rebindingTime }
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
    public enum State: String, Sendable {
        case stopped, initial = "INIT", selecting = "SELECTING", requesting = "REQUESTING", probing = "PROBING"
        case bound = "BOUND", renewing = "RENEWING", rebinding = "REBINDING", rebooting = "INIT-REBOOT"
    }

    public let configuration: DHCPClientConfiguration
    public private(set) var state: State = .stopped
    public private(set) var lease: DHCPClientLease?
    /// Messages sent so far (retransmissions included), and NAKs and declines, for tests and logs.
    public private(set) var transmissions = 0
    public private(set) var naks = 0
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

    /// When `poll` next has work.
    public var nextDeadline: NIODeadline? {
        var times = [retransmitAt, waitUntil].compactMap { $0 }
        if let lease, [.bound, .renewing, .rebinding].contains(state) {
            times.append(state == .bound ? lease.renewAt : state == .renewing ? lease.rebindAt : lease.expiresAt)
        }
        return times.min()
    }

    // MARK: - Timers

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

    /// A message from a server (port 67 → 68).
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

