import Foundation
import NIOCore
import NIOPosix
import Testing
import VPNKitTestSupport
import VPNKitBase
import VPNKitDHCP
import VPNKitIPv4
import VPNKitStack
import VPNKitTransport
import VPNKitServices
import VPNKitRuntime

let dnsmasq = which("dnsmasq")

@Suite("Our DHCP client against dnsmasq", .serialized, .enabled(if: runsHere(canUseNamespaces && dnsmasq != nil), "skipped: needs root, network namespaces and dnsmasq (CI installs dnsmasq-base)"), .requires(canUseNamespaces && dnsmasq != nil, "skipped: needs root, network namespaces and dnsmasq (CI installs dnsmasq-base)"))
struct DHCPClientInteropTests {
    @Test("dnsmasq in a namespace serves our client over a TAP: the lease matches its configuration, and the kernel reaches us")
    func dnsmasqServesUs() throws {
        let namespace = try TestNamespace("dnsmasq")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let directory = try freshDirectory("vk-dnsmasq-\(getpid())")
        defer { try? FileManager.default.removeItem(at: directory) }

        // Our stack is the host on the far side of tap0; the namespace's kernel runs dnsmasq on it.
        let transport = try TAPTransport.open(namespace: namespace.name, device: "tap0", mtu: 1500, on: loop).wait()
        try namespace.ip("addr", "add", "10.77.0.1/24", "dev", "tap0")
        try namespace.ip("link", "set", "tap0", "up")
        // dnsmasq daemonizes (it closes every inherited descriptor, which Foundation's Process would
        // take for an exit); it is stopped with everything else in the namespace.
        let started = try run("/usr/sbin/ip", [
            "netns", "exec", namespace.name, dnsmasq!, "--conf-file=/dev/null", "--port=0",
            "--interface=tap0", "--bind-interfaces", "--dhcp-authoritative", "--no-ping",
            "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,120", "--dhcp-option=option:router,10.77.0.1",
            "--dhcp-option=option:dns-server,10.77.0.53", "--dhcp-option=option:domain-name,dnsmasq.test",
            "--dhcp-option=option:mtu,1400", "--dhcp-leasefile=\(directory.path)/leases", "--pid-file=\(directory.path)/pid",
            "--log-dhcp", "--log-facility=\(directory.path)/dnsmasq.log",
        ], timeout: 10)
        try #require(started.status == 0, "dnsmasq: \(started.error)")
        defer { namespace.killAll() }
        // Ready when it listens on port 67: a DISCOVER sent before that is lost, and the client's
        // next try comes 4 s later.
        for _ in 0..<100 {
            let listening = try namespace.exec(["ss", "-Hlun", "sport = :67"], timeout: 10)
            if !listening.output.isEmpty { break }
            usleep(50_000)
        }

        let clientMAC = MACAddress("02:00:00:00:77:01")!
        let lease: DHCPClientLease = try loop.submit {
            let stack = NetworkStack(configuration: .unconfigured(macAddress: clientMAC))
            let driver = StackDriver(stack: stack, transport: transport.value, eventLoop: loop)
            var configuration = DHCPClientConfiguration(hardwareAddress: clientMAC)
            configuration.hostName = "swiftvpnkit"
            let service = try DHCPClientService(stack: stack, configuration: configuration)
            driver.keep(service)
            driver.start()
            let bound = loop.makePromise(of: DHCPClientLease.self)
            service.onEvent = { event in if case .bound(let lease) = event { bound.succeed(lease) } }
            driver.perform { _, now in service.start(now: now) }
            // Generous: the client's retransmissions back off (4, 8, 16 s), and a loaded CI machine
            // once saw no lease within 20 s. dnsmasq's log says what it saw when this fails.
            let log = directory.path + "/dnsmasq.log"
            let timeout = loop.scheduleTask(in: .seconds(45)) {
                let seen = (try? String(contentsOfFile: log, encoding: .utf8)) ?? "(no dnsmasq log)"
                bound.fail(NamespaceError(message: "no lease from dnsmasq; its log:\n\(seen)"))
            }
            let boundDriver = NIOLoopBound(driver, eventLoop: loop)
            return bound.futureResult.always { _ in timeout.cancel() }.map { lease in
                // Keep the driver alive for the rest of the test.
                keepAlive.value = boundDriver
                return lease
            }
        }.flatMap { $0 }.wait()

        #expect((50...60).contains(lease.address.octets[3]) && lease.address.octets[0...2] == [10, 77, 0])
        #expect(lease.subnet == IPv4Subnet("10.77.0.0/24"))
        #expect(lease.routers == [IPv4Address(10, 77, 0, 1)])
        #expect(lease.dnsServers == [IPv4Address(10, 77, 0, 53)])
        #expect(lease.domainName == "dnsmasq.test")
        #expect(lease.mtu == 1400)
        #expect(lease.leaseTime == .seconds(120))
        #expect(lease.serverIdentifier == IPv4Address(10, 77, 0, 1))

        // The kernel's side reaches the address we took.
        let ping = try namespace.exec(["ping", "-c", "2", "-i", "0.2", "-W", "2", lease.address.description], timeout: 20)
        #expect(pingSummary(ping.output)?.received == 2, "\(ping.output) \(ping.error)")
        let leases = (try? String(contentsOfFile: directory.path + "/leases", encoding: .utf8)) ?? ""
        #expect(leases.contains("02:00:00:00:77:01") && leases.contains(lease.address.description) && leases.contains("swiftvpnkit"), "\(leases)")

        if let driver = keepAlive.value { try loop.submit { driver.value.stop() }.wait() }
        keepAlive.value = nil
    }
}

/// Holds the running driver between the event loop and the test (written and read under a lock).
let keepAlive = LockedBox<NIOLoopBound<StackDriver>?>(nil)

final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}
