// `vpnkit run`'s options, one group per concern; each group checks itself and makes its part of
// the configuration. The command (RunCommand.swift) checks what spans groups.

import ArgumentParser
import Logging
import VPNKit

/// How the guest is attached.
struct LinkOptions: ParsableArguments {
    @Option(help: "The guest's network namespace: a name under /var/run/netns, a path, or a PID (its /proc/PID/ns/net, entering /proc/PID/ns/user unless --userns says otherwise).")
    var netns: String?
    @Option(help: "The user namespace owning --netns, entered first (when not ours) to open the TAP there: how an unprivileged daemon serves a rootless container's namespace. A path, such as /proc/PID/ns/user.")
    var userns: String?
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
    @Flag(name: .customLong("no-offloads"), help: "TAP devices: no virtio-net header, so no checksum or TCP segmentation offload; every segment then crosses the device at MTU size, at more CPU per byte. The fault flags also turn offloads off.")
    var noOffloads = false
    @Flag(name: .customLong("receive-steering"), help: "TAP devices: set an RPS mask of every CPU the daemon may use, so the guest's kernel handles our frames on another CPU instead of inside our write(2). Faster only with CPUs to spare, slower without; the mask stays on the device.")
    var receiveSteering = false
    @Option(name: .customLong("io-engine"), help: "Where the data path runs: reactor, the daemon's own epoll loop with host sockets of its own (Linux, TAP links: the default there); or nio, SwiftNIO's event loop (the default for --socket, and the only choice off Linux).")
    var ioEngineChoice: IOEngine?

    /// The engine used: the one asked for, else the reactor for a TAP link on Linux and SwiftNIO's loop otherwise.
    var ioEngine: IOEngine {
        if let ioEngineChoice { return ioEngineChoice }
        #if os(Linux)
        return socket == nil ? .reactor : .nio
        #else
        return .nio
        #endif
    }

    enum SocketProtocol: String, ExpressibleByArgument, CaseIterable {
        case qemu, dgram, vmnet
    }

    func validate() throws {
        switch (tap, socket) {
        case (.some, .some): throw ValidationError("--tap and --socket cannot be used together")
        case (nil, .some): if `protocol` == nil { throw ValidationError("--socket needs --protocol qemu|dgram|vmnet") }
        case (.some, nil): if `protocol` != nil { throw ValidationError("--protocol goes with --socket, not --tap") }
        case (nil, nil): break
        }
        #if !os(Linux)
        if tap != nil || netns != nil { throw ValidationError("--tap and --netns need Linux (TAP devices, network namespaces): use --socket") }
        #endif
        if userns != nil && netns == nil { throw ValidationError("--userns goes with --netns") }
        if let netns, netns.allSatisfy(\.isNumber), (Int32(netns) ?? 0) <= 0 { throw ValidationError("--netns \(netns) is not a PID") }
        if receiveSteering && socket != nil { throw ValidationError("--receive-steering applies to TAP devices (--tap, or a command after --), not to --socket") }
        if connect && `protocol` != .qemu { throw ValidationError("--connect goes with --protocol qemu (a VM listening with server=on)") }
        if ioEngineChoice == .reactor {
            #if !os(Linux)
            throw ValidationError("--io-engine reactor needs Linux (epoll)")
            #endif
            if socket != nil { throw ValidationError("--io-engine reactor serves TAP links (--tap, or a command after --), not --socket yet") }
        }
        guard (68...65520).contains(mtu) else { throw ValidationError("--mtu must be within 68…65520") }
    }

    #if os(Linux)
    /// The link for these options; `namespace` (as root) or `rootless` (as an ordinary user) is the
    /// one made for a command (after --).
    func link(namespace: GuestNamespace?, rootless: RootlessCommand?) throws -> UserspaceStack.Link {
        if let namespace {
            return .tap(device: namespace.device, namespace: namespace.path, mtu: mtu, offloads: !noOffloads, receiveSteering: receiveSteering)
        }
        if let rootless {
            return .tap(
                device: rootless.device, namespace: rootless.netnsPath, userNamespace: rootless.usernsPath, mtu: mtu, offloads: !noOffloads,
                receiveSteering: receiveSteering)
        }
        return try link()
    }
    #endif

    #if os(Linux)
    /// The namespaces --netns and --userns name: a PID stands for /proc/PID/ns/net, and for
    /// /proc/PID/ns/user unless --userns is given (the C side skips a user namespace that is ours).
    var namespacePaths: (net: String?, user: String?) {
        guard let netns else { return (nil, nil) }
        if netns.allSatisfy(\.isNumber), let pid = Int32(netns), pid > 0 {
            return ("/proc/\(pid)/ns/net", userns ?? "/proc/\(pid)/ns/user")
        }
        return (netns, userns)
    }
    #endif

    /// The link for these options (a TAP device only on Linux; elsewhere `validate` refuses --tap).
    func link() throws -> UserspaceStack.Link {
        #if os(Linux)
        if let tap {
            let paths = namespacePaths
            return .tap(device: tap, namespace: paths.net, userNamespace: paths.user, mtu: mtu, offloads: !noOffloads, receiveSteering: receiveSteering)
        }
        #endif
        guard let socket, let kind = `protocol` else { throw ValidationError("give --tap (with --netns), --socket (with --protocol), or a command after --") }
        switch kind {
        case .dgram: return .datagramSocket(path: socket, mtu: mtu)
        case .qemu: return .qemuStream(path: socket, connect: connect, mtu: mtu)
        case .vmnet: return .vmnetServer(path: socket, mtu: mtu)
        }
    }
}

/// The guest network's addresses and the stack's limits.
struct StackOptions: ParsableArguments {
    @Option(help: "The guest subnet.")
    var subnet: String = "192.168.65.0/24"
    @Option(help: "The gateway address (default: the subnet's first address).")
    var gateway: String?
    @Option(name: .customLong("host-alias"), help: "The guest-side address of the host's 127.0.0.1 (named host.internal); 0.0.0.0 for none.")
    var hostAlias: String = "192.168.65.2"
    @Option(name: .customLong("ipv6-prefix"), help: "The guests' IPv6 /64, advertised for SLAAC; the gateway is its ::1 and fe80::1.")
    var ipv6Prefix: String = "fd00:65::/64"
    @Flag(name: .customLong("no-ipv6"), help: "No IPv6 on the guest link: no router advertisements, and IPv6 frames are dropped and counted.")
    var noIPv6 = false
    @Option(name: .customLong("tcp-buffer"), help: "Send and receive buffer per guest TCP connection, in bytes (16384…16777216). Larger keeps 64 KiB segments flowing; a guest can make the daemon hold up to about 4 × this + 768 KiB per connection (SECURITY.md).")
    var tcpBuffer: Int = 1 << 20

    func validate() throws {
        guard let net = IPv4Subnet(subnet) else { throw ValidationError("--subnet must look like 192.168.65.0/24") }
        guard net.prefixLength <= 29 else { throw ValidationError("--subnet \(net) is too small: it needs room for the gateway, the host alias and guests (/29 at most)") }
        if let gateway, IPv4Address(gateway) == nil { throw ValidationError("--gateway must be an IPv4 address") }
        guard let alias = IPv4Address(hostAlias) else { throw ValidationError("--host-alias must be an IPv4 address") }
        guard alias == .any || net.contains(alias) else { throw ValidationError("--host-alias \(alias) is not inside --subnet \(net)") }
        guard (16384...16 << 20).contains(tcpBuffer) else { throw ValidationError("--tcp-buffer must be between 16384 and 16777216") }
        if !noIPv6, ipv6PrefixAddress == nil { throw ValidationError("--ipv6-prefix must be a /64 with its host bits zero, like fd00:65::/64") }
    }

    /// The IPv6 prefix, nil unless `--ipv6-prefix` is a /64 with its last 64 bits zero.
    var ipv6PrefixAddress: IPv6Address? {
        let parts = ipv6Prefix.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[1] == "64", let address = IPv6Address(parts[0]), address.low == 0, !address.isMulticast,
            !address.isLinkLocal, !address.isUnspecified
        else { return nil }
        return address
    }

    /// The host alias, nil when turned off (`--host-alias 0.0.0.0`, as vpnkit's `--host-ip 0.0.0.0`).
    var hostAliasAddress: IPv4Address? {
        guard let alias = IPv4Address(hostAlias), alias != .any else { return nil }
        return alias
    }

    func makeConfiguration(mtu: Int, maxConnections: Int) throws -> StackConfiguration {
        let net = IPv4Subnet(subnet)!
        let gatewayAddress = gateway.flatMap { IPv4Address($0) } ?? net.address(at: 1)!
        guard net.contains(gatewayAddress) else { throw ValidationError("--gateway \(gatewayAddress) is not inside --subnet \(net)") }
        let alias = hostAliasAddress
        guard alias != gatewayAddress else { throw ValidationError("--host-alias and --gateway must differ") }
        var c = StackConfiguration(subnet: net, gateway: gatewayAddress, additionalAddresses: alias.map { [$0] } ?? [], mtu: mtu)
        c.maximumTCPConnections = max(c.maximumTCPConnections, maxConnections + 256)
        c.tcp.sendBufferSize = tcpBuffer
        c.tcp.receiveBufferSize = tcpBuffer
        if !noIPv6, let prefix = ipv6PrefixAddress { c.ipv6 = IPv6LinkConfiguration(prefix: prefix) }
        return c
    }
}

/// The DHCP server on the gateway.
struct DHCPOptions: ParsableArguments {
    @Flag(name: .customLong("no-dhcp"), help: "Do not run the DHCP servers on the gateway (DHCPv4, and stateless DHCPv6 with IPv6).")
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

    func validate() throws {
        guard (10...(365 * 86400)).contains(leaseTime) else { throw ValidationError("--lease-time must be within 10 s … 1 year") }
        _ = try reservations()
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

    /// The server's configuration, nil with --no-dhcp.
    func makeConfiguration(_ stack: StackConfiguration) throws -> DHCPServerConfiguration? {
        guard !noDHCP else { return nil }
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
}

/// Carrying the guest's traffic over host sockets, and DNS.
struct NATOptions: ParsableArguments {
    @Flag(name: .customLong("no-host-loopback"), help: "The host aliases (IPv4 and IPv6) do not reach the host's loopback: connections to them are refused.")
    var noHostLoopback = false
    @Flag(name: .customLong("no-nat"), help: "Do not forward guest traffic to host sockets (the stack answers only for its own addresses).")
    var noNAT = false
    @Option(name: .customLong("dns-upstream"), help: "A DNS server to forward guest queries to, IPv4[:PORT], IPv6 or [IPv6]:PORT; repeatable (default: the host's /etc/resolv.conf nameservers).")
    var dnsUpstream: [String] = []
    @Option(name: .customLong("host-record"), help: "A DNS name the gateway answers itself: NAME=IP (IPv4: A, IPv6: AAAA); repeatable.")
    var hostRecord: [String] = []
    @Option(name: .customLong("publish"), help: "Forward a host port into the guest: tcp|udp:[HOSTIP:]HOSTPORT:GUESTPORT, HOSTIP a dotted quad or [IPv6]; or ranges of the same length, tcp:8000-8010:9000-9010; repeatable. Binds 127.0.0.1 and ::1 unless HOSTIP is given; reaches the guest over the listener's family when the guest has an address of it, else the other.")
    var publish: [String] = []
    @Option(name: .customLong("publish-source"), help: "Whom a published port's connection or datagram comes from in the guest: `client` (default), the host client's own address and port when it is not on the host's loopback (else the host alias), or `alias`, always the host alias.")
    var publishSource: String = "client"
    @Option(name: .customLong("outbound-addr"), help: "The host IPv4 address (or an interface, by its first IPv4 address) the NAT's TCP connections and UDP flows leave from (default: the host's routing chooses).")
    var outboundAddr: String?
    @Option(name: .customLong("outbound-addr6"), help: "The host IPv6 address (or an interface, by its first address that is not link-local) the NAT's IPv6 connections and flows leave from.")
    var outboundAddr6: String?
    @Option(name: .customLong("max-connections"), help: "TCP connections through the NAT at once; more are refused with RST. Each holds a host socket and up to its TCP buffers in memory.")
    var maxConnections: Int = 4096
    @Option(name: .customLong("max-udp-flows"), help: "UDP flows (guest address and port) at once; the least recently used is closed to make room. Each holds a host socket.")
    var maxUDPFlows: Int = 1024
    @Option(name: .customLong("udp-idle-timeout"), help: "Seconds after which an idle UDP flow is closed.")
    var udpIdleTimeout: Int = 60

    func validate() throws {
        for upstream in dnsUpstream where parseEndpoint(upstream, defaultPort: 53) == nil {
            throw ValidationError("--dns-upstream wants IPv4[:PORT], IPv6 or [IPv6]:PORT, got \(upstream)")
        }
        for record in hostRecord {
            let parts = record.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, IPAddress(parts[1]) != nil, (try? DomainNameList.encode([String(parts[0])])) != nil else {
                throw ValidationError("--host-record wants NAME=IP, got \(record)")
            }
        }
        for entry in publish {
            do {
                _ = try PublishedPort.parseRange(entry)
            } catch {
                throw ValidationError("--publish \(entry): \(error)")
            }
        }
        try OutboundAddress.validate(outboundAddr, outboundAddr6)
        guard publishSource == "client" || publishSource == "alias" else {
            throw ValidationError("--publish-source wants client or alias, got \(publishSource)")
        }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        guard maxUDPFlows >= 1 else { throw ValidationError("--max-udp-flows must be at least 1") }
        guard udpIdleTimeout >= 1 else { throw ValidationError("--udp-idle-timeout must be at least 1 second") }
    }

    /// Every `--publish` entry with its ranges expanded, in order (call after `validate()`).
    var publishedPorts: [PublishedPort] {
        publish.flatMap { (try? PublishedPort.parseRange($0)) ?? [] }
    }

    /// The NAT's configuration, nil with --no-nat.
    func makeConfiguration(hostAlias: IPv4Address?, hostAlias6: IPv6Address? = nil) -> NATConfiguration? {
        guard !noNAT else { return nil }
        var c = NATConfiguration()
        c.hostAlias = hostAlias.map(IPAddress.v4)
        c.hostAlias6 = hostAlias6.map(IPAddress.v6)
        c.hostLoopback = !noHostLoopback
        c.preservesClientAddress = publishSource == "client"
        c.outboundAddress = outboundAddr.flatMap { OutboundAddress.resolve($0, ipv6: false)?.ipv4 }
        c.outboundAddress6 = outboundAddr6.flatMap { OutboundAddress.resolve($0, ipv6: true)?.ipv6 }
        c.maximumConnections = maxConnections
        c.maximumUDPFlows = maxUDPFlows
        c.udpIdleTimeout = .seconds(Int64(udpIdleTimeout))
        return c
    }

    func makeDNSConfiguration(_ stack: StackConfiguration, hostAlias: IPv4Address?, hostAlias6: IPv6Address? = nil) -> DNSServiceConfiguration {
        var c = DNSServiceConfiguration()
        // A and, with IPv6, AAAA: each name answers NODATA for a family it lacks.
        c.records["gateway.internal"] = [.v4(stack.gateway)] + (stack.ipv6.map { [.v6($0.gateway)] } ?? [])
        if let hostAlias { c.records["host.internal"] = [.v4(hostAlias)] + (hostAlias6.map { [.v6($0)] } ?? []) }
        // --host-record replaces a built-in name; repeated for one name, it gives it several addresses.
        var given: [String: [IPAddress]] = [:]
        for record in hostRecord {
            let parts = record.split(separator: "=", maxSplits: 1)
            if parts.count == 2, let ip = IPAddress(parts[1]) { given[String(parts[0]), default: []].append(ip) }
        }
        c.records.merge(given) { _, new in new }
        c.upstreams = dnsUpstream.compactMap { parseEndpoint($0, defaultPort: 53) }
        c.followResolvConf = dnsUpstream.isEmpty
        return c
    }
}

/// Capture, faults, diagnostics and logging.
struct DiagnosticOptions: ParsableArguments {
    @Option(help: "Write every frame of the guest link, both directions, to this pcap file (as it crossed the device, offloads kept). Costs a file write per frame.")
    var pcap: String?
    @Option(name: .customLong("fault-drop"), help: "Probability of dropping a frame (each direction). Any fault flag turns TAP offloads off.")
    var faultDrop: Double = 0
    @Option(name: .customLong("fault-reorder"), help: "Probability of holding a frame back so later ones overtake it. Any fault flag turns TAP offloads off.")
    var faultReorder: Double = 0
    @Option(name: .customLong("fault-duplicate"), help: "Probability of delivering a frame twice. Any fault flag turns TAP offloads off.")
    var faultDuplicate: Double = 0
    @Option(name: .customLong("fault-corrupt"), help: "Probability of flipping one bit of a frame. Any fault flag turns TAP offloads off.")
    var faultCorrupt: Double = 0
    @Option(name: .customLong("fault-seed"), help: "Seed of the fault sequence (the same seed repeats the same faults).")
    var faultSeed: UInt64 = 1
    @Option(name: .customLong("udp-echo"), help: "Diagnostic: echo UDP datagrams sent to this port of the gateway.")
    var udpEcho: UInt16?
    @Flag(name: .customLong("diagnostic-services"), help: "Serve TCP and UDP echo (port 7) and discard (port 9) on the gateway, to measure the stack against a real kernel.")
    var diagnosticServices = false
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"
    @Option(name: .customLong("stats"), help: "Serve counters and the flow table as JSON (or Prometheus text) on this unix socket; read it with `vpnkit stats PATH`.")
    var stats: String?
    @Option(name: .customLong("api-socket"), help: "Serve the control API (HTTP/1.1 and JSON: GET /stats, /flows, /forwards; POST /forwards; DELETE /forwards/ID) on this unix socket, mode 0600; use it with `vpnkit publish`, `unpublish`, `forwards` and `flows`.")
    var apiSocket: String?

    func validate() throws {
        for (name, p) in [("drop", faultDrop), ("reorder", faultReorder), ("duplicate", faultDuplicate), ("corrupt", faultCorrupt)] {
            guard (0...1).contains(p) else { throw ValidationError("--fault-\(name) must be a probability within 0…1") }
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
    }

    var faults: FaultConfiguration {
        FaultConfiguration(drop: faultDrop, duplicate: faultDuplicate, reorder: faultReorder, corrupt: faultCorrupt, seed: faultSeed)
    }
}

/// `IPv4[:PORT]`, `[IPv6]:PORT` or a bare IPv6 address (see `DNSUpstream.init(parsing:defaultPort:)`).
func parseEndpoint(_ text: String, defaultPort: UInt16) -> DNSUpstream? {
    DNSUpstream(parsing: text, defaultPort: defaultPort)
}

/// What a supervisor uses to follow the daemon without polling (slirp4netns's -r/-e, and a pid file).
struct SupervisionOptions: ParsableArguments {
    @Option(name: .customLong("ready-fd"), help: "Write \"1\" to this descriptor and close it once the guest link is up, the services and published ports are attached and a command (after --) has started.")
    var readyFD: Int32?
    @Option(name: .customLong("exit-fd"), help: "Exit when this descriptor becomes readable (a byte, or its writer closed).")
    var exitFD: Int32?
    @Option(name: .customLong("pid-file"), help: "Write the daemon's pid to this file (atomically) at start; it is removed at exit.")
    var pidFile: String?

    func validate() throws {
        for fd in [readyFD, exitFD].compactMap({ $0 }) where fd < 0 { throw ValidationError("file descriptor \(fd) is negative") }
        if let readyFD, let exitFD, readyFD == exitFD { throw ValidationError("--ready-fd and --exit-fd must differ") }
    }
}
