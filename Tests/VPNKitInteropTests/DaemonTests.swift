import Foundation
import VPNKitTestSupport
import Testing
import VPNKitDecode

/// The built `vpnkit` binary, beside the test bundle.
func vpnkitBinary() -> String {
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<3 where !FileManager.default.fileExists(atPath: directory.appendingPathComponent("vpnkit").path) {
        directory = directory.deletingLastPathComponent()
    }
    return directory.appendingPathComponent("vpnkit").path
}

/// `vpnkit run` as a child process on a persistent tap0 in a fresh namespace.
final class Daemon {
    let namespace: TestNamespace
    let process = Process()
    let stderr = Pipe()
    let errorOutput = LockedData()
    let reader = DispatchGroup()

    /// `address`: the guest's static address on tap0, or nil to leave it for DHCP.
    /// `hostNamespace`: run the daemon inside this namespace (its "host" side), not the test's own.
    init(label: String, arguments: [String], address: String? = "192.168.65.3/24", hostNamespace: String? = nil) throws {
        namespace = try TestNamespace(label)
        try namespace.ip("tuntap", "add", "dev", "tap0", "mode", "tap")
        if let address { try namespace.ip("addr", "add", address, "dev", "tap0") }
        try namespace.ip("link", "set", "tap0", "up")
        let daemonArguments = ["run", "--netns", namespace.name, "--tap", "tap0"] + arguments
        if let hostNamespace {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", hostNamespace, vpnkitBinary()] + daemonArguments
        } else {
            process.executableURL = URL(fileURLWithPath: vpnkitBinary())
            process.arguments = daemonArguments
        }
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        reader.enter()
        let handle = stderr.fileHandleForReading
        let sink = errorOutput
        let group = reader
        DispatchQueue.global().async {
            sink.set(readAll(handle))
            group.leave()
        }
        // Ready when the kernel sees the carrier (the daemon attached to the tap).
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            let link = try namespace.ip("link", "show", "tap0")
            if !link.output.contains("NO-CARRIER") { return }
            guard process.isRunning else { break }
            usleep(20_000)
        }
        throw NamespaceError(message: "vpnkit run did not attach to tap0")
    }

    /// A test that failed before `stop` leaves no daemon behind.
    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Sends `signal` and waits for the exit; returns the status and what it printed to stderr.
    func stop(signal: Int32 = SIGTERM) -> (status: Int32, stderr: String) {
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        reader.wait()
        return (process.terminationStatus, String(decoding: errorOutput.get(), as: UTF8.self))
    }
}

@Suite("vpnkit run against the kernel", .serialized, .enabled(if: runsHere(canUseNamespaces), namespaceSkipReason), .requires(canUseNamespaces, namespaceSkipReason))
struct DaemonTests {
    @Test("answers ping, echoes UDP, writes a capture, stops cleanly on SIGTERM with its counters")
    func daemon() throws {
        let capture = FileManager.default.temporaryDirectory.appendingPathComponent("vpnkit-run-\(getpid()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: capture) }
        let daemon = try Daemon(label: "run", arguments: ["--pcap", capture, "--udp-echo", "7", "--receive-steering"])
        // Asked to, the daemon spreads the guest's receive work over every CPU it may use. It does so
        // just after attaching (which is when the carrier Daemon waits for comes up): wait for it.
        let (cpuMask, cpus) = try allowedCPUs()
        let expected = cpus >= 2 ? cpuMask : defaultRPSMask()
        var mask = try tapRPSMask(daemon.namespace)
        let deadline = Date().addingTimeInterval(10)
        while mask != expected && Date() < deadline {
            usleep(20_000)
            mask = try tapRPSMask(daemon.namespace)
        }
        #expect(mask == expected)
        let ping = try daemon.namespace.exec(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "4000", "192.168.65.1"], timeout: 30)
        #expect(pingSummary(ping.output)?.received == 3, "\(ping.output) \(ping.error)")
        let udp = try daemon.namespace.exec(
            ["python3", "-c", "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(b'x'*3000, ('192.168.65.1', 7)); print(len(s.recv(9000)))"],
            timeout: 30)
        #expect(udp.output.trimmingCharacters(in: .whitespacesAndNewlines) == "3000", "\(udp.error)")
        let (status, stderr) = daemon.stop()
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("stopping: SIGTERM"))
        #expect(stderr.contains("icmp_echo_replies_sent=3"), "\(stderr)")
        #expect(stderr.contains("udp_delivered=1"), "\(stderr)")

        // The capture holds the guest's requests and our replies, decodable by our own decoder.
        var decoder = try CaptureDecoder(path: capture)
        var requests = 0, replies = 0, fragments = 0
        while let frame = decoder.next() {
            guard let ip = frame.ipv4, ip.header.protocol.rawValue == 1 else { continue }
            if ip.header.moreFragments || ip.header.fragmentOffset > 0 { fragments += 1 }
            // 4000-byte pings are fragmented: count each datagram by its first fragment.
            guard ip.header.fragmentOffset == 0 else { continue }
            if ip.header.source.description == "192.168.65.3" { requests += 1 }
            if ip.header.source.description == "192.168.65.1" { replies += 1 }
        }
        #expect(requests == 3 && replies == 3)
        #expect(fragments >= 3 * 2 * 2)
    }

    @Test("SIGINT stops it too; bad arguments fail with a message")
    func signalsAndArguments() throws {
        let daemon = try Daemon(label: "sigint", arguments: [])
        #expect(try tapRPSMask(daemon.namespace) == defaultRPSMask(), "without --receive-steering the device is left alone")
        let (status, stderr) = daemon.stop(signal: SIGINT)
        #expect(status == 0)
        #expect(stderr.contains("stopping: SIGINT"))

        let bad = try run(vpnkitBinary(), ["run", "--netns", "x"])
        #expect(bad.status != 0)
        #expect(bad.error.contains("--tap"))
        let mtu = try run(vpnkitBinary(), ["run", "--netns", "x", "--tap", "t", "--mtu", "70000"])
        #expect(mtu.status != 0 && mtu.error.contains("--mtu"))
        let missing = try run(vpnkitBinary(), ["run", "--netns", "vk-does-not-exist-\(getpid())", "--tap", "tap0"])
        #expect(missing.status == 1)
        #expect(missing.error.contains("cannot open the guest link"), "\(missing.error)")
    }

    @Test("faults on the guest link: ping loses some, not all, and the counters say why")
    func faults() throws {
        let daemon = try Daemon(label: "faults", arguments: ["--fault-drop", "0.3", "--fault-seed", "5"])
        // The guest knows the gateway's MAC: its ARP gives up after three lost tries, which at 30 %
        // loss each way would make the run hinge on the seed rather than on the stack.
        try daemon.namespace.ip("neigh", "replace", "192.168.65.1", "lladdr", "5a:94:ef:e4:0c:ee", "dev", "tap0", "nud", "permanent")
        let ping = try daemon.namespace.exec(["ping", "-c", "30", "-i", "0.2", "-W", "1", "192.168.65.1"], timeout: 60)
        let summary = try #require(pingSummary(ping.output))
        #expect(summary.transmitted == 30)
        #expect(summary.received > 5 && summary.received < 30, "\(ping.output)")
        let (status, stderr) = daemon.stop()
        #expect(status == 0)
        #expect(stderr.contains("faults_to_guest: passed="), "\(stderr)")
        print("fault run: \(summary.received)/30 answered\n\(stderr)")
    }
}

/// Data written by one thread and read by another.
final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ value: Data) { lock.lock(); data = value; lock.unlock() }
    func get() -> Data { lock.lock(); defer { lock.unlock() }; return data }
}
