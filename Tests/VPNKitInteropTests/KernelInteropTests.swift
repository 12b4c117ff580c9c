import Foundation
import NIOCore
import NIOPosix
import Testing
import VPNKitBase
import VPNKitIPv4
import VPNKitStack
import VPNKitTransport
import VPNKitTestSupport
import VPNKitRuntime

/// The stack in this process on a TAP device inside a fresh namespace, the namespace's kernel at
/// 192.168.65.3/24 opposite it.
final class InProcessGuestLink {
    let namespace: TestNamespace
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let driver: NIOLoopBound<StackDriver>
    var loop: any EventLoop { driver.eventLoop }

    init(
        label: String, mtu: Int = 1500, udpEchoPort: UInt16? = 7, offloads: Bool = false, receiveSteering: Bool = false, diagnostics: Bool = false
    ) throws {
        namespace = try TestNamespace(label)
        let loop = group.next()
        let transport = try TAPTransport.open(
            namespace: namespace.name, device: "tap0", mtu: mtu, offloads: offloads, receiveSteering: receiveSteering, on: loop
        ).wait()
        try namespace.ip("link", "set", "tap0", "mtu", "\(mtu)")
        try namespace.ip("addr", "add", "192.168.65.3/24", "dev", "tap0")
        try namespace.ip("link", "set", "tap0", "up")
        driver = try loop.submit {
            let driver = StackDriver(stack: NetworkStack(configuration: StackConfiguration(mtu: mtu)), transport: transport.value, eventLoop: loop)
            driver.start()
            if let udpEchoPort {
                let socket = try driver.stack.bindUDP(port: udpEchoPort) { [unowned driver] message in
                    driver.perform { stack, now in
                        try? stack.sendUDP(message.payload, from: message.destination, port: message.destinationPort, to: message.source, port: message.sourcePort, now: now)
                    }
                }
                driver.keep(socket)
            }
            if diagnostics { driver.keep(try DiagnosticServices(stack: driver.stack)) }
            return NIOLoopBound(driver, eventLoop: loop)
        }.wait()
    }

    func counters() throws -> StackCounters {
        let driver = self.driver
        return try loop.submit { driver.value.stack.statistics }.wait()
    }

    /// The TAP device's counters: every frame, oversized frames received, frames sent for the guest
    /// to segment.
    func linkStatistics() throws -> (TransportStatistics, oversized: UInt64, segmented: UInt64) {
        let driver = self.driver
        return try loop.submit {
            let tap = driver.value.transport as! TAPTransport
            return (tap.statistics, tap.oversizedFramesReceived, tap.segmentationOffloadFramesSent)
        }.wait()
    }

    func shutdown() {
        let driver = self.driver
        try? loop.submit { driver.value.stop() }.wait()
        try? group.syncShutdownGracefully()
    }
}

/// The CPUs this process may run on, as the kernel prints a CPU bitmap (hex words, commas), with the
/// commas and leading zeros taken out so two bitmaps compare as strings; and how many there are.
func allowedCPUs() throws -> (mask: String, count: Int) {
    let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
    let line = status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed:") } ?? ""
    let mask = normalizedCPUMask(String(line.dropFirst("Cpus_allowed:".count)))
    let count = mask.reduce(0) { $0 + (Int(String($1), radix: 16)?.nonzeroBitCount ?? 0) }
    return (mask, count)
}

/// A CPU bitmap without commas, whitespace or leading zeros ("0" when empty).
func normalizedCPUMask(_ text: String) -> String {
    let digits = text.filter { $0.isHexDigit }.drop { $0 == "0" }
    return digits.isEmpty ? "0" : String(digits)
}

/// The mask a new device starts with (net.core.rps_default_mask; 0 unless the host set one).
func defaultRPSMask() -> String {
    normalizedCPUMask((try? String(contentsOfFile: "/proc/sys/net/core/rps_default_mask", encoding: .utf8)) ?? "0")
}

/// The rps_cpus mask of tap0's first receive queue, as the namespace's own sysfs shows it. (On a
/// host with isolated CPUs the kernel keeps only its housekeeping CPUs of a mask written there; these
/// machines have none.)
func tapRPSMask(_ namespace: TestNamespace) throws -> String {
    let result = try namespace.exec(["cat", "/sys/class/net/tap0/queues/rx-0/rps_cpus"])
    guard result.status == 0 else { throw NamespaceError(message: "cat rps_cpus: \(result.error)") }
    return normalizedCPUMask(result.output)
}

func pingSummary(_ output: String) -> (transmitted: Int, received: Int)? {
    guard let line = output.split(separator: "\n").first(where: { $0.contains("packets transmitted") }) else { return nil }
    let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
    guard numbers.count >= 2 else { return nil }
    return (numbers[0], numbers[1])
}

@Suite("The Linux kernel as the judge", .serialized, .enabled(if: runsHere(canUseNamespaces), namespaceSkipReason), .requires(canUseNamespaces, namespaceSkipReason))
struct KernelInteropTests {
    @Test("TAP read buffers are recycled, but a frame still held keeps its bytes: thousands of datagrams held, none changed")
    func heldFramesSurviveRecycling() throws {
        let namespace = try TestNamespace("recycle")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let tap = try TAPTransport.open(namespace: namespace.name, device: "tap0", mtu: 1500, on: loop).wait()
        defer { try? loop.submit { tap.value.close() }.wait() }
        try namespace.ip("addr", "add", "192.168.65.3/24", "dev", "tap0")
        try namespace.ip("link", "set", "tap0", "up")
        // No stack answers ARP: a static neighbour lets the kernel send straight away.
        try namespace.ip("neigh", "add", "192.168.65.1", "lladdr", "02:00:00:00:00:01", "dev", "tap0")
        final class Held: @unchecked Sendable {  // touched on the loop only
            var frames: [ByteBuffer] = []
            var copies: [[UInt8]] = []
        }
        let held = Held()
        try loop.submit {
            tap.value.onFrame = { frame in
                held.frames.append(frame)
                held.copies.append(Array(frame.readableBytesView))
                // A slow consumer, so frames queue on the device and most are read in the drain
                // loop (the path that reads into recycled buffers), not one per wakeup.
                usleep(100)
            }
        }.wait()
        let script = """
            import socket, time
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for i in range(3000):
                s.sendto(b"%08d" % i * 100, ("192.168.65.1", 9))
                if i % 100 == 99: time.sleep(0.01)
            """
        let result = try namespace.exec(["python3", "-c", script], timeout: 60)
        #expect(result.status == 0, "\(result.output) \(result.error)")
        // Let the last frames arrive, then compare every frame held with its bytes at delivery.
        var count = 0
        for _ in 0..<50 {
            count = try loop.submit { held.frames.filter { $0.readableBytes > 800 }.count }.wait()
            if count >= 3000 { break }
            usleep(100_000)
        }
        // The kernel may drop some when its queue to the device overflows; what matters is that far
        // more arrived than the ring holds (128 buffers at this MTU), so buffers were read into again.
        #expect(count >= 1000, "\(count) datagram frames arrived")
        let changed = try loop.submit { zip(held.frames, held.copies).filter { Array($0.0.readableBytesView) != $0.1 }.count }.wait()
        #expect(changed == 0, "\(changed) held frames changed after later reads")
        try loop.submit { tap.value.onFrame = nil }.wait()
    }

    @Test("receive steering: the TAP's rps_cpus gets every CPU we may use, our own mounts are untouched, and the link works; without it the device is left alone")
    func receiveSteering() throws {
        let (mask, cpus) = try allowedCPUs()
        // Other tests add namespaces (nsfs mounts) meanwhile: compare our sysfs mounts only.
        func sysfsMounts() throws -> [Substring] {
            (readProcFile("/proc/self/mountinfo") ?? "").split(separator: "\n").filter { $0.contains(" - sysfs ") }
        }
        let mountsBefore = try sysfsMounts()
        let link = try InProcessGuestLink(label: "rps", receiveSteering: true)
        defer { link.shutdown() }
        let driver = link.driver
        let steering = try link.loop.submit { (driver.value.transport as! TAPTransport).receiveSteering }.wait()
        if cpus >= 2 {
            #expect(steering == .spread(cpus: cpus))
            #expect(try tapRPSMask(link.namespace) == mask)
        } else {
            #expect(steering == .singleCPU)
            #expect(try tapRPSMask(link.namespace) == defaultRPSMask())
        }
        // The sysfs mount was made in a thread's own mount namespace, which ended with the thread.
        #expect(try sysfsMounts() == mountsBefore)
        let ping = try link.namespace.exec(["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.65.1"], timeout: 30)
        #expect(pingSummary(ping.output)?.received == 3, "\(ping.output) \(ping.error)")

        let plain = try InProcessGuestLink(label: "norps")
        defer { plain.shutdown() }
        let plainDriver = plain.driver
        #expect(try plain.loop.submit { (plainDriver.value.transport as! TAPTransport).receiveSteering }.wait() == .notRequested)
        #expect(try tapRPSMask(plain.namespace) == defaultRPSMask())
    }

    @Test("ping the gateway: default size, 4000 and 30000 bytes (fragments both ways); the kernel's ARP entry is REACHABLE")
    func ping() throws {
        let link = try InProcessGuestLink(label: "ping")
        defer { link.shutdown() }
        for size in [56, 4000, 30000] {
            let result = try link.namespace.exec(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "\(size)", "192.168.65.1"], timeout: 30)
            let summary = pingSummary(result.output)
            #expect(result.status == 0, "ping -s \(size): \(result.output) \(result.error)")
            #expect(summary?.received == 3, "ping -s \(size): \(result.output)")
        }
        let neighbour = try link.namespace.ip("neigh", "show", "192.168.65.1")
        #expect(neighbour.output.contains("5a:94:ef:e4:0c:ee"), "\(neighbour.output)")
        #expect(neighbour.output.contains("REACHABLE"), "\(neighbour.output)")
        let counters = try link.counters()
        #expect(counters[.icmpEchoRepliesSent] == 9)
        #expect(counters[.ipv4Reassembled] == 6)
        #expect(counters[.ipv4FragmentsSent] >= 6 * 3)
        #expect(counters[.arpRequestsAnswered] >= 1)
    }

    @Test("UDP: a datagram to the stack's echo comes back intact; a closed port gives ECONNREFUSED")
    func udp() throws {
        let link = try InProcessGuestLink(label: "udp")
        defer { link.shutdown() }
        let script = """
            import os, socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            s.connect(("192.168.65.1", 7))
            for size in (1, 512, 1472, 8000, 65000):
                data = os.urandom(size)
                s.send(data)
                back = s.recv(70000)
                assert back == data, f"echo of {size} bytes differs"
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.settimeout(3)
            c.connect(("192.168.65.1", 9))
            c.send(b"anyone?")
            try:
                c.recv(100)
                print("no error"); sys.exit(2)
            except ConnectionRefusedError:
                print("refused")
            """
        let result = try link.namespace.exec(["python3", "-c", script], timeout: 30)
        #expect(result.status == 0, "\(result.output) \(result.error)")
        #expect(result.output.contains("refused"))
        let counters = try link.counters()
        #expect(counters[.udpDelivered] == 5)
        #expect(counters[.udpPortUnreachable] == 1)
        #expect(counters[.icmpErrorsSent] == 1)
    }

    @Test(
        "offloads at MTU 1500: TCP echo and discard with the kernel, intact; segments larger than the MTU cross both ways only with the virtio-net header",
        arguments: [true, false])
    func offloads(enabled: Bool) throws {
        let link = try InProcessGuestLink(label: enabled ? "tso" : "notso", udpEchoPort: nil, offloads: enabled, diagnostics: true)
        defer { link.shutdown() }
        let echo = try link.namespace.exec(["python3", "-c", bulkScript, "echo", "\(16 << 20)"], timeout: 120)
        #expect(echo.status == 0, "\(echo.output) \(echo.error)")
        let discard = try link.namespace.exec(["python3", "-c", bulkScript, "discard", "\(64 << 20)"], timeout: 120)
        #expect(discard.status == 0, "\(discard.output) \(discard.error)")
        let counters = try link.counters()
        let (statistics, oversized, segmented) = try link.linkStatistics()
        let averageIn = Double(statistics.bytesReceived) / Double(max(1, statistics.framesReceived))
        let averageOut = Double(statistics.bytesSent) / Double(max(1, statistics.framesSent))
        print("offloads \(enabled): \(statistics); \(oversized) oversized in, \(segmented) segmented out; average frame in \(Int(averageIn)) B, out \(Int(averageOut)) B; \(discard.output)")
        #expect(counters[.tcpBadChecksum] == 0)
        #expect(counters[.transmitDrops] == 0)
        if enabled {
            // Bulk data crosses in frames above 1514 bytes each way: the kernel hands over segments it
            // did not cut, and takes ours to cut itself.
            #expect(oversized > 100, "\(statistics)")
            #expect(segmented > 100, "\(statistics)")
            #expect(averageIn > 4000, "\(statistics)")
        } else {
            #expect(oversized == 0 && segmented == 0)
            #expect(averageIn <= 1514 && averageOut <= 1514, "\(statistics)")
        }
    }

    @Test("MTU 65520 on the tap: a 65000-byte ping needs no fragments")
    func jumbo() throws {
        let link = try InProcessGuestLink(label: "jumbo", mtu: 65520)
        defer { link.shutdown() }
        let result = try link.namespace.exec(["ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", "65000", "192.168.65.1"], timeout: 30)
        #expect(pingSummary(result.output)?.received == 2, "\(result.output) \(result.error)")
        let counters = try link.counters()
        #expect(counters[.ipv4FragmentsReceived] == 0 && counters[.ipv4FragmentsSent] == 0)
    }
}
