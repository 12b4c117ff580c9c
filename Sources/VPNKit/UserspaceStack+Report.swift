import NIOCore
import VPNKitBase
import VPNKitDHCP
public import VPNKitNAT
import VPNKitRuntime
import VPNKitServices
import VPNKitStack
import VPNKitTransport

/// Every counter and gauge of a stack and its attached services, each named once, in groups
/// (`stack`, `link`, `nat`, `dns`, `dhcp`, `switch`, `faults_to_guest`, `faults_from_guest`).
/// The `vpnkit` command's exit summary, its stats socket (JSON and Prometheus text) and
/// ``UserspaceStack/exportMetrics(every:labelPrefix:dimensions:factory:)`` all print these names:
/// a counter is `GROUP_NAME` everywhere (`nat_tcp_connects_started`).
public struct StackReport: Sendable {
    /// One named value.
    public struct Value: Sendable, Hashable {
        /// snake_case, unique within its group.
        public var name: String
        /// The count or level.
        public var value: UInt64
    }

    /// The values of one part of the stack.
    public struct Group: Sendable, Hashable {
        /// snake_case: `stack`, `link`, `nat`…
        public var name: String
        /// Monotonic counts (they only grow, wrapping at 2⁶⁴).
        public var counters: [Value]
        /// Levels that go up and down (open flows, leases).
        public var gauges: [Value]
    }

    /// The groups, in a fixed order; a group whose part is not attached is absent.
    public var groups: [Group]
    /// The NAT's flows, when a NAT is attached.
    public var flows: [NATFlowSnapshot]
    /// The published ports' host listeners, each with the address and port it is bound to (a port
    /// without a host address once per loopback), when a NAT is attached.
    public var published: [PublishedPort] = []

    /// The group called `name`, if present.
    public subscript(group name: String) -> Group? { groups.first { $0.name == name } }

    /// Every counter and gauge as `GROUP_NAME` and its value, counters first.
    public var flattened: [(name: String, value: UInt64, isGauge: Bool)] {
        groups.flatMap { group in
            group.counters.map { ("\(group.name)_\($0.name)", $0.value, false) }
                + group.gauges.map { ("\(group.name)_\($0.name)", $0.value, true) }
        }
    }

    /// One line per group, `group: name=value …`, zero counters left out (the exit summary).
    public var summary: String {
        groups.map { group in
            let values = (group.gauges + group.counters.filter { $0.value != 0 }).map { "\($0.name)=\($0.value)" }
            return "\(group.name): " + values.joined(separator: " ")
        }.joined(separator: "\n")
    }
}

extension StackReport.Value {
    static func fields(of counters: Any, prefix: String = "") -> [StackReport.Value] {
        CounterNames.fields(of: counters).map { .init(name: prefix + $0.name, value: $0.value) }
    }
}

extension UserspaceStack.State {
    /// Reads every counter now. On the loop.
    func report(now: NIODeadline) -> StackReport {
        typealias Value = StackReport.Value
        var groups: [StackReport.Group] = []
        let stack = driver.stack
        groups.append(.init(
            name: "stack", counters: stack.statistics.all.map { Value(name: $0.name, value: $0.value) },
            gauges: [Value(name: "tcp_connections", value: UInt64(stack.tcpConnectionCount))]))
        let linkStatistics = driver.transport.statistics
        groups.append(.init(
            name: "link",
            counters: [
                Value(name: "frames_received", value: linkStatistics.framesReceived), Value(name: "bytes_received", value: linkStatistics.bytesReceived),
                Value(name: "frames_sent", value: linkStatistics.framesSent), Value(name: "bytes_sent", value: linkStatistics.bytesSent),
                Value(name: "send_drops", value: linkStatistics.sendDrops), Value(name: "receive_errors", value: linkStatistics.receiveErrors),
                Value(name: "frames_captured", value: capture.framesCaptured),
            ] + tapCounters,
            gauges: []))
        if let nat {
            groups.append(.init(
                name: "nat", counters: Value.fields(of: nat.counters),
                gauges: [Value(name: "tcp_flows", value: UInt64(nat.openTCPFlows)), Value(name: "udp_flows", value: UInt64(nat.openUDPFlows))]))
        }
        if let dns {
            groups.append(.init(
                name: "dns", counters: Value.fields(of: dns.counters) + Value.fields(of: dns.upstreamCounters, prefix: "upstream_"), gauges: []))
        }
        if let dhcpServer {
            let leases = dhcpServer.leases(now: now)
            groups.append(.init(
                name: "dhcp", counters: Value.fields(of: dhcpServer.counters),
                gauges: [
                    Value(name: "leases", value: UInt64(leases.count)),
                    Value(name: "bound", value: UInt64(leases.filter { $0.state == .bound }.count)),
                ]))
        }
        if let dhcpv6Server {
            groups.append(.init(name: "dhcpv6", counters: Value.fields(of: dhcpv6Server.counters), gauges: []))
        }
        if let guestSwitch = link.guestSwitch {
            groups.append(.init(
                name: "switch", counters: Value.fields(of: guestSwitch.counters),
                gauges: [Value(name: "ports", value: UInt64(guestSwitch.portCount)), Value(name: "macs", value: UInt64(guestSwitch.addressCount))]))
        }
        if let faulty = faults {
            groups.append(.init(name: "faults_to_guest", counters: Value.fields(of: faulty.counters.toGuest), gauges: []))
            groups.append(.init(name: "faults_from_guest", counters: Value.fields(of: faulty.counters.fromGuest), gauges: []))
        }
        return StackReport(groups: groups, flows: nat?.flows(now: now) ?? [], published: nat?.publishedPorts ?? [])
    }
}

extension UserspaceStack.State {
    /// The TAP device's own counters, in the link group (none for other links).
    private var tapCounters: [StackReport.Value] {
        #if os(Linux)
        guard let tap = link.tap else { return [] }
        return [
            .init(name: "tap_checksums_completed", value: tap.checksumsCompleted),
            .init(name: "tap_oversized_frames_received", value: tap.oversizedFramesReceived),
            .init(name: "tap_segmentation_offload_frames_sent", value: tap.segmentationOffloadFramesSent),
            .init(name: "tap_write_would_block", value: tap.writeWouldBlock),
            .init(name: "tap_write_errors", value: tap.writeErrors),
        ]
        #else
        return []
        #endif
    }
}

extension UserspaceStack {
    /// Every counter and gauge of the stack and its services, read at one instant on the loop.
    public func report() async throws -> StackReport {
        try await onLoop { _, state in state.report(now: .now()) }
    }

    /// The same, for code already on the stack's event loop (the daemon's stats socket). Traps off
    /// the loop.
    package func reportOnLoop() -> StackReport {
        state.value.report(now: .now())
    }

    /// DHCP leases, for code on the loop (the daemon's exit summary).
    package func dhcpLeasesOnLoop() -> [DHCPLease] {
        state.value.dhcpServer?.leases(now: .now()) ?? []
    }
}
