#if os(Linux)
import CVPNKitLinux
#endif
import Logging
import VPNKitNAT

import VPNKitServices
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every NAT connection and every UDP flow holds a host socket, so `--max-connections 4096` and
/// `--max-udp-flows 1024` need about 5,200 descriptors. Many systems start a process with a soft limit
/// of 1,024, and then the daemon would refuse connections long before its own limits, with "Too many
/// open files" (vpnkit's old trouble). At start the daemon raises its soft limit to what its limits
/// need, as far as the hard limit allows, and says so; when the hard limit is too low it says what to
/// change. Child processes (a command after `--`) inherit the raised soft limit.
enum OpenFileLimit {
    /// Descriptors beyond the flows and the DNS forwarder: the link, the event loop, listeners,
    /// the stats socket, a capture file.
    static let reserve = 128

    /// What `--max-connections`, `--max-udp-flows`, the published ports and the DNS forwarder
    /// (a socket per pending query, its upstream TCP connections: `DNSServiceConfiguration.maximumHostDescriptors`) need.
    static func needed(maxConnections: Int, maxUDPFlows: Int, published: Int, dns: Int = DNSServiceConfiguration().maximumHostDescriptors) -> Int {
        maxConnections + maxUDPFlows + published + dns + reserve
    }

    /// Below this the daemon does not start: its event loop, link, resolver and listeners alone need
    /// a few dozen descriptors (under about 13 SwiftNIO's event loop setup traps instead of failing),
    /// and it could not hold a single connection.
    static let minimum = 64

    /// Raises the soft limit towards `needed`. Throws when even the raised limit is below `minimum`.
    static func apply(needed: Int, maxConnections: Int, maxUDPFlows: Int, logger: Logger) throws {
        var soft: UInt = 0
        var hard: UInt = 0
        var before: UInt = 0
        guard raise(to: UInt(max(needed, minimum)), before: &before, soft: &soft, hard: &hard) == 0 else {
            logger.notice("cannot read or raise the open-file limit: errno \(errno)")
            return
        }
        if soft < UInt(minimum) {
            throw OpenFileLimitError.belowMinimum(soft: soft, hard: hard)
        }
        if soft < UInt(needed) {
            logger.notice(
                "the open-file limit is \(soft) (hard \(hard)): --max-connections \(maxConnections) and --max-udp-flows \(maxUDPFlows) need about \(needed); connections past the limit will be refused. Raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower those limits")
        } else if soft > before {
            logger.info("open-file limit raised from \(before) to \(soft) for --max-connections \(maxConnections) and --max-udp-flows \(maxUDPFlows)")
        }
    }
}

extension OpenFileLimit {
    /// RLIMIT_NOFILE: raises the soft limit to `needed` when it is lower, as far as the hard limit
    /// allows; `before` gets the soft limit from before, `soft` and `hard` the limits afterwards.
    /// Returns 0, or -1 with errno set.
    static func raise(to needed: UInt, before: inout UInt, soft: inout UInt, hard: inout UInt) -> Int32 {
        #if os(Linux)
        return vpnkit_raise_open_files(needed, &before, &soft, &hard)
        #else
        var limit = rlimit()
        guard getrlimit(RLIMIT_NOFILE, &limit) == 0 else { return -1 }
        before = UInt(limit.rlim_cur)
        soft = UInt(limit.rlim_cur)
        hard = UInt(limit.rlim_max)
        // RLIM_INFINITY is the largest rlim_t, so the comparisons need no case of their own.
        let wanted = min(rlim_t(needed), limit.rlim_max)
        if wanted > limit.rlim_cur {
            limit.rlim_cur = wanted
            guard setrlimit(RLIMIT_NOFILE, &limit) == 0 else { return -1 }
            soft = UInt(wanted)
        }
        return 0
        #endif
    }
}

/// The open-file limit is too low for the daemon to start.
enum OpenFileLimitError: Error, CustomStringConvertible {
    case belowMinimum(soft: UInt, hard: UInt)

    var description: String {
        switch self {
        case .belowMinimum(let soft, let hard):
            return "the open-file limit is \(soft) (hard \(hard)); vpnkit needs at least \(OpenFileLimit.minimum). Raise it (ulimit -n, LimitNOFILE=)"
        }
    }
}
