import ArgumentParser
@preconcurrency import Dispatch
import Logging
import NIOCore
import NIOPosix
import VPNKitBase
import VPNKitDHCP
import VPNKitDNS
import VPNKitIPv4
import VPNKitNAT
import VPNKitStack
import VPNKitTransport

#if canImport(Glibc)
import Glibc
#endif

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Give a guest a network: a TAP device in a network namespace, or a VM's unix socket, NAT'd through host sockets.",
        discussion: """
            The stack answers ARP, ping, DHCP and DNS on the gateway (192.168.65.1 by default) and carries \
            the guest's TCP, UDP and ping to other addresses over ordinary host sockets. The host alias \
            (192.168.65.2) stands for the host's 127.0.0.1. Stop it with SIGINT or SIGTERM; it then prints \
            its counters to standard error.

            Examples:
              vpnkit run --netns guest --tap tap0
              vpnkit run --publish tcp:8080:80 -- sh -c 'python3 -m http.server 80'
              vpnkit run -- curl http://host.internal:8000/
            """
    )

    @Option(help: "The guest's network namespace: a name under /var/run/netns, or a path.")
    var netns: String?

    @Option(help: "The TAP device inside the namespace (attached to if it exists, created otherwise).")
    var tap: String?

    @Option(help: "A unix socket path for a VM's link (with --protocol).")
    var socket: String?

    @Option(help: "The framing on --socket: qemu (4-byte length, qemu -netdev stream), dgram (one frame per datagram), vmnet (Docker's vpnkit protocol).")
    var `protocol`: SocketProtocol?

    @Flag(help: "With --protocol qemu: connect to a VM that listens on --socket (qemu -netdev stream,server=on) instead of listening.")
    var connect = false

    @Option(help: "The link MTU (68…65520).")
    var mtu: Int = 1500

    @Option(name: .customLong("tcp-buffer"), help: "Bytes of send buffer and of receive buffer (the advertised window) per guest TCP connection (16384…16777216). 1 MiB keeps 64 KiB segments flowing; the worst case a guest can make the daemon hold is about this × 4 + 768 KiB per connection (× 2 + 768 KiB with full-sized segments), times --max-connections (see SECURITY.md).")
    var tcpBuffer: Int = 1 << 20

    @Flag(name: .customLong("no-offloads"), help: "TAP devices: no virtio-net header, so no checksum or TCP segmentation offload (by default the guest hands over TCP segments of up to 64 KiB whatever the MTU, and takes them). Offloads are also off while --pcap or fault flags wrap the link.")
    var noOffloads = false

    @Flag(name: .customLong("receive-steering"), help: "TAP devices: set an RPS mask of every CPU the daemon may use on each receive queue, so the guest's kernel handles the frames we write on another CPU instead of inside our write(2). It pays where CPUs are to spare; on two cores it cost about a third of host→guest throughput without offloads (BENCHMARKS.md). The mask stays on the device.")
    var receiveSteering = false

    @Option(help: "The guest subnet.")
    var subnet: String = "192.168.65.0/24"

    @Option(help: "The gateway address (default: the subnet's first address).")
    var gateway: String?

    @Flag(name: .customLong("no-dhcp"), help: "Do not run the DHCP server on the gateway.")
    var noDHCP = false

    @Option(help: "The domain name given to guests by DHCP (option 15, and first in the search list).")
    var domain: String?

    @Option(help: "A further DNS search domain for guests (option 119); repeatable.")
    var search: [String] = []

    @Option(name: .customLong("lease-time"), help: "DHCP lease time in seconds (renewal at half of it).")
    var leaseTime: Int = 7200

    @Option(name: .customLong("pool-start"), help: "The first address DHCP (and vmnet) hands out (default: the subnet's third).")
    var poolStart: String?

    @Option(name: .customLong("pool-end"), help: "The last address DHCP (and vmnet) hands out (default: the last before the broadcast address).")
    var poolEnd: String?

    @Option(name: .customLong("dhcp-reserve"), help: "A fixed address for a MAC: MAC=IP; repeatable.")
    var dhcpReserve: [String] = []

    @Option(help: "Write every frame of the guest link, both directions, to this pcap file.")
    var pcap: String?

    @Option(name: .customLong("fault-drop"), help: "Probability of dropping a frame (each direction).")
    var faultDrop: Double = 0
    @Option(name: .customLong("fault-reorder"), help: "Probability of holding a frame back so later ones overtake it.")
    var faultReorder: Double = 0
    @Option(name: .customLong("fault-duplicate"), help: "Probability of delivering a frame twice.")
    var faultDuplicate: Double = 0
    @Option(name: .customLong("fault-corrupt"), help: "Probability of flipping one bit of a frame.")
    var faultCorrupt: Double = 0
    @Option(name: .customLong("fault-seed"), help: "Seed of the fault sequence (the same seed repeats the same faults).")
    var faultSeed: UInt64 = 1

    @Option(name: .customLong("udp-echo"), help: "Diagnostic: echo UDP datagrams sent to this port of the gateway.")
    var udpEcho: UInt16?

    @Flag(name: .customLong("diagnostic-services"), help: "Serve TCP and UDP echo (port 7) and discard (port 9) on the gateway, to measure the stack against a real kernel.")
    var diagnosticServices = false

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(name: .customLong("host-alias"), help: "The guest-side address of the host's 127.0.0.1 (named host.internal); 0.0.0.0 for none.")
    var hostAlias: String = "192.168.65.2"

    @Flag(name: .customLong("no-host-loopback"), help: "The host alias does not reach the host's loopback (refused).")
    var noHostLoopback = false

    @Flag(name: .customLong("no-nat"), help: "Do not forward guest traffic to host sockets (the stack answers only for its own addresses).")
    var noNAT = false

    @Option(name: .customLong("dns-upstream"), help: "A DNS server to forward guest queries to, IP[:PORT]; repeatable (default: the host's /etc/resolv.conf nameservers).")
    var dnsUpstream: [String] = []

    @Option(name: .customLong("host-record"), help: "A DNS name the gateway answers itself: NAME=IP; repeatable.")
    var hostRecord: [String] = []

    @Option(name: .customLong("publish"), help: "Forward a host port into the guest: tcp|udp:[HOSTIP:]HOSTPORT:GUESTPORT; repeatable. Binds 127.0.0.1 unless HOSTIP is given.")
    var publish: [String] = []

    @Option(name: .customLong("max-connections"), help: "TCP connections through the NAT at once; more are refused with RST.")
    var maxConnections: Int = 4096

    @Option(name: .customLong("max-udp-flows"), help: "UDP flows (guest address and port) at once; the least recently used is closed to make room.")
    var maxUDPFlows: Int = 1024

    @Option(name: .customLong("udp-idle-timeout"), help: "Seconds after which an idle UDP flow is closed.")
    var udpIdleTimeout: Int = 60

    @Option(name: .customLong("stats"), help: "Serve counters and the flow table as JSON (or Prometheus text) on this unix socket; read it with `vpnkit stats PATH`.")
    var stats: String?

    @Flag(name: .customLong("configure"), help: "With a command: configure the namespace statically instead of by DHCP.")
    var configureStatically = false

    @Argument(parsing: .postTerminator, help: "A command to run in a fresh namespace on the guest network (after --).")
    var command: [String] = []

    enum SocketProtocol: String, ExpressibleByArgument, CaseIterable {
        case qemu, dgram, vmnet
    }

    func validate() throws {
        if !command.isEmpty, tap != nil || socket != nil || netns != nil {
            throw ValidationError("a command (after --) runs in a namespace of its own: leave out --tap, --netns and --socket")
        }
        switch (tap, socket) {
        case (nil, nil): if command.isEmpty { throw ValidationError("give --tap (with --netns), --socket (with --protocol), or a command after --") }
        case (.some, .some): throw ValidationError("--tap and --socket cannot be used together")
        case (nil, .some): if `protocol` == nil { throw ValidationError("--socket needs --protocol qemu|dgram|vmnet") }
        case (.some, nil): if `protocol` != nil { throw ValidationError("--protocol goes with --socket, not --tap") }
        }
        if receiveSteering && socket != nil { throw ValidationError("--receive-steering applies to TAP devices (--tap, or a command after --), not to --socket") }
        if connect && `protocol` != .qemu { throw ValidationError("--connect goes with --protocol qemu (a VM listening with server=on)") }
        guard (68...65520).contains(mtu) else { throw ValidationError("--mtu must be within 68…65520") }
        guard let net = IPv4Subnet(subnet) else { throw ValidationError("--subnet must look like 192.168.65.0/24") }
        guard net.prefixLength <= 29 else { throw ValidationError("--subnet \(net) is too small: it needs room for the gateway, the host alias and guests (/29 at most)") }
        if let gateway, IPv4Address(gateway) == nil { throw ValidationError("--gateway must be an IPv4 address") }
        for (name, p) in [("drop", faultDrop), ("reorder", faultReorder), ("duplicate", faultDuplicate), ("corrupt", faultCorrupt)] {
            guard (0...1).contains(p) else { throw ValidationError("--fault-\(name) must be a probability within 0…1") }
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        guard (10...(365 * 86400)).contains(leaseTime) else { throw ValidationError("--lease-time must be within 10 s … 1 year") }
        _ = try reservations()
        guard let alias = IPv4Address(hostAlias) else { throw ValidationError("--host-alias must be an IPv4 address") }
        guard alias == .any || net.contains(alias) else { throw ValidationError("--host-alias \(alias) is not inside --subnet \(net)") }
        for upstream in dnsUpstream where parseEndpoint(upstream, defaultPort: 53) == nil {
            throw ValidationError("--dns-upstream wants IP[:PORT], got \(upstream)")
        }
        for record in hostRecord {
            let parts = record.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, IPv4Address(parts[1]) != nil, (try? DomainNameList.encode([String(parts[0])])) != nil else {
                throw ValidationError("--host-record wants NAME=IP, got \(record)")
            }
        }
        for entry in publish where PublishedPort(entry) == nil {
            throw ValidationError("--publish wants tcp|udp:[HOSTIP:]HOSTPORT:GUESTPORT, got \(entry)")
        }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        guard (16384...16 << 20).contains(tcpBuffer) else { throw ValidationError("--tcp-buffer must be between 16384 and 16777216") }
        guard maxUDPFlows >= 1 else { throw ValidationError("--max-udp-flows must be at least 1") }
        guard udpIdleTimeout >= 1 else { throw ValidationError("--udp-idle-timeout must be at least 1 second") }
        for name in [domain].compactMap({ $0 }) + search {
            guard (try? DomainNameList.encode([name])) != nil else { throw ValidationError("\(name) is not a valid domain name") }
        }
    }

    func reservations() throws -> [MACAddress: IPv4Address] {
        var result: [MACAddress: IPv4Address] = [:]
        for entry in dhcpReserve {
            let parts = entry.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let mac = MACAddress(parts[0]), let ip = IPv4Address(parts[1]) else {
                throw ValidationError("--dhcp-reserve wants MAC=IP, got \(entry)")
            }
            result[mac] = ip
        }
        return result
    }

    func makeDHCPConfiguration(_ stack: StackConfiguration) throws -> DHCPServerConfiguration {
        var c = DHCPServerConfiguration(serverAddress: stack.gateway, subnet: stack.subnet, excluded: Set(stack.addresses))
        c.domainName = domain
        c.searchDomains = search
        c.mtu = UInt16(clamping: stack.mtu)
        c.leaseTime = .seconds(Int64(leaseTime))
        c.reservations = try reservations()
        if let poolStart {
            guard let address = IPv4Address(poolStart), stack.subnet.contains(address) else { throw ValidationError("--pool-start must be an address inside \(stack.subnet)") }
            c.poolStart = address
        }
        if let poolEnd {
            guard let address = IPv4Address(poolEnd), stack.subnet.contains(address) else { throw ValidationError("--pool-end must be an address inside \(stack.subnet)") }
            c.poolEnd = address
        }
        guard c.poolStart <= c.poolEnd else { throw ValidationError("--pool-start \(c.poolStart) is after --pool-end \(c.poolEnd)") }
        for address in c.reservations.values where !stack.subnet.contains(address) {
            throw ValidationError("--dhcp-reserve address \(address) is not inside \(stack.subnet)")
        }
        return c
    }

    func makeConfiguration() throws -> StackConfiguration {
        let net = IPv4Subnet(subnet)!
        let gatewayAddress = gateway.flatMap { IPv4Address($0) } ?? net.address(at: 1)!
        guard net.contains(gatewayAddress) else { throw ValidationError("--gateway \(gatewayAddress) is not inside --subnet \(net)") }
        let alias = hostAliasAddress
        guard alias != gatewayAddress else { throw ValidationError("--host-alias and --gateway must differ") }
        var c = StackConfiguration(subnet: net, gateway: gatewayAddress, additionalAddresses: alias.map { [$0] } ?? [], mtu: mtu)
        c.maximumTCPConnections = max(c.maximumTCPConnections, maxConnections + 256)
        c.tcp.sendBufferSize = tcpBuffer
        c.tcp.receiveBufferSize = tcpBuffer
        return c
    }

    /// The host alias, nil when turned off (`--host-alias 0.0.0.0`, as vpnkit's `--host-ip 0.0.0.0`).
    var hostAliasAddress: IPv4Address? {
        guard let alias = IPv4Address(hostAlias), alias != .any else { return nil }
        return alias
    }

    func makeNATConfiguration() -> NATConfiguration {
        var c = NATConfiguration()
        c.hostAlias = hostAliasAddress
        c.hostLoopback = !noHostLoopback
        c.maximumConnections = maxConnections
        c.maximumUDPFlows = maxUDPFlows
        c.udpIdleTimeout = .seconds(Int64(udpIdleTimeout))
        return c
    }

    var faults: FaultConfiguration {
        FaultConfiguration(drop: faultDrop, duplicate: faultDuplicate, reorder: faultReorder, corrupt: faultCorrupt, seed: faultSeed)
    }

    func run() async throws {
        let signals = SignalWatcher([SIGINT, SIGTERM, SIGHUP])
        defer { signals.cancel() }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            return handler
        }
        let logger = Logger(label: "vpnkit")
        MallocTuning.apply(logger: logger)
        do {
            try OpenFileLimit.apply(
                needed: OpenFileLimit.needed(maxConnections: maxConnections, maxUDPFlows: maxUDPFlows, published: publish.count),
                maxConnections: maxConnections, maxUDPFlows: maxUDPFlows, logger: logger)
        } catch {
            logger.error("\(error)")
            throw ExitCode(1)
        }
        let configuration = try makeConfiguration()
        let dhcp = noDHCP ? nil : try makeDHCPConfiguration(configuration)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()

        // vmnet clients keep their MAC and address by UUID (within the DHCP pool).
        let registry: VmnetRegistry? = `protocol` == .vmnet
            ? VmnetRegistry(
                poolStart: dhcp?.poolStart ?? configuration.subnet.address(at: 3)!,
                poolEnd: dhcp?.poolEnd ?? IPv4Address(rawValue: configuration.subnet.broadcast.rawValue &- 1),
                excluded: dhcp?.excluded ?? Set(configuration.addresses))
            : nil

        // A VM that goes away takes its flows with it.
        let departures = GuestDepartures()

        // With a command: a namespace of our own, removed when we end.
        var guestNamespace: GuestNamespace?
        if !command.isEmpty {
            do {
                guestNamespace = try GuestNamespace.create(mtu: mtu, logger: logger)
            } catch {
                logger.error("cannot create the guest namespace: \(error)")
                try? await group.shutdownGracefully()
                throw ExitCode(1)
            }
        }
        defer { guestNamespace?.remove() }

        let transport: NIOLoopBound<any FrameTransport>
        do {
            transport = try await openTransport(
                on: loop, namespace: guestNamespace, configuration: configuration, registry: registry, departures: departures)
        } catch {
            logger.error("cannot open the guest link: \(error)")
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }

        let faults = self.faults
        let pcap = self.pcap
        let udpEcho = self.udpEcho
        let diagnostics = self.diagnosticServices
        let natConfiguration = noNAT ? nil : makeNATConfiguration()
        let dnsConfiguration = try makeDNSConfiguration(configuration)
        let published = publish.compactMap { PublishedPort($0) }
        let firstGuest = dhcp?.poolStart ?? configuration.subnet.address(at: 3)!
        let ended = StopReason()
        let driver: NIOLoopBound<StackDriver> = try await loop.submit {
            // The capture sits next to the guest (it records what is really on the wire); the faults
            // sit between the capture and the stack.
            var link: any FrameTransport = transport.value
            if let pcap { link = CapturingTransport(wrapping: link, sink: try PcapFileSink(path: pcap), wallClockNanoseconds: wallClockNanoseconds) }
            if !faults.isNone {
                var reverse = faults
                reverse.seed = faults.seed &+ 0x9E37_79B9
                link = FaultInjectingTransport(wrapping: link, on: loop, toGuest: faults, fromGuest: reverse)
            }
            let driver = StackDriver(stack: NetworkStack(configuration: configuration), transport: link, eventLoop: loop)
            driver.onTransportClosed = { error in ended.signal(error.map { "the guest link ended: \($0)" } ?? "the guest link closed") }
            if let dhcp {
                let service = try DHCPService(stack: driver.stack, configuration: dhcp)
                driver.attachments.append(service)
                registry?.dhcp = service
            }
            if diagnostics { driver.attachments.append(try DiagnosticServices(stack: driver.stack)) }
            driver.attachments.append(try DNSService(driver: driver, configuration: dnsConfiguration, logger: Logger(label: "vpnkit.dns")))
            if let natConfiguration { _ = NAT(driver: driver, configuration: natConfiguration) }
            departures.driver = driver
            driver.start()
            if let udpEcho, !diagnostics || udpEcho != 7 {
                let stack = driver.stack
                let socket = try stack.bindUDP(port: udpEcho) { [unowned driver] message in
                    driver.perform { stack, now in
                        try? stack.sendUDP(message.payload, from: message.destination == .broadcast ? stack.configuration.gateway : message.destination,
                                           port: message.destinationPort, to: message.source, port: message.sourcePort, now: now)
                    }
                }
                driver.attachments.append(socket)
            }
            return NIOLoopBound(driver, eventLoop: loop)
        }.get()

        // Ping to outside addresses, published ports and the stats socket.
        let (icmpMode, publishErrors): (String?, [String]) = try await loop.flatSubmit {
            let d = driver.value
            guard let nat = d.nat else { return loop.makeSucceededFuture((nil, [])) }
            let guestAddress: () -> IPv4Address? = { [weak d] in
                guard let d else { return nil }
                return d.latestGuestAddress(now: .now()) ?? firstGuest
            }
            let publishing = published.map { port in
                nat.publish(port, guestAddress: guestAddress).map { Optional<String>.none }.recover { Optional("\(port): \($0)") }
            }
            return nat.startICMP().and(EventLoopFuture.whenAllSucceed(publishing, on: loop)).map { ($0, $1.compactMap { $0 }) }
        }.get()
        if natConfiguration != nil {
            if let icmpMode {
                logger.info("ping to outside addresses through a \(icmpMode)")
            } else {
                logger.notice("ping to outside addresses is disabled: no raw ICMP socket (CAP_NET_RAW) and no ICMP datagram socket (net.ipv4.ping_group_range); the gateway and host alias still answer")
            }
        }
        for error in publishErrors { logger.error("cannot publish \(error)") }
        if !publishErrors.isEmpty {
            try? await loop.submit { driver.value.stop() }.get()
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }
        var statsServer: StatsServer?
        if let stats {
            do {
                statsServer = try await StatsServer.start(path: stats, driver: driver, on: loop, logger: logger)
            } catch {
                logger.error("cannot serve stats on \(stats): \(error)")
            }
        }
        logger.info("serving \(describeLink(guestNamespace)) as \(configuration.gateway) on \(configuration.subnet), MTU \(configuration.mtu)")

        var exitStatus: Int32 = 0
        let reason: String
        if let guestNamespace {
            let child = ChildCommand(arguments: command, namespace: guestNamespace)
            do {
                try await guestNamespace.configure(staticAddress: configureStatically ? firstGuest : nil, gateway: configuration.gateway, subnet: configuration.subnet, domain: domain)
                try child.start()
            } catch {
                logger.error("cannot start \(command.joined(separator: " ")): \(error)")
                exitStatus = 127
            }
            if child.isRunning {
                let result = await child.wait(forwarding: signals, or: ended)
                exitStatus = result.status
                reason = result.reason
            } else {
                reason = "the command did not start"
            }
        } else {
            reason = await waitForStop(signals, or: ended)
        }
        logger.info("stopping: \(reason)")
        statsServer?.close()
        let summary: String = try await loop.submit {
            let d = driver.value
            defer { d.stop() }
            return d.summary(now: .now())
        }.get()
        logger.info("\(summary)")
        try await group.shutdownGracefully()
        if exitStatus != 0 { throw ExitCode(exitStatus) }
    }

    func makeDNSConfiguration(_ stack: StackConfiguration) throws -> DNSServiceConfiguration {
        var c = DNSServiceConfiguration()
        c.records["gateway.internal"] = stack.gateway
        if let alias = hostAliasAddress { c.records["host.internal"] = alias }
        for record in hostRecord {
            let parts = record.split(separator: "=", maxSplits: 1)
            if parts.count == 2, let ip = IPv4Address(parts[1]) { c.records[String(parts[0])] = ip }
        }
        c.upstreams = dnsUpstream.compactMap { parseEndpoint($0, defaultPort: 53) }.map { DNSUpstream(address: $0.address, port: $0.port) }
        c.followResolvConf = dnsUpstream.isEmpty
        return c
    }

    func describeLink(_ namespace: GuestNamespace?) -> String {
        if let namespace { return "tap \(namespace.device) in namespace \(namespace.name)" }
        if let tap { return "tap \(tap)" + (netns.map { " in namespace \($0)" } ?? "") }
        return "\(`protocol`?.rawValue ?? "?") socket \(socket ?? "?")"
    }

    /// Receive steering is a speed-up, not a requirement: a failure is worth a notice, not an exit.
    static func logSteering(_ tap: TAPTransport) {
        let logger = Logger(label: "vpnkit")
        switch tap.receiveSteering {
        case .failed: logger.notice("receive steering on \(tap.deviceName) \(tap.receiveSteering); the guest's receive work stays in our thread")
        case .notRequested: break
        default: logger.info("receive steering on \(tap.deviceName): \(tap.receiveSteering)")
        }
    }

    func openTransport(
        on loop: any EventLoop, namespace: GuestNamespace?, configuration: StackConfiguration, registry: VmnetRegistry?,
        departures: GuestDepartures
    ) async throws -> NIOLoopBound<any FrameTransport> {
        if let namespace {
            let bound = try await TAPTransport.open(
                namespace: namespace.path, device: namespace.device, mtu: mtu, offloads: !noOffloads, receiveSteering: receiveSteering, on: loop
            ).get()
            return try await loop.submit { Self.logSteering(bound.value); return NIOLoopBound<any FrameTransport>(bound.value, eventLoop: loop) }.get()
        }
        if let tap {
            let bound = try await TAPTransport.open(
                namespace: netns, device: tap, mtu: mtu, offloads: !noOffloads, receiveSteering: receiveSteering, on: loop
            ).get()
            return try await loop.submit { Self.logSteering(bound.value); return NIOLoopBound<any FrameTransport>(bound.value, eventLoop: loop) }.get()
        }
        guard let socket, let kind = `protocol` else { throw ValidationError("--socket needs --protocol") }
        let mtu = self.mtu
        let logger = Logger(label: "vpnkit")
        switch kind {
        case .dgram:
            let bound = try await DatagramFrameTransport.bind(path: socket, mtu: mtu, on: loop).get()
            return try await loop.submit { NIOLoopBound<any FrameTransport>(bound.value, eventLoop: loop) }.get()
        case .qemu where connect:
            // qemu listens (-netdev stream,server=on); we connect, and reconnect once a second after
            // it goes away, so a restarted VM is served again.
            let stackMAC = configuration.macAddress
            return try await loop.flatSubmit {
                let link = SwitchTransport(mtu: mtu, stackAddress: stackMAC, clock: { .now() })
                let connector = QemuConnector(path: socket, mtu: mtu, link: link, loop: loop, logger: logger)
                link.listener = connector
                link.onPortDetached = { _, error, macs in
                    logger.info("qemu on \(socket) went away\(error.map { ": \($0)" } ?? ""); reconnecting")
                    departures.left(macs)
                    connector.scheduleConnect()
                }
                return connector.connectFirst().assumeIsolated().map { NIOLoopBound<any FrameTransport>(link, eventLoop: loop) }.nonisolated()
            }.get()
        case .qemu, .vmnet:
            // We listen; every connection becomes a port of a switch in front of the stack, so any
            // number of guests can be attached, one after another or at once.
            let stackMAC = configuration.macAddress
            return try await loop.flatSubmit {
                let link = SwitchTransport(mtu: mtu, stackAddress: stackMAC, clock: { .now() })
                // Whoever can connect to the socket can make these lines once per connection.
                let log = NIOLoopBound(RateLimitedLogger(logger), eventLoop: loop)
                link.onPortDetached = { port, error, macs in
                    log.value.log(.info, key: "guest disconnected", "guest \(port.guestAddress.map { "\($0) " } ?? "")disconnected\(error.map { ": \($0)" } ?? "")")
                    departures.left(macs)
                }
                let attach: (any FrameTransport) -> Void = { connection in
                    log.value.log(.info, key: "guest connected", "guest connected on \(socket)\(connection.guestAddress.map { " (MAC \($0))" } ?? "")")
                    link.attach(connection)
                    if let registry, let vmnet = connection as? VmnetTransport { handOver(vmnet, on: link, registry: registry, logger: logger) }
                }
                let listening: EventLoopFuture<AnyObject>
                if kind == .qemu {
                    listening = QemuStreamListener.bind(path: socket, mtu: mtu, on: loop, onConnection: attach).map { bound in
                        bound.value.onListenerEvent = { event in logListenerEvent(event, listener: socket, log: log.value) }
                        return bound.value
                    }
                } else {
                    listening = VmnetListener.bind(path: socket, mtu: mtu, on: loop, onConnection: attach).map { bound in
                        let listener = bound.value
                        if let registry {
                            listener.admit = { uuid, preferred in
                                let result = registry.admit(uuid, preferred: preferred, now: .now())
                                if case .failure(let refusal) = result { log.value.log(.notice, key: "vmnet client refused", "vmnet client \(uuid) refused: \(refusal)") }
                                return result
                            }
                        }
                        listener.onHandshakeFailure = { error in log.value.log(.notice, key: "vmnet handshake failed", "vmnet handshake failed: \(error)") }
                        listener.onListenerEvent = { event in logListenerEvent(event, listener: socket, log: log.value) }
                        return listener
                    }
                }
                return listening.assumeIsolated().map { listener in
                    link.listener = listener
                    return NIOLoopBound<any FrameTransport>(link, eventLoop: loop)
                }.nonisolated()
            }.get()
        }
    }
}

private func wallClockNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Something other than a signal that ends the daemon (the guest link closing).
final class StopReason: Sendable {
    let stream: AsyncStream<String>
    private let continuation: AsyncStream<String>.Continuation
    init() { (stream, continuation) = AsyncStream.makeStream(of: String.self) }
    func signal(_ reason: String) { continuation.yield(reason) }
}

/// SIGINT, SIGTERM and SIGHUP, caught from the first line of `run` on (a signal that came while the
/// daemon was still starting would otherwise kill it with the default action), delivered as a stream.
final class SignalWatcher: @unchecked Sendable {  // the sources are only touched at init and cancel
    let stream: AsyncStream<Int32>
    private let continuation: AsyncStream<Int32>.Continuation
    private var sources: [any DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "vpnkit.signals")

    init(_ numbers: [Int32]) {
        (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        for number in numbers {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            let continuation = self.continuation
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            sources.append(source)
        }
    }

    static func name(_ number: Int32) -> String {
        switch number {
        case SIGINT: return "SIGINT"
        case SIGTERM: return "SIGTERM"
        case SIGHUP: return "SIGHUP"
        default: return "signal \(number)"
        }
    }

    func cancel() {
        for source in sources { source.cancel() }
        continuation.finish()
    }
}

/// Waits for a signal (or `other`), without a busy loop; returns why it stopped.
func waitForStop(_ signals: SignalWatcher, or other: StopReason) async -> String {
    await withTaskGroup(of: String.self) { group in
        group.addTask { for await number in signals.stream { return SignalWatcher.name(number) }; return "signal stream ended" }
        group.addTask { for await reason in other.stream { return reason }; return "link ended" }
        let first = await group.next() ?? "stopped"
        group.cancelAll()
        return first
    }
}
