import NIOCore
import VPNKitBase
import VPNKitDHCP
import VPNKitNAT
import VPNKitStack
import VPNKitTransport

extension StackDriver {
    var nat: NAT? { attachments.lazy.compactMap { $0 as? NAT }.first }
    var dhcp: DHCPService? { attachments.lazy.compactMap { $0 as? DHCPService }.first }
    var dns: DNSService? { attachments.lazy.compactMap { $0 as? DNSService }.first }

    /// The switch the guests' connections attach to (`--socket` with qemu or vmnet), under any
    /// capture or fault wrapper.
    var guestSwitch: SwitchTransport? {
        var link: any FrameTransport = transport
        while true {
            if let found = link as? SwitchTransport { return found }
            if let faulty = link as? FaultInjectingTransport { link = faulty.inner; continue }
            if let capturing = link as? CapturingTransport { link = capturing.inner; continue }
            return nil
        }
    }

    /// The guest's address as the DHCP server last bound it (published ports connect there).
    func latestGuestAddress(now: NIODeadline) -> IPv4Address? {
        dhcp?.leases(now: now).filter { $0.state == .bound }.max(by: { $0.expires < $1.expires })?.address
    }

    /// Counters of every part, for the log line at exit.
    func summary(now: NIODeadline) -> String {
        let counters = stack.statistics.nonZero.map { "\($0.name)=\($0.value)" }.joined(separator: " ")
        var summary = "counters: \(counters)\nlink: \(transport.statistics)"
        if let service = dhcp {
            let c = service.counters
            summary += "\ndhcp: discovers=\(c.discovers) offers=\(c.offers) requests=\(c.requests) acks=\(c.acks) naks=\(c.naks) declines=\(c.declines) releases=\(c.releases) informs=\(c.informs) pool_exhausted=\(c.poolExhausted) malformed=\(c.malformed) ignored=\(c.ignored) refused_not_from_holder=\(c.refusedNotFromHolder)"
            for lease in service.leases(now: now) {
                summary += "\nlease: \(lease.address) \(lease.hardwareAddress) \(lease.state.rawValue)\(lease.hostName.map { " " + $0 } ?? "")"
            }
        }
        if let link = guestSwitch {
            let counters = namedCounters(link.counters).map { "\($0.name)=\($0.value)" }.joined(separator: " ")
            summary += "\nswitch: ports=\(link.portCount) macs=\(link.addressCount) \(counters)"
        }
        if let nat {
            let c = nat.counters
            summary += "\nnat: tcp_connects=\(c.tcpConnectsStarted) ok=\(c.tcpConnectsSucceeded) refused=\(c.tcpConnectsRefused) failed=\(c.tcpConnectsFailed) timed_out=\(c.tcpConnectsTimedOut) at_limit=\(c.tcpRefusedAtLimit) bytes_to_host=\(c.tcpBytesToHost) bytes_to_guest=\(c.tcpBytesToGuest) udp_flows=\(c.udpFlowsOpened) udp_to_host=\(c.udpDatagramsToHost) udp_to_guest=\(c.udpDatagramsToGuest) icmp_echo=\(c.icmpEchoRequests)/\(c.icmpEchoReplies)"
        }
        if let dns {
            let c = dns.counters
            summary += "\ndns: queries=\(c.queries) local=\(c.answeredLocally) forwarded=\(c.forwarded) timeouts=\(c.timeouts) servfail=\(c.servfail)"
        }
        if let faulty = transport as? FaultInjectingTransport {
            summary += "\nfaults to guest: \(faulty.counters.toGuest)\nfaults from guest: \(faulty.counters.fromGuest)"
        }
        return summary
    }
}

/// `IP[:PORT]`.
func parseEndpoint(_ text: String, defaultPort: UInt16) -> (address: IPv4Address, port: UInt16)? {
    let parts = text.split(separator: ":", maxSplits: 1)
    guard let first = parts.first, let address = IPv4Address(first) else { return nil }
    if parts.count == 2 {
        guard let port = UInt16(parts[1]), port != 0 else { return nil }
        return (address, port)
    }
    return (address, defaultPort)
}
