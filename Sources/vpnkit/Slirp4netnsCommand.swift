// `vpnkit slirp4netns` (or this binary run under the name `slirp4netns`): slirp4netns 1.2's command
// line, so rootlesskit and Podman can use our stack with one flag. Its addresses are slirp4netns's,
// which those tools hard-code: 10.0.2.0/24 with the gateway (= the host's loopback) at .2, DNS at .3
// and the guest at .100; IPv6 fd00::/64 with ::2 and ::3. What we lack is refused, never ignored.

// Linux only: network namespaces and TAP devices (elsewhere the subcommand does not exist).
#if os(Linux)

import ArgumentParser
import Logging
import VPNKit

struct Slirp4netnsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slirp4netns",
        abstract: "User-mode networking for a network namespace, with slirp4netns 1.2's command line and API socket.",
        usage: "slirp4netns [OPTION]... PID|PATH [TAPNAME]",
        discussion: """
            Creates TAPNAME (default tap0) inside the network namespace of PID (or the namespace at \
            PATH with --netns-type=path), entering the user namespace that owns it, and serves it \
            with SwiftVPNKit's stack and NAT until SIGINT or SIGTERM, or until --exit-fd becomes \
            readable. Addresses as slirp4netns's: gateway 10.0.2.2 (the host's 127.0.0.1 unless \
            --disable-host-loopback), DNS 10.0.2.3, guest 10.0.2.100 (with --configure), and with \
            --enable-ipv6 fd00::2, fd00::3 and SLAAC addresses in fd00::/64.

            Run as `slirp4netns` through a symlink, or as `vpnkit slirp4netns`.
            """
    )

    @Flag(name: [.short, .customLong("configure")], help: "Bring up the interface: the guest address (10.0.2.100), the default route, the MTU, lo up.")
    var configure = false
    @Option(name: [.short, .customLong("exit-fd")], help: "Exit when this file descriptor becomes readable (or reaches end of file).")
    var exitFD: Int32?
    @Option(name: [.short, .customLong("ready-fd")], help: "Write \"1\" to this file descriptor (and close it) once the interface exists and the API socket listens.")
    var readyFD: Int32?
    @Option(name: [.short, .customLong("mtu")], help: "The MTU (68…65520; default 1500).")
    var mtu: Int = 1500
    @Flag(name: [.customShort("6"), .customLong("enable-ipv6")], help: "IPv6 on the link: router advertisements for fd00::/64, DNS on fd00::3, the host's ::1 as fd00::2.")
    var enableIPv6 = false
    @Option(name: [.short, .customLong("api-socket")], help: "Serve slirp4netns's API (add_hostfwd, list_hostfwd, remove_hostfwd) on this unix socket.")
    var apiSocket: String?
    @Option(name: .customLong("cidr"), help: "The network (default 10.0.2.0/24, at most /25): gateway at .2, DNS at .3, guest at .100.")
    var cidr: String = "10.0.2.0/24"
    @Flag(name: .customLong("disable-host-loopback"), help: "Connections to the gateway (10.0.2.2, fd00::2) do not reach the host's loopback: refused.")
    var disableHostLoopback = false
    @Option(name: .customLong("netns-type"), help: "How the namespace is named: pid (default) or path.")
    var netnsType: NetnsType = .pid
    @Option(name: .customLong("userns-path"), help: "The user namespace to enter before the network namespace (default with a PID: /proc/PID/ns/user).")
    var usernsPath: String?
    // Podman and rootlesskit pass --enable-sandbox and --enable-seccomp whenever --help lists them:
    // both work as root and unprivileged (Confinement.swift).
    @Flag(name: .customLong("enable-sandbox"), help: "Once set up, an empty read-only root (resolv.conf and hosts kept) in a mount namespace of our own, and capabilities dropped (CAP_NET_BIND_SERVICE kept).")
    var enableSandbox = false
    @Flag(name: .customLong("enable-seccomp"), help: "Once set up, refuse the system calls the daemon never needs (running programs, ptrace, mounts, namespaces, modules…).")
    var enableSeccomp = false
    @Option(name: .customLong("outbound-addr"), help: "The host IPv4 address (or an interface, by its address) the NAT's TCP connections and UDP flows leave from.")
    var outboundAddr: String?
    @Option(name: .customLong("outbound-addr6"), help: "The host IPv6 address (or an interface, by its address) the NAT's IPv6 connections and flows leave from.")
    var outboundAddr6: String?
    @Flag(name: .customLong("disable-dns"), help: "No DNS service on 10.0.2.3 (and fd00::3).")
    var disableDNS = false
    @Option(name: .customLong("macaddress"), help: "The interface's MAC address (with --configure).")
    var macAddress: String?
    @Flag(name: [.short, .customLong("version")], help: "Print the version and exit.")
    var version = false
    @Option(name: .customLong("io-engine"), help: "Where the data path runs (not a slirp4netns option): reactor (default), the daemon's own epoll loop; or nio, SwiftNIO's event loop.")
    var ioEngine: IOEngine = .reactor
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default notice).")
    var logLevel: String = "notice"

    @Argument(help: "The PID whose network namespace to serve, or its path with --netns-type=path.")
    var target: String?
    @Argument(help: "The TAP device to create in it.")
    var tapName: String = "tap0"

    enum NetnsType: String, ExpressibleByArgument, CaseIterable { case pid, path }

    /// The version line: slirp4netns's version whose command line this follows, and ours.
    static var versionText: String {
        "slirp4netns version 1.2.0 (compatible command line)\nvpnkit: \(VPNKitCommand.version) (SwiftVPNKit)\n"
    }

    func validate() throws {
        if version { return }
        guard let target else { throw ValidationError("PID|PATH is missing") }
        switch netnsType {
        case .pid: guard let pid = Int32(target), pid > 0 else { throw ValidationError("\(target) is not a PID (give --netns-type=path for a path)") }
        case .path: guard target.hasPrefix("/") else { throw ValidationError("--netns-type=path needs an absolute path, got \(target)") }
        }
        guard !tapName.isEmpty, tapName.utf8.count < 16, !tapName.contains("/") else { throw ValidationError("TAPNAME must be 1…15 bytes without /") }
        guard (68...65520).contains(mtu) else { throw ValidationError("--mtu must be within 68…65520") }
        guard let net = IPv4Subnet(cidr) else { throw ValidationError("--cidr must look like 10.0.2.0/24") }
        guard net.prefixLength <= 25 else { throw ValidationError("--cidr \(cidr) is too small: the guest is at .100 (/25 at most)") }
        // Features we do not have: a clear refusal rather than a silent difference.
        try OutboundAddress.validate(outboundAddr, outboundAddr6)
        if let macAddress {
            guard let mac = MACAddress(macAddress), mac.rawValue & 0x0100_0000_0000 == 0 else { throw ValidationError("--macaddress \(macAddress) is not a unicast MAC address") }
            guard configure else { throw ValidationError("--macaddress needs --configure") }
        }
        for fd in [exitFD, readyFD].compactMap({ $0 }) where fd < 0 { throw ValidationError("file descriptor \(fd) is negative") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
    }

    /// The slirp4netns addresses of `cidr`.
    struct Addresses {
        var subnet: IPv4Subnet
        var gateway: IPv4Address { subnet.address(at: 2)! }
        var dns: IPv4Address { subnet.address(at: 3)! }
        var guest: IPv4Address { subnet.address(at: 100)! }
        static let prefix6 = IPv6Address(0xFD00, 0, 0, 0, 0, 0, 0, 0)
        static let gateway6 = IPv6Address(0xFD00, 0, 0, 0, 0, 0, 0, 2)
        static let dns6 = IPv6Address(0xFD00, 0, 0, 0, 0, 0, 0, 3)
        static let linkLocal6 = IPv6Address(0xFE80, 0, 0, 0, 0, 0, 0, 2)
    }

    /// The namespace paths for the target: with a PID its /proc entries (and its user namespace
    /// unless --userns-path says otherwise), with a path that path.
    var namespacePaths: (net: String, user: String?) {
        let target = self.target ?? ""
        switch netnsType {
        case .pid: return ("/proc/\(target)/ns/net", usernsPath ?? "/proc/\(target)/ns/user")
        case .path: return (target, usernsPath)
        }
    }
}

#endif  // os(Linux)
