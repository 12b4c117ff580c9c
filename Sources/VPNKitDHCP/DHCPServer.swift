public import NIOCore
public import VPNKitBase
public import VPNKitIPv4

/// How the gateway's DHCP server configures guests. Defaults follow vpnkit's network: the pool is the
/// subnet from the third address on, the gateway is router and DNS server.
public struct DHCPServerConfiguration: Sendable, Hashable {
    /// The server's own address (the gateway): server identifier, router and DNS server by default.
    public var serverAddress: IPv4Address
    /// The guest subnet. It gives the subnet mask and broadcast address sent to clients, and bounds the
    /// pool and the addresses accepted in REQUEST and INFORM.
    public var subnet: IPv4Subnet
    /// The first address handed out. The pool is `poolStart`…`poolEnd` within `subnet`, minus `excluded`,
    /// the network and the broadcast address.
    public var poolStart: IPv4Address
    /// The last address handed out; default: the one just below the subnet's broadcast address.
    public var poolEnd: IPv4Address
    /// Never handed out (the gateway, the host alias…).
    public var excluded: Set<IPv4Address>
    /// Option 3, sent in every OFFER and ACK unless empty; default: `serverAddress`.
    public var routers: [IPv4Address]
    /// Option 6, sent unless empty or not asked for; default: `serverAddress`.
    public var dnsServers: [IPv4Address]
    /// Option 15, and the first entry of the domain search list (option 119).
    public var domainName: String?
    /// Further search domains (option 119, after `domainName`); default none.
    public var searchDomains: [String] = []
    /// Option 26, the guests' interface MTU in bytes; default nil, which leaves it out.
    public var mtu: UInt16?
    /// Option 121, sent when not empty; default empty.
    public var classlessStaticRoutes: [ClasslessStaticRoute] = []
    /// Lease duration. The default, two hours, renews (T1) after one hour: long enough that a guest
    /// survives a daemon restart without noticing, short enough that addresses of departed guests
    /// come back the same day.
    public var leaseTime: TimeAmount = .seconds(7200)
    /// How long an offered address stays reserved for the client it was offered to; default 60 s.
    public var offerHoldTime: TimeAmount = .seconds(60)
    /// How long an address a client declined (in use by someone else) is not offered; default 600 s.
    public var declineHoldTime: TimeAmount = .seconds(600)
    /// Fixed addresses by MAC (`--dhcp-reserve MAC=IP`); default none. They need not lie in the pool, and
    /// no other client gets them.
    public var reservations: [MACAddress: IPv4Address] = [:]

    /// A pool of the subnet's addresses from `firstLease` (default: the third) to the last before
    /// broadcast, excluding the server's address.
    public init(serverAddress: IPv4Address, subnet: IPv4Subnet, firstLease: IPv4Address? = nil, excluded: Set<IPv4Address> = []) {
        self.serverAddress = serverAddress
        self.subnet = subnet
        self.poolStart = firstLease ?? subnet.address(at: 3) ?? serverAddress
        self.poolEnd = IPv4Address(rawValue: subnet.broadcast.rawValue &- 1)
        self.excluded = excluded.union([serverAddress])
        self.routers = [serverAddress]
        self.dnsServers = [serverAddress]
    }

    /// The renewal time (T1) sent to clients: half of `leaseTime` (RFC 2131 §4.4.5).
    public var renewalTime: TimeAmount { .nanoseconds(leaseTime.nanoseconds / 2) }
    /// The rebinding time (T2) sent to clients: 7/8 of `leaseTime` (RFC 2131 §4.4.5).
    public var rebindingTime: TimeAmount { .nanoseconds(leaseTime.nanoseconds / 8 * 7) }
}

/// One address given to one client.
public struct DHCPLease: Sendable, Hashable {
    /// Where a lease stands.
    public enum State: String, Sendable, Hashable {
        /// Offered, waiting for the client's REQUEST.
        case offered
        /// Acknowledged: the client uses it until `expires`.
        case bound
        /// Released by the client (or expired); remembered so the client gets it back first.
        case free
    }
    /// The key of the lease: option 61 when the client sent one (at most 255 bytes), otherwise the
    /// hardware type byte followed by the MAC address.
    public var clientIdentifier: [UInt8]
    /// The client's MAC address, from the message that created or renewed the lease.
    public var hardwareAddress: MACAddress
    /// The address held, or last held when the lease is free.
    public var address: IPv4Address
    /// Offered, bound or free. `DHCPServer.leases(now:)` reports an expired offer or lease as free.
    public var state: State
    /// When an offer lapses or a bound lease ends; for a released lease, when it was released.
    public var expires: NIODeadline
    /// The host name the client sent (option 12), kept across renewals that leave it out.
    public var hostName: String?
}

/// Counters of the server.
public struct DHCPServerCounters: Sendable, Hashable {
    /// DISCOVER messages received.
    public var discovers: UInt64 = 0
    /// OFFERs sent.
    public var offers: UInt64 = 0
    /// REQUEST messages received, whatever came of them (ACK, NAK, or ignored).
    public var requests: UInt64 = 0
    /// ACKs that granted or extended a lease. ACKs answering an INFORM are not counted.
    public var acks: UInt64 = 0
    /// NAKs sent in answer to a REQUEST.
    public var naks: UInt64 = 0
    /// DECLINE messages received, including those that matched no lease.
    public var declines: UInt64 = 0
    /// RELEASE messages received, including those that matched no lease.
    public var releases: UInt64 = 0
    /// INFORM messages received, whether answered or not.
    public var informs: UInt64 = 0
    /// DISCOVERs left unanswered because no address was free.
    public var poolExhausted: UInt64 = 0
    /// Messages that could not be parsed or made no sense (no message type, a reply op…).
    public var malformed: UInt64 = 0
    /// REQUESTs meant for another server. (INIT-REBOOTs from clients without a record are answered:
    /// the server is authoritative for its link, so a free address is simply granted.)
    public var ignored: UInt64 = 0
    /// Optional options left out to respect the client's maximum message size.
    public var optionsTrimmed: UInt64 = 0
    /// RELEASE and DECLINE messages for a lease, refused because they did not come from the MAC
    /// that holds it: their chaddr, or the Ethernet source of their frame, is another MAC (one guest
    /// giving up another's address). Also counted in `releases` or `declines`.
    public var refusedNotFromHolder: UInt64 = 0
    /// Creates counters that are all zero.
    public init() {}
}

/// A reply and where it goes (RFC 2131 §4.1).
public struct DHCPServerReply: Sendable {
    /// The reply, sent from the server's address and port 67, already padded to the 300-byte minimum.
    public var message: DHCPMessage
    /// The IP destination: the client's address, its new address, a relay, or 255.255.255.255.
    public var destination: IPv4Address
    /// 68 when the reply goes to the client, 67 when it goes to a relay agent.
    public var destinationPort: UInt16
    /// When set, send to this MAC without ARP (the client cannot answer ARP for an address it does
    /// not have yet).
    public var linkDestination: MACAddress?
}

/// The RFC 2131 server as a state machine: a client message and the time go in, a reply (or none)
/// comes out. The lease table is bounded by the pool: every entry holds a distinct pool address
/// (or a reservation), so a flood of DISCOVERs from new MACs can take only free addresses, never
/// a bound lease.
public struct DHCPServer: Sendable {
    /// The configuration, including reservations added by `reserve(_:for:)`.
    public private(set) var configuration: DHCPServerConfiguration
    /// What the server has received and sent so far.
    public private(set) var counters = DHCPServerCounters()
    /// By client identifier.
    private var leasesByClient: [[UInt8]: DHCPLease] = [:]
    /// Address → client identifier holding it (offered or bound; free entries do not hold).
    private var holders: [IPv4Address: [UInt8]] = [:]
    /// Declined addresses and until when they are withheld.
    private var declined: [IPv4Address: NIODeadline] = [:]
    /// Address → the client of its lease entry, whatever its state (O(1) "who had this address").
    private var clientByAddress: [IPv4Address: [UInt8]] = [:]
    /// Reserved address → the MAC it is reserved for; an address reserved for two MACs is left out.
    private var reservedHolders: [IPv4Address: MACAddress] = [:]

    /// Creates a server with an empty lease table.
    public init(configuration: DHCPServerConfiguration) {
        self.configuration = configuration
        indexReservations()
    }

    private mutating func indexReservations() {
        var index: [IPv4Address: MACAddress] = [:]
        var twice = Set<IPv4Address>()
        for (mac, address) in configuration.reservations where index.updateValue(mac, forKey: address) != nil { twice.insert(address) }
        for address in twice { index[address] = nil }
        reservedHolders = index
    }

    /// The leases known, sorted by address (expired offers and leases show as they were until
    /// their address is reused).
    public func leases(now: NIODeadline) -> [DHCPLease] {
        leasesByClient.values.map { lease in
            var lease = lease
            if lease.state != .free, lease.expires <= now { lease.state = .free }
            return lease
        }.sorted { $0.address < $1.address }
    }

    /// Reserves `address` for `mac` from now on (a vmnet client's address, bound to its UUID).
    public mutating func reserve(_ address: IPv4Address, for mac: MACAddress) {
        configuration.reservations[mac] = address
        indexReservations()
    }

    /// Whether an unexpired lease (offered or bound) holds `address` for a client whose MAC is not
    /// `mac`.
    package func isHeld(_ address: IPv4Address, byOtherThan mac: MACAddress, now: NIODeadline) -> Bool {
        guard let holder = holders[address], let lease = leasesByClient[holder] else { return false }
        return lease.state != .free && lease.expires > now && lease.hardwareAddress != mac
    }

    /// The MAC `address` belongs to now: the MAC it is reserved for (a vmnet client's address, which
    /// vpnkit's Go client takes from the OFFER without ever sending a REQUEST; a `--dhcp-reserve`),
    /// else that of the client whose lease holds it, bound and not expired (an offer does not count).
    /// What the stack asks before it lets an ARP packet name the MAC of an address. A reservation
    /// comes first: a lease is keyed by the client identifier the client sends, which another guest
    /// can send too.
    public func holder(of address: IPv4Address, now: NIODeadline) -> MACAddress? {
        if let reserved = reservedHolders[address] { return reserved }
        guard let client = holders[address], let lease = leasesByClient[client], lease.address == address,
            lease.state == .bound, lease.expires > now
        else { return nil }
        return lease.hardwareAddress
    }

    /// Handles one message from a client; returns the reply to send, if any. `linkSource` is the
    /// Ethernet source of the frame that carried it: a RELEASE or DECLINE is honoured only when it,
    /// the message's chaddr and the lease's MAC are one (`refusedNotFromHolder` otherwise). Nil when
    /// the message did not come over Ethernet (a test, a state machine driven by hand): only chaddr is
    /// checked then. Through a relay agent the source is the relay's MAC, so a relayed RELEASE or
    /// DECLINE is refused; the lease then runs out by itself.
    public mutating func handle(_ message: DHCPMessage, linkSource: MACAddress? = nil, now: NIODeadline) -> DHCPServerReply? {
        guard message.op == DHCPMessage.bootRequest, message.hardwareType == 1, message.hardwareLength == 6,
            let options = try? message.allOptions(), let type = options.messageType
        else {
            counters.malformed &+= 1
            return nil
        }
        let client = Self.clientIdentifier(message, options)
        switch type {
        case .discover:
            counters.discovers &+= 1
            return discover(message, options, client: client, now: now)
        case .request:
            counters.requests &+= 1
            return request(message, options, client: client, now: now)
        case .decline:
            counters.declines &+= 1
            decline(message, options, client: client, linkSource: linkSource, now: now)
            return nil
        case .release:
            counters.releases &+= 1
            release(message, options, client: client, linkSource: linkSource, now: now)
            return nil
        case .inform:
            counters.informs &+= 1
            return inform(message, options)
        default:
            counters.malformed &+= 1
            return nil
        }
    }

    static func clientIdentifier(_ message: DHCPMessage, _ options: DHCPOptions) -> [UInt8] {
        // One option instance at most (RFC 2132 §9.14 has no need for more); longer ones are cut.
        if let id = options.clientIdentifier, !id.isEmpty { return Array(id.prefix(255)) }
        return [message.hardwareType] + message.clientHardwareAddress.bytes
    }

    // MARK: - Messages

    private mutating func discover(_ message: DHCPMessage, _ options: DHCPOptions, client: [UInt8], now: NIODeadline) -> DHCPServerReply? {
        guard let address = chooseAddress(for: client, mac: message.clientHardwareAddress, requested: options.requestedIPAddress, now: now) else {
            counters.poolExhausted &+= 1
            return nil
        }
        // Keep the lease of a client that is bound (a DISCOVER after a reboot that lost its state):
        // re-offer its address without cutting the lease.
        let existing = leasesByClient[client]
        if let existing, existing.address == address, existing.state == .bound, existing.expires > now {
            // stays bound
        } else {
            hold(address, for: client, mac: message.clientHardwareAddress, state: .offered, until: now + configuration.offerHoldTime, hostName: options.hostName)
        }
        counters.offers &+= 1
        return reply(.offer, to: message, options, address: address, lease: true)
    }

    private mutating func request(_ message: DHCPMessage, _ options: DHCPOptions, client: [UInt8], now: NIODeadline) -> DHCPServerReply? {
        let mac = message.clientHardwareAddress
        if let server = options.serverIdentifier {
            // SELECTING: the client chose a server.
            guard server == configuration.serverAddress else {
                // It chose another server: free what we offered.
                if let lease = leasesByClient[client], lease.state == .offered { unhold(client) }
                counters.ignored &+= 1
                return nil
            }
            guard let requested = options.requestedIPAddress ?? (message.clientAddress != .any ? message.clientAddress : nil),
                let lease = leasesByClient[client], lease.address == requested, isFree(requested, for: client, now: now)
            else { return nak(message, options) }
            return acknowledge(message, options, client: client, address: requested, now: now)
        }
        if message.clientAddress == .any {
            // INIT-REBOOT: the client asks to keep an address it remembers.
            guard let requested = options.requestedIPAddress else { return nak(message, options) }
            guard configuration.subnet.contains(requested) else { return nak(message, options) }
            if let lease = leasesByClient[client], lease.address == requested {
                return acknowledge(message, options, client: client, address: requested, now: now)
            }
            // Authoritative for this link: an address that is free for this client can be its.
            guard isAssignable(requested, to: client, mac: mac, now: now) else { return nak(message, options) }
            return acknowledge(message, options, client: client, address: requested, now: now)
        }
        // RENEWING (unicast) or REBINDING (broadcast): ciaddr is the address in use.
        let current = message.clientAddress
        guard configuration.subnet.contains(current) else { return nak(message, options) }
        if let lease = leasesByClient[client], lease.address == current {
            return acknowledge(message, options, client: client, address: current, now: now)
        }
        guard isAssignable(current, to: client, mac: mac, now: now) else { return nak(message, options) }
        return acknowledge(message, options, client: client, address: current, now: now)
    }

    private mutating func acknowledge(_ message: DHCPMessage, _ options: DHCPOptions, client: [UInt8], address: IPv4Address, now: NIODeadline) -> DHCPServerReply {
        hold(address, for: client, mac: message.clientHardwareAddress, state: .bound, until: now + configuration.leaseTime, hostName: options.hostName ?? leasesByClient[client]?.hostName)
        counters.acks &+= 1
        return reply(.ack, to: message, options, address: address, lease: true)
    }

    private mutating func nak(_ message: DHCPMessage, _ options: DHCPOptions) -> DHCPServerReply {
        counters.naks &+= 1
        var nak = DHCPMessage(op: DHCPMessage.bootReply, transactionID: message.transactionID, clientHardwareAddress: message.clientHardwareAddress)
        nak.clientHardwareBytes = message.clientHardwareBytes
        nak.flags = message.flags
        nak.relayAddress = message.relayAddress
        // §4.3.2: through a relay the NAK must ask for broadcast.
        if message.relayAddress != .any { nak.broadcastFlag = true }
        nak.options.messageType = .nak
        nak.options.serverIdentifier = configuration.serverAddress
        if let id = options.clientIdentifier { nak.options.clientIdentifier = id }
        nak.options.message = "requested address not available"
        nak.padToMinimumSize()
        // RFC 2131 §4.1: a NAK is broadcast unless it goes through a relay.
        if message.relayAddress != .any {
            return DHCPServerReply(message: nak, destination: message.relayAddress, destinationPort: BOOTP.serverPort, linkDestination: nil)
        }
        return DHCPServerReply(message: nak, destination: .broadcast, destinationPort: BOOTP.clientPort, linkDestination: Self.linkDestination(of: message))
    }

    /// Where an answer to IP broadcast goes on the link: the client's own MAC when `chaddr` holds a
    /// unicast Ethernet address, else the link's broadcast. The IP destination stays 255.255.255.255
    /// (RFC 2131 §4.1), which every client takes before it has an address; the link-layer unicast
    /// keeps one guest's offers and acknowledgments from reaching the others on a shared switch,
    /// where a client that takes any reply with its transaction id (vpnkit's Go client: every copy
    /// uses xid 1) would otherwise take another's address.
    static func linkDestination(of request: DHCPMessage) -> MACAddress {
        let mac = request.clientHardwareAddress
        guard request.hardwareType == 1, request.hardwareLength == 6, !mac.isMulticast, mac != .zero else { return .broadcast }
        return mac
    }

    private mutating func decline(_ message: DHCPMessage, _ options: DHCPOptions, client: [UInt8], linkSource: MACAddress?, now: NIODeadline) {
        guard options.serverIdentifier == nil || options.serverIdentifier == configuration.serverAddress,
            let address = options.requestedIPAddress, let lease = leasesByClient[client], lease.address == address
        else { return }
        guard isFromHolder(message, of: lease, linkSource: linkSource) else { return }
        declined[address] = now + configuration.declineHoldTime
        unhold(client)
        leasesByClient[client] = nil
        if clientByAddress[address] == client { clientByAddress[address] = nil }
    }

    /// Whether a message that gives up `lease` comes from the MAC holding it (chaddr, and the frame's
    /// source when known); counts a refusal. The client identifier alone proves nothing: any guest
    /// can send another's.
    private mutating func isFromHolder(_ message: DHCPMessage, of lease: DHCPLease, linkSource: MACAddress?) -> Bool {
        let mac = lease.hardwareAddress
        guard message.clientHardwareAddress == mac, linkSource == nil || linkSource == mac else {
            counters.refusedNotFromHolder &+= 1
            return false
        }
        return true
    }

    private mutating func release(_ message: DHCPMessage, _ options: DHCPOptions, client: [UInt8], linkSource: MACAddress?, now: NIODeadline) {
        guard let lease = leasesByClient[client], lease.address == message.clientAddress else { return }
        guard isFromHolder(message, of: lease, linkSource: linkSource) else { return }
        unhold(client)
        leasesByClient[client]?.state = .free
        leasesByClient[client]?.expires = now
    }

    private mutating func inform(_ message: DHCPMessage, _ options: DHCPOptions) -> DHCPServerReply? {
        guard message.clientAddress != .any else { return nil }
        guard configuration.subnet.contains(message.clientAddress), message.clientAddress != configuration.serverAddress else { return nil }
        var r = reply(.ack, to: message, options, address: .any, lease: false)
        // RFC 2131 §4.3.5: straight to the client at ciaddr:68, relay or not.
        r.destination = message.clientAddress
        r.destinationPort = BOOTP.clientPort
        r.linkDestination = nil
        return r
    }

    // MARK: - Addresses

    private func inPool(_ address: IPv4Address) -> Bool {
        address >= configuration.poolStart && address <= configuration.poolEnd && configuration.subnet.contains(address)
            && !configuration.excluded.contains(address) && address != configuration.subnet.network
            && address != configuration.subnet.broadcast
    }

    /// Whether `address` is held by no one else (an unexpired offer or lease) and not declined.
    private func isFree(_ address: IPv4Address, for client: [UInt8], now: NIODeadline) -> Bool {
        if let until = declined[address], until > now { return false }
        if let holder = holders[address], holder != client, let lease = leasesByClient[holder], lease.state != .free, lease.expires > now {
            return false
        }
        return true
    }

    /// Whether `address` may be given to this client now: free, and either in the pool or reserved
    /// for it, and not reserved for another MAC.
    private func isAssignable(_ address: IPv4Address, to client: [UInt8], mac: MACAddress, now: NIODeadline) -> Bool {
        if let reservedFor = configuration.reservations.first(where: { $0.value == address })?.key, reservedFor != mac { return false }
        let reserved = configuration.reservations[mac] == address
        return (reserved || inPool(address)) && isFree(address, for: client, now: now)
    }

    private func chooseAddress(for client: [UInt8], mac: MACAddress, requested: IPv4Address?, now: NIODeadline) -> IPv4Address? {
        if let reserved = configuration.reservations[mac], isFree(reserved, for: client, now: now) { return reserved }
        if let lease = leasesByClient[client], isAssignable(lease.address, to: client, mac: mac, now: now) { return lease.address }
        if let requested, isAssignable(requested, to: client, mac: mac, now: now) { return requested }
        // The lowest address never given to anyone, then the one whose last holder left longest ago.
        var reusable: (IPv4Address, NIODeadline)?
        var candidate = configuration.poolStart
        while candidate <= configuration.poolEnd {
            if inPool(candidate), configuration.reservations.values.contains(candidate) == false, isFree(candidate, for: client, now: now) {
                guard let holder = holders[candidate] ?? previousHolder(of: candidate) else { return candidate }
                let since = leasesByClient[holder]?.expires ?? now
                if holder == client { return candidate }
                if reusable == nil || since < reusable!.1 { reusable = (candidate, since) }
            }
            if candidate.rawValue == UInt32.max { break }
            candidate = IPv4Address(rawValue: candidate.rawValue + 1)
        }
        return reusable?.0
    }

    private func previousHolder(of address: IPv4Address) -> [UInt8]? {
        clientByAddress[address]
    }

    private mutating func hold(_ address: IPv4Address, for client: [UInt8], mac: MACAddress, state: DHCPLease.State, until: NIODeadline, hostName: String?) {
        if let old = leasesByClient[client], old.address != address, holders[old.address] == client { holders[old.address] = nil }
        // Forget a previous (free or expired) holder of this address.
        if let previous = holders[address] ?? previousHolder(of: address), previous != client {
            leasesByClient[previous] = nil
        }
        if let old = leasesByClient[client], old.address != address, clientByAddress[old.address] == client { clientByAddress[old.address] = nil }
        leasesByClient[client] = DHCPLease(clientIdentifier: client, hardwareAddress: mac, address: address, state: state, expires: until, hostName: hostName)
        holders[address] = client
        clientByAddress[address] = client
        declined[address] = nil
    }

    private mutating func unhold(_ client: [UInt8]) {
        guard let lease = leasesByClient[client] else { return }
        if holders[lease.address] == client { holders[lease.address] = nil }
        leasesByClient[client]?.state = .free
    }

    // MARK: - Replies

    private mutating func reply(_ type: DHCPMessageType, to request: DHCPMessage, _ requestOptions: DHCPOptions, address: IPv4Address, lease: Bool) -> DHCPServerReply {
        let c = configuration
        var m = DHCPMessage(op: DHCPMessage.bootReply, transactionID: request.transactionID, clientHardwareAddress: request.clientHardwareAddress)
        m.clientHardwareBytes = request.clientHardwareBytes
        m.flags = request.flags
        // Table 3: ciaddr is 0 in an OFFER, the client's in an ACK.
        m.clientAddress = type == .ack ? request.clientAddress : .any
        m.yourAddress = address
        m.relayAddress = request.relayAddress
        var o = DHCPOptions()
        o.messageType = type
        o.serverIdentifier = c.serverAddress
        if lease {
            o.leaseTime = UInt32(clamping: c.leaseTime.nanoseconds / 1_000_000_000)
            o.renewalTime = UInt32(clamping: c.renewalTime.nanoseconds / 1_000_000_000)
            o.rebindingTime = UInt32(clamping: c.rebindingTime.nanoseconds / 1_000_000_000)
        }
        o.subnetMask = c.subnet.mask
        if !c.routers.isEmpty { o.routers = c.routers }
        // The rest: what the client asked for (all we have when it did not say).
        let asked = requestOptions.parameterRequestList
        func wanted(_ code: DHCPOptionCode) -> Bool { asked?.contains(code) ?? true }
        var optional: [(DHCPOptionCode, [UInt8])] = []
        var extra = DHCPOptions()
        if !c.dnsServers.isEmpty, wanted(.domainNameServer) { extra.domainNameServers = c.dnsServers }
        if let domain = c.domainName, wanted(.domainName) { extra.domainName = domain }
        let search = (c.domainName.map { [$0] } ?? []) + c.searchDomains
        if !search.isEmpty, wanted(.domainSearch) { try? extra.setDomainSearch(search) }
        if let mtu = c.mtu, wanted(.interfaceMTU) { extra.interfaceMTU = mtu }
        if wanted(.broadcastAddress) { extra.broadcastAddress = c.subnet.broadcast }
        if !c.classlessStaticRoutes.isEmpty, wanted(.classlessStaticRoute) { extra.setClasslessStaticRoutes(c.classlessStaticRoutes) }
        if let name = requestOptions.hostName, wanted(.hostName) { extra.hostName = name }
        // In the order the client listed them, then the rest.
        let order = (asked ?? []) + extra.codes
        for code in order where !optional.contains(where: { $0.0 == code }) {
            if let value = extra[code] { optional.append((code, value)) }
        }
        if let id = requestOptions.clientIdentifier { o.clientIdentifier = id }
        // Respect the client's maximum message size (RFC 2132 §9.10; at least 576 bytes of IP).
        let limit = max(576, Int(requestOptions.maximumMessageSize ?? 576)) - 28
        var trimmed = 0
        while true {
            var candidate = o
            for (code, value) in optional { candidate.set(code, value) }
            m.options = candidate
            if m.encodedLength <= limit || optional.isEmpty { break }
            optional.removeLast()
            trimmed += 1
        }
        counters.optionsTrimmed &+= UInt64(trimmed)
        m.padToMinimumSize()

        // RFC 2131 §4.1 addressing.
        if request.relayAddress != .any {
            return DHCPServerReply(message: m, destination: request.relayAddress, destinationPort: BOOTP.serverPort, linkDestination: nil)
        }
        if request.clientAddress != .any {
            return DHCPServerReply(message: m, destination: request.clientAddress, destinationPort: BOOTP.clientPort, linkDestination: nil)
        }
        if request.broadcastFlag || address == .any {
            return DHCPServerReply(
                message: m, destination: .broadcast, destinationPort: BOOTP.clientPort, linkDestination: Self.linkDestination(of: request))
        }
        return DHCPServerReply(message: m, destination: address, destinationPort: BOOTP.clientPort, linkDestination: request.clientHardwareAddress)
    }
}
