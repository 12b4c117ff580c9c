import Logging
public import NIOCore
public import VPNKitBase
public import VPNKitDHCP
public import VPNKitDNS
public import VPNKitIPv4
public import VPNKitNAT
public import VPNKitStack
public import VPNKitTransport
public import VPNKitServices

extension UserspaceStack {
    // MARK: DHCP client

    /// Runs a DHCP client on the link and waits for its first lease: the stack takes the leased
    /// address, subnet and default router, and keeps renewing the lease until shutdown (if it is
    /// lost the address is removed again). Start the stack with
    /// `StackConfiguration.unconfigured(macAddress:mtu:)` for a host that has no address yet.
    ///
    /// - Parameters:
    ///   - hostName: sent to the server as option 12 (nil: none).
    ///   - configuration: the client's settings; the default uses the stack's MAC address.
    ///   - timeout: how long to wait for the first lease.
    /// - Throws: ``UserspaceStackError/dhcpTimedOut(after:)`` when no lease came in time (the client
    ///   is stopped); ``UserspaceStackError/alreadyAttached(_:)`` on a second call.
    public func configureWithDHCP(
        hostName: String? = nil, configuration: DHCPClientConfiguration? = nil, timeout: TimeAmount = .seconds(30)
    ) async throws -> DHCPClientLease {
        let loop = eventLoop
        let mac = self.configuration.macAddress
        let logger = self.logger
        let future: EventLoopFuture<DHCPClientLease> = try await onLoop { driver, state in
            guard state.dhcpClient == nil else { throw UserspaceStackError.alreadyAttached("a DHCP client") }
            var settings = configuration ?? DHCPClientConfiguration(hardwareAddress: mac)
            if let hostName { settings.hostName = hostName }
            let service = try DHCPClientService(stack: driver.stack, configuration: settings)
            state.dhcpClient = service
            let promise = loop.makePromise(of: DHCPClientLease.self)
            var waiting = true
            service.onEvent = { event in
                switch event {
                case .bound(let lease):
                    logger.info("DHCP lease bound", metadata: ["address": "\(lease.address)", "subnet": "\(lease.subnet)"])
                    if waiting {
                        waiting = false
                        promise.succeed(lease)
                    }
                case .renewed(let lease):
                    logger.debug("DHCP lease renewed", metadata: ["address": "\(lease.address)"])
                case .lost(let address, let reason):
                    logger.notice("DHCP lease lost", metadata: ["address": "\(address)", "reason": "\(reason)"])
                }
            }
            let timer = loop.assumeIsolated().scheduleTask(in: timeout) {
                guard waiting else { return }
                waiting = false
                service.close()
                if state.dhcpClient === service { state.dhcpClient = nil }
                promise.fail(UserspaceStackError.dhcpTimedOut(after: timeout))
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            service.start(now: .now())
            return promise.futureResult
        }
        return try await future.get()
    }

    /// The DHCP client's current lease (nil without a client, or while it has none).
    public func dhcpLease() async -> DHCPClientLease? {
        try? await onLoop { _, state in state.dhcpClient?.lease }
    }

    // MARK: DHCP server

    /// Serves DHCP on the link (UDP port 67 of the stack's addresses): leases from the configured
    /// pool, offered to any client that asks. The configuration's server address must be one the
    /// stack owns.
    /// - Throws: `StackError.addressInUse(_:_:)` when port 67 is taken;
    ///   ``UserspaceStackError/alreadyAttached(_:)`` on a second call.
    public func serveDHCP(_ configuration: DHCPServerConfiguration) async throws {
        try await onLoop { driver, state in
            guard state.dhcpServer == nil else { throw UserspaceStackError.alreadyAttached("a DHCP server") }
            state.dhcpServer = try DHCPService(stack: driver.stack, configuration: configuration)
        }
    }

    /// A DHCP server configuration for this stack's subnet: the stack's first address as server,
    /// router and DNS server, the pool from the third address of the subnet to its last, and the
    /// link MTU.
    public var defaultDHCPServerConfiguration: DHCPServerConfiguration {
        var c = DHCPServerConfiguration(
            serverAddress: configuration.gateway, subnet: configuration.subnet, firstLease: configuration.subnet.address(at: 3))
        c.routers = [configuration.gateway]
        c.dnsServers = [configuration.gateway]
        c.mtu = UInt16(clamping: configuration.mtu)
        return c
    }

    // MARK: DHCPv6 server

    /// Serves stateless DHCPv6 on the link (RFC 8415 §6.1): INFORMATION-REQUEST sent to ff02::1:2
    /// port 547 is answered with the DNS servers, the search list and an information refresh time;
    /// nothing is assigned (SOLICIT and the rest go unanswered). The router advertisements get the O
    /// flag so that clients ask.
    /// - Throws: `StackError.addressFamilyNotSupported(_:)` on a stack without IPv6,
    ///   `StackError.addressInUse(_:_:)` when port 547 is taken;
    ///   ``UserspaceStackError/alreadyAttached(_:)`` on a second call.
    public func serveDHCPv6(_ configuration: DHCPv6ServerConfiguration) async throws {
        try await onLoop { driver, state in
            guard state.dhcpv6Server == nil else { throw UserspaceStackError.alreadyAttached("a DHCPv6 server") }
            state.dhcpv6Server = try DHCPv6Service(stack: driver.stack, configuration: configuration)
        }
    }

    /// A DHCPv6 server configuration for this stack: a DUID-LL of its MAC address, its IPv6 gateway
    /// address as DNS server and the search list of its router advertisements; nil without IPv6.
    public var defaultDHCPv6ServerConfiguration: DHCPv6ServerConfiguration? {
        guard let link = configuration.ipv6 else { return nil }
        var c = DHCPv6ServerConfiguration(macAddress: configuration.macAddress, dnsServers: [link.dnsServer ?? link.gateway])
        c.searchDomains = link.searchDomains
        return c
    }

    // MARK: NAT

    /// Attaches the NAT: the guest's TCP, UDP and ping to addresses off the link (and to the host
    /// alias) are carried over host sockets on this event loop, and, unless `dns` is nil, a DNS
    /// service answers on the stack's first address (UDP and TCP port 53). A host alias inside the
    /// stack's subnet becomes one of the stack's addresses, so the guest can resolve it with ARP.
    ///
    /// - Returns: a description of how outside ping works ("raw socket", "ping socket"), or nil
    ///   when neither kind of ICMP socket could be opened (ping to outside addresses is then off).
    /// - Throws: ``UserspaceStackError/alreadyAttached(_:)`` on a second call; `StackError` when
    ///   port 53 is taken.
    @discardableResult
    public func attachNAT(_ configuration: NATConfiguration = NATConfiguration(), dns: DNSServiceConfiguration? = DNSServiceConfiguration()) async throws
        -> String?
    {
        let logger = self.logger
        let icmp: EventLoopFuture<String?> = try await onLoop { driver, state in
            guard state.nat == nil else { throw UserspaceStackError.alreadyAttached("a NAT") }
            var natLogger = logger
            natLogger[metadataKey: "component"] = "nat"
            if let dns, state.dns == nil { try Self.startDNS(dns, driver: driver, state: state, logger: logger) }
            if case .v4(let alias) = configuration.hostAlias, alias != .any, driver.stack.configuration.subnet.contains(alias) {
                driver.stack.addAddress(alias)
            }
            let nat = NAT(driver: driver, configuration: configuration, logger: natLogger)
            state.nat = nat
            return nat.startICMP()
        }
        return try await icmp.get()
    }

    /// Serves DNS on the stack's first address (UDP and TCP port 53): names of `configuration`'s
    /// records answered here, the rest forwarded to its upstreams over host sockets. ``attachNAT(_:dns:)``
    /// does this too; call it alone for DNS without a NAT.
    /// - Throws: ``UserspaceStackError/alreadyAttached(_:)`` on a second call; `StackError` when
    ///   port 53 is taken.
    public func serveDNS(_ configuration: DNSServiceConfiguration = DNSServiceConfiguration()) async throws {
        let logger = self.logger
        try await onLoop { driver, state in
            guard state.dns == nil else { throw UserspaceStackError.alreadyAttached("a DNS service") }
            try Self.startDNS(configuration, driver: driver, state: state, logger: logger)
        }
    }

    static func startDNS(_ configuration: DNSServiceConfiguration, driver: StackDriver, state: State, logger: Logger) throws {
        var dnsLogger = logger
        dnsLogger[metadataKey: "component"] = "dns"
        let service = try DNSService(driver: driver, configuration: configuration, logger: dnsLogger)
        driver.attachments.append(service)
        state.dns = service
    }

    /// Serves TCP and UDP echo (port 7) and discard (port 9) on the stack's addresses, to measure
    /// the stack against a peer.
    /// - Throws: ``UserspaceStackError/alreadyAttached(_:)`` on a second call; `StackError` when a
    ///   port is taken.
    public func startDiagnosticServices() async throws {
        try await onLoop { driver, state in
            guard state.diagnostics == nil else { throw UserspaceStackError.alreadyAttached("the diagnostic services") }
            state.diagnostics = try DiagnosticServices(stack: driver.stack)
        }
    }

    /// Echoes every UDP datagram sent to `port` of the stack's addresses (a datagram to the
    /// broadcast address is answered from the gateway).
    /// - Throws: ``UserspaceStackError/alreadyAttached(_:)`` on a second call; `StackError` when the
    ///   port is taken.
    public func serveUDPEcho(port: UInt16) async throws {
        try await onLoop { driver, state in
            guard state.udpEcho == nil else { throw UserspaceStackError.alreadyAttached("a UDP echo service") }
            state.udpEcho = try driver.stack.bindUDP(port: port) { [unowned driver] message in
                driver.perform { stack, now in
                    try? stack.sendUDP(
                        message.payload, from: message.destination == .v4(.broadcast) ? .v4(stack.configuration.gateway) : message.destination,
                        port: message.destinationPort, to: message.source, port: message.sourcePort, now: now)
                }
            }
        }
    }

    /// Forwards a host port into the guest through the NAT (which must be attached). The guest's
    /// IPv4 address is the one the DHCP server last bound (the most recent lease), else the one it
    /// was last seen using (`NetworkStack.guestIPv4Address`), else `fallback` unless the guest has
    /// been seen over IPv6 only: a guest that renews or changes its address keeps its published
    /// ports. Its IPv6 address is the one in the prefix it was last seen using
    /// (`NetworkStack.guestIPv6Address`; its duplicate address detection counts).
    /// A host connection reaches the guest over its own family when the guest has an address of it,
    /// else over the other (`GuestAddresses.address(forHostFamily:)`); a port without a host
    /// address listens on 127.0.0.1 and ::1 (see `NAT.publish(_:guestAddresses:)`).
    /// - Returns: the publication's id, for ``unpublish(_:)``.
    /// - Throws: the bind error when the host port cannot be bound;
    ///   ``UserspaceStackError/notAttached(_:)`` without a NAT.
    @discardableResult
    public func publish(_ port: PublishedPort, toLatestLeaseOr fallback: IPAddress) async throws -> PublishedPortID {
        let future: EventLoopFuture<PublishedPortID> = try await onLoop { _, state in
            guard let nat = state.nat else { throw UserspaceStackError.notAttached("a NAT") }
            return nat.publishWithID(port, guestAddresses: { [weak state] in
                guard let state else { return GuestAddresses() }
                let stack = state.driver.stack
                let ipv6 = stack.guestIPv6Address ?? fallback.ipv6
                let ipv4 = state.latestLease(now: .now()) ?? stack.guestIPv4Address ?? (ipv6 == nil ? fallback.ipv4 : nil)
                return GuestAddresses(ipv4: ipv4, ipv6: ipv6)
            })
        }
        return try await future.get()
    }

    /// Forwards a host port into the guest at `guestAddress` through the NAT (which must be
    /// attached): each host connection or datagram, of either family, is opened into the guest from
    /// the host alias of `guestAddress`'s family (a client that is not on the host's loopback from
    /// its own address, unless `NATConfiguration.preservesClientAddress` is off).
    /// - Returns: the publication's id, for ``unpublish(_:)``.
    /// - Throws: the bind error when the host port cannot be bound;
    ///   ``UserspaceStackError/notAttached(_:)`` without a NAT.
    @discardableResult
    public func publish(_ port: PublishedPort, to guestAddress: IPAddress) async throws -> PublishedPortID {
        let future: EventLoopFuture<PublishedPortID> = try await onLoop { _, state in
            guard let nat = state.nat else { throw UserspaceStackError.notAttached("a NAT") }
            return nat.publishWithID(port, guestAddresses: { GuestAddresses(guestAddress) })
        }
        return try await future.get()
    }

    /// Forwards a host port into the guest through the NAT (which must be attached), to the
    /// addresses `guestAddresses` gives when a connection or datagram arrives (called on the stack's
    /// event loop), by `GuestAddresses.address(forHostFamily:)`'s rule.
    /// - Returns: the publication's id, for ``unpublish(_:)``.
    /// - Throws: the bind error when the host port cannot be bound;
    ///   ``UserspaceStackError/notAttached(_:)`` without a NAT.
    @discardableResult
    public func publish(_ port: PublishedPort, toGuest guestAddresses: @escaping @Sendable () -> GuestAddresses) async throws -> PublishedPortID {
        let future: EventLoopFuture<PublishedPortID> = try await onLoop { _, state in
            guard let nat = state.nat else { throw UserspaceStackError.notAttached("a NAT") }
            return nat.publishWithID(port, guestAddresses: guestAddresses)
        }
        return try await future.get()
    }

    /// Stops the publication `id` (from `publish`): its host listeners close, both loopbacks' for
    /// a port published without a host address, and new host connections are refused. TCP
    /// connections already accepted through it keep running until either side closes them.
    /// - Throws: `PublishedPortError.unknownID` when no publication has that id (nothing changes);
    ///   ``UserspaceStackError/notAttached(_:)`` without a NAT.
    public func unpublish(_ id: PublishedPortID) async throws {
        try await onLoop { _, state in
            guard let nat = state.nat else { throw UserspaceStackError.notAttached("a NAT") }
            try nat.unpublish(id)
        }
    }

    /// The publications, oldest first: each with its id, the port as asked for, and the host
    /// addresses and ports its listeners are bound to. Empty without a NAT.
    public func forwards() async throws -> [PublishedForward] {
        try await onLoop { _, state in state.nat?.forwards ?? [] }
    }

    /// The host listeners of the published ports, each with the address and port it is bound to
    /// (a port published without a host address appears once per loopback it listens on).
    public func publishedPorts() async throws -> [PublishedPort] {
        try await onLoop { _, state in state.nat?.publishedPorts ?? [] }
    }

    // MARK: Capture

    /// Starts copying every frame in both directions to a pcap file at `path` (created or
    /// truncated; Ethernet link type, wall-clock timestamps). A capture already running is stopped
    /// first. Capturing costs nothing while it is off.
    /// - Throws: `PcapError` when the file cannot be opened.
    public func startCapture(toFile path: String) async throws {
        try await onLoop { _, state in
            state.capture.sink = try PcapFileSink(path: path)
        }
    }

    /// Starts keeping the most recent frames in memory (at most `maximumFrames` and `maximumBytes`);
    /// ``stopCapture()`` returns them. For tests, and for a look at the last moments before a failure.
    public func startCapture(maximumFrames: Int = 1024, maximumBytes: Int = 4 << 20) async throws {
        try await onLoop { _, state in
            state.capture.sink = CaptureRing(maximumFrames: maximumFrames, maximumBytes: maximumBytes)
        }
    }

    /// Stops capturing. A file capture is flushed and closed; an in-memory capture's frames are
    /// returned, oldest first (empty for a file capture or when none was running).
    @discardableResult
    public func stopCapture() async -> [ByteBuffer] {
        (try? await onLoop { _, state -> [ByteBuffer] in
            let frames = (state.capture.sink as? CaptureRing)?.contents.map(\.frame) ?? []
            state.capture.sink = nil
            return frames
        }) ?? []
    }

    // MARK: Snapshots

    /// Counters and tables of the stack and every attached service, taken at one instant on the
    /// event loop.
    public func snapshot() async throws -> UserspaceStackSnapshot {
        try await onLoop { driver, state in
            let now = NIODeadline.now()
            return UserspaceStackSnapshot(
                addresses: driver.stack.configuration.addresses,
                subnet: driver.stack.configuration.subnet,
                counters: driver.stack.statistics,
                link: driver.transport.statistics,
                tcpConnections: driver.stack.tcpConnectionCount,
                framesCaptured: state.capture.framesCaptured,
                dhcpLease: state.dhcpClient?.lease,
                dhcpServer: state.dhcpServer.map { .init(counters: $0.counters, leases: $0.leases(now: now)) },
                nat: state.nat.map { .init(counters: $0.counters, flows: $0.flows(now: now)) },
                dns: state.dns?.counters)
        }
    }
}

/// Everything a ``UserspaceStack`` counts, at one instant (from ``UserspaceStack/snapshot()``).
public struct UserspaceStackSnapshot: Sendable {
    /// The addresses the stack owns now (the gateway, or the DHCP client's lease, first).
    public var addresses: [IPv4Address]
    /// The subnet of the link as the stack sees it now.
    public var subnet: IPv4Subnet
    /// Every counter of the stack's layers, including one per drop reason.
    public var counters: StackCounters
    /// Frames and bytes that crossed the link, and its drops.
    public var link: TransportStatistics
    /// TCP connections the stack holds (in any state but CLOSED).
    public var tcpConnections: Int
    /// Frames copied to a capture since the stack started.
    public var framesCaptured: UInt64
    /// The DHCP client's lease, when a client is attached and bound.
    public var dhcpLease: DHCPClientLease?
    /// The DHCP server's counters and leases, when a server is attached.
    public var dhcpServer: DHCPServerSnapshot?
    /// The NAT's counters and flow table, when the NAT is attached.
    public var nat: NATSnapshot?
    /// The DNS service's counters, when the NAT was attached with DNS.
    public var dns: DNSResolverCounters?

    /// A DHCP server's state.
    public struct DHCPServerSnapshot: Sendable {
        /// Messages by kind, and refusals.
        public var counters: DHCPServerCounters
        /// Every lease the server remembers (offered, bound, declined or expired).
        public var leases: [DHCPLease]
    }

    /// The NAT's state.
    public struct NATSnapshot: Sendable {
        /// Connections, datagrams, bytes and refusals.
        public var counters: NATCounters
        /// One entry per open TCP connection, UDP flow and ping in flight.
        public var flows: [NATFlowSnapshot]
    }
}
