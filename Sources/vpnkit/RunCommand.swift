// `vpnkit run`: give a guest a network. The command turns its options into a `UserspaceStack.Link`
// and service configurations and assembles them through the library's one path
// (`UserspaceStack.start`, `serveDHCP`, `attachNAT`…); what stays here is the daemon's own:
// signals, the command's namespace, the stats socket and control API, the exit summary.

import ArgumentParser
import Logging
import NIOCore
import NIOPosix
import VPNKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
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

            As an ordinary user a command (after --) runs in a user namespace and a network namespace \
            of its own, as the caller, with tap0 configured statically and the gateway as its DNS.

            Examples:
              vpnkit run --netns guest --tap tap0
              vpnkit run --publish tcp:8080:80 -- sh -c 'python3 -m http.server 80'
              vpnkit run -- curl http://host.internal:8000/
              vpnkit run --netns 4242 --tap tap0 --configure   (a rootless container's namespace, unprivileged)
              vpnkit run --api-socket /run/vpnkit.api --netns guest --tap tap0
              vpnkit publish --api-socket /run/vpnkit.api tcp:8080:80   (at run time)
            """
    )

    @OptionGroup(title: "Guest link") var link: LinkOptions
    @OptionGroup(title: "Addresses and limits") var addresses: StackOptions
    @OptionGroup(title: "DHCP") var dhcp: DHCPOptions
    @OptionGroup(title: "NAT and DNS") var nat: NATOptions
    @OptionGroup(title: "Diagnostics") var diagnostics: DiagnosticOptions
    @OptionGroup(title: "Supervision") var supervision: SupervisionOptions

    @Flag(name: .customLong("seccomp"), inversion: .prefixedNo, help: "Once set up, refuse the system calls the daemon never needs (running programs, ptrace, mounts, namespaces, modules…). On by default on Linux, except with a command (after --).")
    var seccomp: Bool?
    @Flag(name: .customLong("enable-seccomp"), help: ArgumentHelp("Another name for --seccomp: slirp4netns's.", visibility: .hidden))
    var enableSeccomp = false
    @Flag(name: .customLong("sandbox"), inversion: .prefixedNo, help: "As root: once set up, an empty read-only root (resolv.conf and hosts kept) and capabilities dropped. Off by default.")
    var sandbox = false
    @Flag(name: .customLong("enable-sandbox"), help: ArgumentHelp("Another name for --sandbox: slirp4netns's.", visibility: .hidden))
    var enableSandbox = false

    @Flag(name: .customLong("configure"), help: "With a command: configure the namespace statically instead of by DHCP (as an ordinary user it always is). With --tap: give the device the first pool address, the MTU and a default route via the gateway, and bring it and lo up.")
    var configureStatically = false
    @Argument(parsing: .postTerminator, help: "A command to run in a fresh namespace on the guest network (after --).")
    var command: [String] = []

    func validate() throws {
        if !command.isEmpty, link.tap != nil || link.socket != nil || link.netns != nil {
            throw ValidationError("a command (after --) runs in a namespace of its own: leave out --tap, --netns and --socket")
        }
        if configureStatically, command.isEmpty, link.tap == nil { throw ValidationError("--configure goes with --tap or a command (after --)") }
        #if !os(Linux)
        if !command.isEmpty { throw ValidationError("a command (after --) runs in a network namespace of its own, which needs Linux") }
        #endif
        if !command.isEmpty, seccomp == true || enableSeccomp || sandbox || enableSandbox {
            throw ValidationError("--seccomp and --sandbox are for a daemon alone: with a command (after --), vpnkit starts it and removes its namespace after setup")
        }
        #if os(Linux)
        if sandbox || enableSandbox, let reason = Confinement.sandboxUnavailableReason { throw ValidationError(reason) }
        #else
        if seccomp == true || enableSeccomp || sandbox || enableSandbox { throw ValidationError("--seccomp and --sandbox need Linux") }
        #endif
        if command.isEmpty, link.tap == nil, link.socket == nil {
            throw ValidationError("give --tap (with --netns), --socket (with --protocol), or a command after --")
        }
    }

    func run() async throws {
        let signals = SignalWatcher([SIGINT, SIGTERM, SIGHUP])
        defer { signals.cancel() }
        let logLevel = Logger.Level(rawValue: diagnostics.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
        let logger = Logger(label: "vpnkit")
        // The descriptors a supervisor passed: taken before anything else can be given their numbers.
        let supervisor = SupervisorDescriptors(readyFD: supervision.readyFD, exitFD: supervision.exitFD)
        var pidFile: PidFile?
        if let path = supervision.pidFile {
            do {
                pidFile = try PidFile.write(path)
            } catch {
                logger.error("cannot write the pid file \(path): \(error)")
                throw ExitCode(1)
            }
        }
        defer { pidFile?.remove() }
        MallocTuning.apply(logger: logger)
        do {
            try OpenFileLimit.apply(
                needed: OpenFileLimit.needed(maxConnections: nat.maxConnections, maxUDPFlows: nat.maxUDPFlows, published: nat.publishedPorts.count),
                maxConnections: nat.maxConnections, maxUDPFlows: nat.maxUDPFlows, logger: logger)
        } catch {
            logger.error("\(error)")
            throw ExitCode(1)
        }
        var configuration = try addresses.makeConfiguration(mtu: link.mtu, maxConnections: nat.maxConnections)
        // The DHCP search list is IPv6's too (RFC 8106 DNSSL in the router advertisements).
        configuration.ipv6?.searchDomains = (dhcp.domain.map { [$0] } ?? []) + dhcp.search
        let dhcpConfiguration = try dhcp.makeConfiguration(configuration)
        let hostAlias = addresses.hostAliasAddress
        // The IPv6 host alias is the prefix's ::2 (fd00:65::2 by default), off with the IPv4 one.
        let hostAlias6 = hostAlias == nil ? nil : configuration.ipv6.map { IPv6Address(high: $0.prefix.high, low: 2) }
        let natConfiguration = nat.makeConfiguration(hostAlias: hostAlias, hostAlias6: hostAlias6)
        let dnsConfiguration = nat.makeDNSConfiguration(configuration, hostAlias: hostAlias, hostAlias6: hostAlias6)
        let firstGuest = dhcpConfiguration?.poolStart ?? configuration.subnet.address(at: 3)!

        #if os(Linux)
        // With a command: a namespace of our own, removed when we end.
        // As root `ip netns add`; as an ordinary user a child in namespaces of its own (no privilege).
        var guestNamespace: GuestNamespace?
        var rootless: RootlessCommand?
        if !command.isEmpty {
            do {
                if geteuid() == 0 {
                    guestNamespace = try GuestNamespace.create(mtu: link.mtu, logger: logger)
                } else {
                    rootless = try RootlessCommand(
                        arguments: command,
                        resolvConf: RootlessCommand.resolvConf(gateway: configuration.gateway, gateway6: configuration.ipv6?.gateway, domain: dhcp.domain))
                }
            } catch {
                logger.error("cannot create the guest namespace: \(error)")
                throw ExitCode(1)
            }
        }
        defer {
            guestNamespace?.remove()
            rootless?.remove()
        }

        var guestLink = try link.link(namespace: guestNamespace, rootless: rootless).injectingFaults(diagnostics.faults)
        #else
        var guestLink = try link.link().injectingFaults(diagnostics.faults)
        #endif
        if let pcap = diagnostics.pcap { guestLink = guestLink.capturing(toFile: pcap) }
        let (stack, group) = try await DaemonStack.start(
            configuration: configuration, link: guestLink, logger: logger, failure: "cannot open the guest link", engine: link.ioEngine)

        var icmpMode: String?
        var failures: [String] = []
        do {
            if let dhcpConfiguration {
                try await stack.serveDHCP(dhcpConfiguration)
                // Stateless DHCPv6 beside it when IPv6 is on: DNS and the search list, the RA's O flag set.
                if let dhcpv6 = stack.defaultDHCPv6ServerConfiguration { try await stack.serveDHCPv6(dhcpv6) }
            }
            if diagnostics.diagnosticServices { try await stack.startDiagnosticServices() }
            if let port = diagnostics.udpEcho, !diagnostics.diagnosticServices || port != 7 { try await stack.serveUDPEcho(port: port) }
            if let natConfiguration {
                icmpMode = try await stack.attachNAT(natConfiguration, dns: dnsConfiguration)
                if let icmpMode {
                    logger.info("ping to outside addresses through a \(icmpMode)")
                } else {
                    logger.notice("ping to outside addresses is disabled: no raw ICMP socket (CAP_NET_RAW) and no ICMP datagram socket (net.ipv4.ping_group_range); the gateway and host alias still answer")
                }
                for port in nat.publishedPorts {
                    do {
                        try await stack.publish(port, toLatestLeaseOr: .v4(firstGuest))
                    } catch {
                        failures.append("cannot publish \(port): \(error)")
                    }
                }
            } else {
                try await stack.serveDNS(dnsConfiguration)
            }
        } catch {
            failures.append("cannot start the services: \(error)")
        }
        for failure in failures { logger.error("\(failure)") }
        if !failures.isEmpty {
            await stack.shutdown()
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }

        // The answers of both the stats socket (read-only) and the control API.
        let routes = ControlRoutes(stack: stack, guestFallback: .v4(firstGuest))
        var statsServer: StatsServer?
        if let stats = diagnostics.stats {
            do {
                statsServer = try await StatsServer.start(path: stats, routes: routes, logger: logger)
            } catch {
                logger.error("cannot serve stats on \(stats): \(error)")
            }
        }
        var controlServer: ControlServer?
        if let apiSocket = diagnostics.apiSocket {
            do {
                controlServer = try await ControlServer.start(path: apiSocket, routes: routes, logger: logger)
            } catch {
                // Asked for and not there: stop rather than run without it.
                logger.error("cannot serve the control API on \(apiSocket): \(error)")
                statsServer?.close()
                await stack.shutdown()
                try? await group.shutdownGracefully()
                throw ExitCode(1)
            }
        }
        #if os(Linux)
        // Static configuration through the namespace's owner: the rootless command's, or --tap's with --configure.
        let staticTarget: (net: String, user: String?, device: String)? =
            rootless.map { ($0.netnsPath, $0.usernsPath, $0.device) }
            ?? (configureStatically && link.tap != nil ? (link.namespacePaths.net ?? "/proc/self/ns/net", link.namespacePaths.user, link.tap!) : nil)
        if let staticTarget {
            do {
                try NamespaceInterface(
                    device: staticTarget.device, mtu: link.mtu, address: (firstGuest, configuration.subnet.prefixLength), gateway: configuration.gateway
                ).apply(namespace: staticTarget.net, userNamespace: staticTarget.user)
            } catch {
                logger.error("cannot configure \(staticTarget.device) in \(staticTarget.net): \(error)")
                statsServer?.close()
                controlServer?.close()
                await stack.shutdown()
                try? await group.shutdownGracefully()
                throw ExitCode(1)
            }
        }
        // Confinement last: entering the namespaces above takes system calls the filter refuses.
        if command.isEmpty, seccomp ?? true || enableSeccomp || sandbox || enableSandbox {
            do {
                try Confinement.confine(
                    sandbox: sandbox || enableSandbox, seccomp: seccomp ?? true || enableSeccomp,
                    keep: [dnsConfiguration.resolvConfPath] + (dnsConfiguration.hostsPath.map { [$0] } ?? []), logger: logger)
            } catch {
                logger.error("\(error)")
                statsServer?.close()
                controlServer?.close()
                await stack.shutdown()
                try? await group.shutdownGracefully()
                throw ExitCode(1)
            }
        }
        #endif
        logger.info("serving \(guestLink.description) as \(configuration.gateway) on \(configuration.subnet), MTU \(stack.configuration.mtu)")

        let ended = StopReason()
        supervisor.watchExit(ended)
        ended.watch(stack)
        var exitStatus: Int32 = 0
        let reason: String
        #if os(Linux)
        if let rootless {
            do {
                try rootless.go()
                supervisor.signalReady(logger: logger)
                let result = await rootless.wait(forwarding: signals, or: ended)
                exitStatus = result.status
                reason = result.reason
            } catch {
                logger.error("cannot start \(command.joined(separator: " ")): \(error)")
                exitStatus = 127
                reason = "the command did not start"
            }
        } else if let guestNamespace {
            let child = ChildCommand(arguments: command, namespace: guestNamespace)
            do {
                try await guestNamespace.configure(
                    staticAddress: configureStatically ? firstGuest : nil, gateway: configuration.gateway, gateway6: configuration.ipv6?.gateway,
                    subnet: configuration.subnet,
                    domain: dhcp.domain)
                try child.start()
            } catch {
                logger.error("cannot start \(command.joined(separator: " ")): \(error)")
                exitStatus = 127
            }
            if child.isRunning {
                supervisor.signalReady(logger: logger)
                let result = await child.wait(forwarding: signals, or: ended)
                exitStatus = result.status
                reason = result.reason
            } else {
                reason = "the command did not start"
            }
        } else {
            supervisor.signalReady(logger: logger)
            reason = await waitForStop(signals, or: ended)
        }
        #else
        supervisor.signalReady(logger: logger)
        reason = await waitForStop(signals, or: ended)
        #endif
        logger.info("stopping: \(reason)")
        statsServer?.close()
        controlServer?.close()
        let summary = await Self.summary(of: stack)
        logger.info("\(summary)")
        await stack.shutdown()
        try await group.shutdownGracefully()
        if exitStatus != 0 { throw ExitCode(exitStatus) }
    }

    /// Every counter, by group, and the DHCP leases: the log line at exit.
    static func summary(of stack: UserspaceStack) async -> String {
        (try? await stack.eventLoop.submit {
            var text = stack.reportOnLoop().summary
            for lease in stack.dhcpLeasesOnLoop() {
                text += "\nlease: \(lease.address) \(lease.hardwareAddress) \(lease.state.rawValue)\(lease.hostName.map { " " + $0 } ?? "")"
            }
            return text
        }.get()) ?? "counters: unavailable (the stack had stopped)"
    }
}
