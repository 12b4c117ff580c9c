public import CoreMetrics
public import NIOCore
import VPNKitDHCP
import VPNKitNAT
import VPNKitStack
import VPNKitTransport

extension UserspaceStack {
    /// Reports the stack's counters through swift-metrics every `interval`, and once more at
    /// shutdown, so whatever backend the application bootstrapped (Prometheus, StatsD, …) sees them
    /// without glue.
    ///
    /// Each counter of ``StackReport`` becomes a swift-metrics `Counter` named `PREFIX_GROUP_NAME`
    /// (for example `vpnkit_stack_frames_received`, `vpnkit_stack_ipv4_bad_checksum`,
    /// `vpnkit_link_frames_sent`, `vpnkit_nat_tcp_connects_started`, `vpnkit_dhcp_acks`,
    /// `vpnkit_dns_queries`), incremented by how much it grew since the last report; its gauges
    /// (`vpnkit_stack_tcp_connections`, `vpnkit_nat_tcp_flows`, `vpnkit_dhcp_leases`…) become
    /// `Gauge`s. The names are the ones the `vpnkit` command's stats socket shows. Every metric
    /// carries `dimensions`.
    ///
    /// - Parameters:
    ///   - interval: how often to report; the first report is made at once.
    ///   - labelPrefix: the start of every metric's label.
    ///   - dimensions: dimensions attached to every metric (`[("stack", "guest-1")]`, say).
    ///   - factory: the backend to report to; nil uses the one bootstrapped in `MetricsSystem` (the
    ///     usual choice; pass one to keep several stacks' metrics apart, or in tests).
    /// - Throws: ``UserspaceStackError/alreadyAttached(_:)`` when metrics are already exported.
    public func exportMetrics(
        every interval: TimeAmount = .seconds(5), labelPrefix: String = "vpnkit", dimensions: [(String, String)] = [],
        factory: (any MetricsFactory)? = nil
    ) async throws {
        let driver = self.driver
        let stateBox = self.state
        try await onLoop { _, state in
            guard state.metrics == nil else { throw UserspaceStackError.alreadyAttached("metrics export") }
            let exporter = StackMetricsExporter(prefix: labelPrefix, dimensions: dimensions, factory: factory ?? MetricsSystem.factory)
            state.metrics = exporter
            exporter.report(driver: driver.value, state: state)
            let bound = NIOLoopBound(exporter, eventLoop: driver.eventLoop)
            exporter.task = driver.value.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                bound.value.report(driver: driver.value, state: stateBox.value)
            }
        }
    }

    /// Reports the counters to swift-metrics now, without waiting for the next interval.
    /// - Throws: ``UserspaceStackError/notAttached(_:)`` when ``exportMetrics(every:labelPrefix:dimensions:factory:)``
    ///   was not called.
    public func reportMetrics() async throws {
        try await onLoop { driver, state in
            guard let exporter = state.metrics else { throw UserspaceStackError.notAttached("metrics export") }
            exporter.report(driver: driver, state: state)
        }
    }
}

/// Turns the stack's cumulative counters into swift-metrics increments. Confined to the event loop.
final class StackMetricsExporter {
    let prefix: String
    let dimensions: [(String, String)]
    let factory: any MetricsFactory
    var task: RepeatedTask?
    private var reported: [String: UInt64] = [:]
    private var counters: [String: CoreMetrics.Counter] = [:]
    private var gauges: [String: Gauge] = [:]
    private var stopped = false

    init(prefix: String, dimensions: [(String, String)], factory: any MetricsFactory) {
        self.prefix = prefix
        self.dimensions = dimensions
        self.factory = factory
    }

    func stop() {
        task?.cancel()
        task = nil
        stopped = true
    }

    func report(driver: StackDriver, state: UserspaceStack.State) {
        guard !stopped else { return }
        for value in state.report(now: .now()).flattened {
            if value.isGauge { gauge(value.name, Int(clamping: value.value)) } else { count(value.name, value.value) }
        }
    }

    private func count(_ name: String, _ value: UInt64) {
        // Every counter is registered at its first report, zero or not, so a backend lists it.
        let previous = reported[name]
        if let previous, value <= previous { return }
        reported[name] = value
        let counter: CoreMetrics.Counter
        if let existing = counters[name] {
            counter = existing
        } else {
            counter = CoreMetrics.Counter(label: "\(prefix)_\(name)", dimensions: dimensions, factory: factory)
            counters[name] = counter
        }
        let growth = value - (previous ?? 0)
        if growth > 0 { counter.increment(by: Int64(clamping: growth)) }
    }

    private func gauge(_ name: String, _ value: Int) {
        let gauge: Gauge
        if let existing = gauges[name] {
            gauge = existing
        } else {
            gauge = Gauge(label: "\(prefix)_\(name)", dimensions: dimensions, factory: factory)
            gauges[name] = gauge
        }
        gauge.record(value)
    }
}
