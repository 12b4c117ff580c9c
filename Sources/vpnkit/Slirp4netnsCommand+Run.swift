// `vpnkit slirp4netns`: the assembly, through the library's one path (`UserspaceStack`).

// Linux only, as `vpnkit slirp4netns` is.
#if os(Linux)

import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import VPNKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Slirp4netnsCommand {
    func run() async throws {
        if version {
            FileHandle.standardOutput.write(Data(Self.versionText.utf8))
            return
        }
        let signals = SignalWatcher([SIGINT, SIGTERM, SIGHUP])
        defer { signals.cancel() }
        let level = Logger.Level(rawValue: logLevel) ?? .notice
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "slirp4netns")
        if enableSandbox, let reason = Confinement.sandboxUnavailableReason {
            logger.error("\(reason)")
            throw ExitCode(1)
        }
        // The descriptors a supervisor passed: taken before anything else can be given their numbers.
        let supervisor = SupervisorDescriptors(readyFD: readyFD, exitFD: exitFD)
        let addresses = Addresses(subnet: IPv4Subnet(cidr)!)
        var configuration = StackConfiguration(subnet: addresses.subnet, gateway: addresses.gateway, mtu: mtu)
        configuration.tcp.sendBufferSize = 1 << 20
        configuration.tcp.receiveBufferSize = 1 << 20
        if enableIPv6 {
            var link = IPv6LinkConfiguration(prefix: Addresses.prefix6)
            link.gateway = Addresses.gateway6
            link.linkLocal = Addresses.linkLocal6
            link.dnsServer = disableDNS ? nil : Addresses.dns6
            link.advertisesDNS = !disableDNS
            configuration.ipv6 = link
        }
        var nat = NATConfiguration()
        // The gateway is the host alias: 10.0.2.2 (fd00::2) reaches the host's loopback.
        nat.hostAlias = .v4(addresses.gateway)
        nat.hostAlias6 = enableIPv6 ? .v6(Addresses.gateway6) : nil
        nat.hostLoopback = !disableHostLoopback
        nat.outboundAddress = outboundAddr.flatMap { OutboundAddress.resolve($0, ipv6: false)?.ipv4 }
        nat.outboundAddress6 = outboundAddr6.flatMap { OutboundAddress.resolve($0, ipv6: true)?.ipv6 }
        var dns = DNSServiceConfiguration()
        dns.address = addresses.dns
        dns.address6 = Addresses.dns6

        let paths = namespacePaths
        let link = UserspaceStack.Link.tap(device: tapName, namespace: paths.net, userNamespace: paths.user, mtu: mtu, offloads: true)
        let (stack, group) = try await DaemonStack.start(
            configuration: configuration, link: link, logger: logger, failure: "cannot open \(tapName) in \(paths.net)", engine: ioEngine)
        var apiServer: SlirpAPIServer?
        do {
            var dhcp = DHCPServerConfiguration(serverAddress: addresses.gateway, subnet: addresses.subnet, excluded: [addresses.dns])
            // libslirp's DHCP pool starts at .15; the address --configure gives (.100) is kept out.
            dhcp.poolStart = addresses.subnet.address(at: 15)!
            dhcp.excluded.insert(addresses.guest)
            dhcp.dnsServers = disableDNS ? [] : [addresses.dns]
            dhcp.mtu = UInt16(clamping: mtu)
            try await stack.serveDHCP(dhcp)
            let icmp = try await stack.attachNAT(nat, dns: disableDNS ? nil : dns)
            if icmp == nil { logger.notice("ping to outside addresses is disabled (no raw socket, no ICMP datagram socket); the gateway answers ping") }
            if configure {
                var interface = NamespaceInterface(device: tapName, mtu: mtu, address: (addresses.guest, addresses.subnet.prefixLength), gateway: addresses.gateway)
                interface.macAddress = macAddress.flatMap { MACAddress($0) }
                try interface.apply(namespace: paths.net, userNamespace: paths.user)
            }
            if let apiSocket {
                apiServer = try await SlirpAPIServer.start(
                    path: apiSocket, stack: stack, defaultGuest: addresses.guest, ipv6: enableIPv6, logger: logger)
            }
            if enableSandbox || enableSeccomp {
                try Confinement.confine(sandbox: enableSandbox, seccomp: enableSeccomp, keep: Confinement.keptFiles, logger: logger)
            }
        } catch {
            logger.error("cannot set up \(tapName): \(error)")
            await stack.shutdown()
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }
        supervisor.signalReady(logger: logger)
        logger.info("serving \(tapName) in \(paths.net) as \(addresses.gateway) on \(addresses.subnet), MTU \(mtu)")

        let ended = StopReason()
        supervisor.watchExit(ended)
        ended.watch(stack)
        let reason = await waitForStop(signals, or: ended)
        logger.info("stopping: \(reason)")
        apiServer?.close()
        await stack.shutdown()
        try? await group.shutdownGracefully()
    }
}

#endif  // os(Linux)
