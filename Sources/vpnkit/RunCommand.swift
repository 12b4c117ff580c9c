import ArgumentParser
@preconcurrency import Dispatch
import Logging
import NIOCore
import NIOPosix
import VPNKitBase
import VPNKitDHCP
import VPNKitIPv4
import VPNKitStack
import VPNKitTransport

#if canImport(Glibc)
import Glibc
#endif

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the stack on a guest link: a TAP device in a network namespace, or a VM's unix socket.",
        discussion: """
            The stack answers ARP and ping for the gateway address on the guest's subnet. Stop it with \
            SIGINT or SIGTERM; it then prints its counters to standard error.

            Example: vpnkit run --netns guest --tap tap0 --mtu 1500
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

    @Option(help: "The link MTU (68…65520).")
    var mtu: Int = 1500

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

    enum SocketProtocol: String, ExpressibleByArgument, CaseIterable {
        case qemu, dgram, vmnet
    }

    func validate() throws {
        switch (tap, socket) {
        case (nil, nil): throw ValidationError("give --tap (with --netns) or --socket (with --protocol)")
        case (.some, .some): throw ValidationError("--tap and --socket cannot be used together")
        case (nil, .some): if `protocol` == nil { throw ValidationError("--socket needs --protocol qemu|dgram|vmnet") }
        case (.some, nil): if `protocol` != nil { throw ValidationError("--protocol goes with --socket, not --tap") }
        }
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
        var c = DHCPServerConfiguration(serverAddress: stack.gateway, subnet: stack.subnet)
        c.domainName = domain
        c.searchDomains = search
        c.mtu = UInt16(clamping: stack.mtu)
        c.leaseTime = .seconds(Int64(leaseTime))
        c.reservations = try reservations()
        for address in c.reservations.values where !stack.subnet.contains(address) {
            throw ValidationError("--dhcp-reserve address \(address) is not inside \(stack.subnet)")
        }
        return c
    }

    func makeConfiguration() throws -> StackConfiguration {
        let net = IPv4Subnet(subnet)!
        let gatewayAddress = gateway.flatMap { IPv4Address($0) } ?? net.address(at: 1)!
        guard net.contains(gatewayAddress) else { throw ValidationError("--gateway \(gatewayAddress) is not inside --subnet \(net)") }
        return StackConfiguration(subnet: net, gateway: gatewayAddress, mtu: mtu)
    }

    var faults: FaultConfiguration {
        FaultConfiguration(drop: faultDrop, duplicate: faultDuplicate, reorder: faultReorder, corrupt: faultCorrupt, seed: faultSeed)
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            return handler
        }
        let logger = Logger(label: "vpnkit")
        let configuration = try makeConfiguration()
        let dhcp = noDHCP ? nil : try makeDHCPConfiguration(configuration)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()

        let transport: NIOLoopBound<any FrameTransport>
        do {
            transport = try await openTransport(on: loop)
        } catch {
            logger.error("cannot open the guest link: \(error)")
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }

        let faults = self.faults
        let pcap = self.pcap
        let udpEcho = self.udpEcho
        let diagnostics = self.diagnosticServices
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
            if let dhcp { driver.attachments.append(try DHCPService(stack: driver.stack, configuration: dhcp)) }
            if diagnostics { driver.attachments.append(try DiagnosticServices(stack: driver.stack)) }
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
        logger.info("serving \(describeLink()) as \(configuration.gateway) on \(configuration.subnet), MTU \(configuration.mtu)")

        let reason = await waitForStop(signals: [SIGINT, SIGTERM], or: ended)
        logger.info("stopping: \(reason)")
        let summary: String = try await loop.submit {
            let d = driver.value
            defer { d.stop() }
            let counters = d.stack.statistics.nonZero.map { "\($0.name)=\($0.value)" }.joined(separator: " ")
            var summary = "counters: \(counters)\nlink: \(d.transport.statistics)"
            if let service = d.attachments.lazy.compactMap({ $0 as? DHCPService }).first {
                let c = service.counters
                summary += "\ndhcp: discovers=\(c.discovers) offers=\(c.offers) requests=\(c.requests) acks=\(c.acks) naks=\(c.naks) declines=\(c.declines) releases=\(c.releases) informs=\(c.informs) pool_exhausted=\(c.poolExhausted) malformed=\(c.malformed) ignored=\(c.ignored)"
                for lease in service.leases(now: .now()) {
                    summary += "\nlease: \(lease.address) \(lease.hardwareAddress) \(lease.state.rawValue)\(lease.hostName.map { " " + $0 } ?? "")"
                }
            }
            if let faulty = d.transport as? FaultInjectingTransport {
                summary += "\nfaults to guest: \(faulty.counters.toGuest)\nfaults from guest: \(faulty.counters.fromGuest)"
            }
            return summary
        }.get()
        logger.info("\(summary)")
        try await group.shutdownGracefully()
    }

    func describeLink() -> String {
        if let tap { return "tap \(tap)" + (netns.map { " in namespace \($0)" } ?? "") }
        return "\(`protocol`?.rawValue ?? "?") socket \(socket ?? "?")"
    }

    func openTransport(on loop: any EventLoop) async throws -> NIOLoopBound<any FrameTransport> {
        if let tap {
            let bound = try await TAPTransport.open(namespace: netns, device: tap, mtu: mtu, on: loop).get()
            return try await loop.submit { NIOLoopBound<any FrameTransport>(bound.value, eventLoop: loop) }.get()
        }
        guard let socket, let kind = `protocol` else { throw ValidationError("--socket needs --protocol") }
        let mtu = self.mtu
        let logger = Logger(label: "vpnkit")
        switch kind {
        case .dgram:
            let bound = try await DatagramFrameTransport.bind(path: socket, mtu: mtu, on: loop).get()
            return try await loop.submit { NIOLoopBound<any FrameTransport>(bound.value, eventLoop: loop) }.get()
        case .qemu, .vmnet:
            // We listen; each new connection becomes the guest's link (the previous one is closed).
            return try await loop.flatSubmit {
                let slot = ReplaceableTransport(mtu: mtu)
                slot.onDetach = { error in logger.info("guest disconnected\(error.map { ": \($0)" } ?? "")") }
                let attach: (any FrameTransport) -> Void = { connection in
                    logger.info("guest connected on \(socket)\(connection.guestAddress.map { " (MAC \($0))" } ?? "")")
                    slot.attach(connection)
                }
                let listening: EventLoopFuture<Void>
                if kind == .qemu {
                    listening = QemuStreamListener.bind(path: socket, mtu: mtu, on: loop, onConnection: attach).map { listener in
                        slot.listener = listener.value
                    }
                } else {
                    listening = VmnetListener.bind(path: socket, mtu: mtu, on: loop, onConnection: attach).map { listener in
                        slot.listener = listener.value
                    }
                }
                return listening.map { NIOLoopBound<any FrameTransport>(slot, eventLoop: loop) }
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

/// Waits for SIGINT or SIGTERM (or `other`), without a busy loop; returns why it stopped.
func waitForStop(signals numbers: [Int32], or other: StopReason) async -> String {
    let (stream, continuation) = AsyncStream.makeStream(of: String.self)
    let queue = DispatchQueue(label: "vpnkit.signals")
    var sources: [any DispatchSourceSignal] = []
    for number in numbers {
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
        let name = number == SIGINT ? "SIGINT" : number == SIGTERM ? "SIGTERM" : "signal \(number)"
        source.setEventHandler { continuation.yield(name) }
        source.resume()
        sources.append(source)
    }
    let reason = await withTaskGroup(of: String.self) { group in
        group.addTask { for await reason in stream { return reason }; return "signal stream ended" }
        group.addTask { for await reason in other.stream { return reason }; return "link ended" }
        let first = await group.next() ?? "stopped"
        group.cancelAll()
        return first
    }
    for source in sources { source.cancel() }
    return reason
}
