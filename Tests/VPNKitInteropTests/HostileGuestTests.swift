import Foundation
import Testing
import VPNKitTestSupport

/// The daemon's resources, read from /proc.
struct ProcessResources {
    let pid: Int32
    var openFiles: Int { ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count }
    /// Resident set size in KiB.
    var rssKiB: Int { statusKiB("VmRSS:") }
    /// The peak resident set size in KiB (VmHWM): what an attack made the daemon hold at its worst,
    /// not what is left once it is over.
    var peakRSSKiB: Int { statusKiB("VmHWM:") }

    private func statusKiB(_ field: String) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix(field) } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }
    /// Waits until at most `limit` files are open; returns the count seen last.
    func waitForOpenFiles(atMost limit: Int, seconds: Double) -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        var count = openFiles
        while count > limit, Date() < deadline {
            usleep(200_000)
            count = openFiles
        }
        return count
    }
}

/// The largest resident size the (debug) daemon may reach under any one attack: a bound on what a
/// guest can make the host spend.
let hostileRSSBoundKiB = 256 * 1024

/// A connection from the guest to the host made before an attack, checked after it.
final class HeldConnection {
    let process = Process()
    let input = Pipe()
    let output = Pipe()

    init(namespace: String, port: Int) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", namespace, "python3", "-c", hostileGuestScript, "hold", "192.168.65.2", String(port)]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        guard readLine() == "ready" else { throw NamespaceError(message: "the held connection did not start") }
    }

    private func readLine() -> String {
        var line = [UInt8]()
        var byte: UInt8 = 0
        while read(output.fileHandleForReading.fileDescriptor, &byte, 1) == 1, byte != 10 { line.append(byte) }
        return String(decoding: line, as: UTF8.self)
    }

    /// Sends and receives once more over the connection; true when the echo came back intact.
    func stillWorks() -> Bool {
        input.fileHandleForWriting.write(Data("go\n".utf8))
        let line = readLine()
        process.waitUntilExit()
        return line == "ok hold"
    }

    deinit { if process.isRunning { process.terminate() } }
}

/// An acceptor on the host's loopback that takes connections and closes them at once.
final class HostAcceptor {
    let process = Process()
    /// The acceptor exits when this closes, even if the test process dies first.
    let input = Pipe()
    let port: Int

    init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", """
            import os, socket, sys, threading
            threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0)); s.listen(4096); print(s.getsockname()[1], flush=True)
            while True:
                c, _ = s.accept(); c.close()
            """]
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = input
        try process.run()
        var line = [UInt8]()
        var byte: UInt8 = 0
        while read(output.fileHandleForReading.fileDescriptor, &byte, 1) == 1, byte != 10 { line.append(byte) }
        port = Int(String(decoding: line, as: UTF8.self)) ?? 0
    }

    deinit { process.terminate() }
}

@Suite("a hostile guest cannot crash the daemon, leak or starve others", .serialized, .enabled(if: runsHere(canRunNAT), natSkipReason), .requires(canRunNAT, natSkipReason))
struct HostileGuestTests {
    /// Starts a daemon with a guest that took a lease, a held connection to the host, and the
    /// baseline of open files; runs `attack`; then checks the held connection, the files and memory.
    func withAttack(
        _ label: String, extraArguments: [String] = [], settle: Double = 30, _ attack: (Daemon, ProcessResources) throws -> Void
    ) throws {
        let host = try HostServers()
        let daemon = try natDaemon(label, extraArguments)
        defer { _ = daemon.stop() }
        let resources = ProcessResources(pid: daemon.process.processIdentifier)
        _ = try daemon.namespace.exec(["ping", "-c", "1", "-W", "2", "192.168.65.1"], timeout: 10)  // the gateway's MAC in the ARP table
        let held = try HeldConnection(namespace: daemon.namespace.name, port: host.tcp)
        usleep(300_000)
        let baseline = resources.openFiles
        let rssBefore = resources.rssKiB
        try attack(daemon, resources)
        let peak = resources.peakRSSKiB
        let after = resources.waitForOpenFiles(atMost: baseline, seconds: settle)
        print("\(label): open files \(baseline) before, \(after) after; RSS \(rssBefore) KiB before, peak (VmHWM) \(peak) KiB")
        #expect(daemon.process.isRunning, "the daemon died")
        #expect(held.stillWorks(), "the connection made before the attack no longer works")
        #expect(after <= baseline, "open files did not return to the baseline (\(baseline)): \(after)")
        #expect(peak < hostileRSSBoundKiB, "peak RSS (VmHWM) \(peak) KiB exceeds the bound")
    }

    func attack(_ daemon: Daemon, _ arguments: String..., timeout: Double = 300) throws -> String {
        let result = try daemon.namespace.exec(["python3", "-c", hostileGuestScript] + arguments, timeout: timeout)
        let line = result.output.split(separator: "\n").first { $0.hasPrefix("ok ") }.map(String.init)
        guard let line else { throw NamespaceError(message: "\(arguments.first!) failed (\(result.status)): \(result.output) \(result.error)") }
        print(line)
        return line
    }

    @Test("100,000 SYNs with random ports and sequence numbers at the gateway, and 100,000 at the host alias")
    func synFlood() throws {
        let acceptor = try HostAcceptor()
        try withAttack("synflood") { daemon, resources in
            _ = try attack(daemon, "synflood", "192.168.65.1", "80", "100000")
            _ = try attack(daemon, "synflood", "192.168.65.2", String(acceptor.port), "100000")
        }
    }

    /// Heavy: about 50 s alone, many minutes beside the rest of the suite on two cores (where the
    /// scanner's own 15 s timeouts then fire). Run with VPNKIT_HEAVY_TESTS=1.
    @Test(
        "a connect scan of all 65,535 ports of the host alias, 1,000 in flight",
        .enabled(if: ProcessInfo.processInfo.environment["VPNKIT_HEAVY_TESTS"] == "1", "heavy: set VPNKIT_HEAVY_TESTS=1"))
    func connectScan() throws {
        try withAttack("scan") { daemon, _ in
            let line = try attack(daemon, "scan", "192.168.65.2", "1000", timeout: 600)
            // Most of the host's loopback ports are closed: each must come back refused, not hang.
            let refused = Int(line.split(separator: " ")[5]) ?? 0
            #expect(refused > 60_000, "\(line)")
        }
    }

    @Test("UDP from 10,000 source ports: flows capped at --max-udp-flows and expired")
    func udpFlood() throws {
        let host = try HostServers()
        try withAttack("udpflood", extraArguments: ["--max-udp-flows", "256", "--udp-idle-timeout", "3"]) { daemon, resources in
            let before = resources.openFiles
            _ = try attack(daemon, "udpflood", "192.168.65.2", String(host.udp), "10000")
            // While the flows live: never more host sockets than the cap.
            #expect(resources.openFiles <= before + 256 + 8)
        }
    }

    @Test("DHCP starvation: DISCOVER and REQUEST from 10,000 MAC addresses")
    func dhcpStarvation() throws {
        let stats = FileManager.default.temporaryDirectory.appendingPathComponent("vk-starve-\(getpid()).sock").path
        try withAttack("dhcpstarve", extraArguments: ["--stats", stats]) { daemon, _ in
            _ = try attack(daemon, "dhcpstarve", "10000")
            let json = try run(vpnkitBinary(), ["stats", stats, "--json"], timeout: 20)
            let object = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
            let leases = (object?["dhcp"] as? [String: Any])?["leases"] as? Int ?? -1
            // The pool (.3–.254) bounds the leases, however many clients ask.
            #expect(leases >= 1 && leases <= 252, "leases: \(leases)")
        }
    }

    @Test("1-byte segments through the NAT to a host listener that never reads, until the window closes: the daemon's peak memory stays within the per-connection bound, and another connection keeps working")
    func tinySegments() throws {
        // The daemon's host side in a namespace of its own whose kernel buffers are small, so that
        // the bytes queue in the daemon, not in the host kernel.
        let hostSide = try TestNamespace("tinyhost")
        let sysctl = try hostSide.exec(["sysctl", "-qw", "net.ipv4.tcp_rmem=4096 4096 4096", "net.ipv4.tcp_wmem=4096 4096 4096"])
        try #require(sysctl.status == 0, "sysctl: \(sysctl.error)")
        let servers = try LineProcess("/usr/sbin/ip", ["netns", "exec", hostSide.name, "python3", "-c", """
            import os, socket, sys, threading
            threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
            def listener():
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.bind(("127.0.0.1", 0)); s.listen(16); return s
            sink, echo = listener(), listener()
            def serve_echo(c):
                while True:
                    d = c.recv(65536)
                    if not d: return
                    c.sendall(d[5:] if d.startswith(b"echo\\n") else d)
            def accept_echo():
                while True:
                    c, _ = echo.accept(); threading.Thread(target=serve_echo, args=(c,), daemon=True).start()
            threading.Thread(target=accept_echo, daemon=True).start()
            print(sink.getsockname()[1], echo.getsockname()[1], flush=True)
            held = []
            while True:
                c, _ = sink.accept(); held.append(c)  # never read
            """])
        let ports = servers.readLine().split(separator: " ")
        defer { withExtendedLifetime(servers) {} }  // alive to the end of the test
        try #require(ports.count == 2, "the host servers did not start")
        let buffer = 64 * 1024
        let statsPath = FileManager.default.temporaryDirectory.appendingPathComponent("vk-tiny-\(getpid()).stats").path
        let daemon = try Daemon(label: "tiny", arguments: ["--tcp-buffer", String(buffer), "--stats", statsPath], hostNamespace: hostSide.name)
        defer { _ = daemon.stop() }
        let resources = ProcessResources(pid: daemon.process.processIdentifier)
        _ = try daemon.namespace.exec(["ping", "-c", "1", "-W", "2", "192.168.65.1"], timeout: 10)
        let held = try HeldConnection(namespace: daemon.namespace.name, port: Int(ports[1])!)
        usleep(300_000)
        let before = resources.peakRSSKiB
        let attack = try daemon.namespace.exec(["python3", "-c", hostileGuestScript, "tiny", "192.168.65.2", String(ports[0]), "120"], timeout: 180, input: "\n")
        let result = attack.output.split(separator: "\n").first { $0.hasPrefix("ok ") }.map(String.init) ?? ""
        let peak = resources.peakRSSKiB
        let stats = (try? run(vpnkitBinary(), ["stats", statsPath, "--json"], timeout: 20).output) ?? ""
        let nat = (try? JSONSerialization.jsonObject(with: Data(stats.utf8)) as? [String: Any])?["nat"] as? [String: Any] ?? [:]
        let toHost = nat["tcp_bytes_to_host"] as? Int ?? 0
        print("tiny: \(result); \(toHost) bytes written to the host socket; peak RSS (VmHWM) \(before) KiB before, \(peak) KiB after")
        #expect(result.hasPrefix("ok "), "\(attack.output) \(attack.error)")
        let words = result.split(separator: " ")
        let acknowledged = words.count > 5 ? Int(words[5]) ?? 0 : 0
        // The window closed with the receive buffer (its bytes, less 128 per piece held) and the
        // queue toward the host (1024 pieces at most) full: about the buffer's worth of 1-byte
        // segments was taken, each its own segment.
        #expect(acknowledged >= buffer * 3 / 4, "\(result)")
        #expect(words.count > 7 && words[7] == "0", "the window did not close: \(result)")
        // SECURITY.md's bound for this connection: 2 × the receive buffer, 2 × the send buffer and
        // 768 KiB toward the host, about 1.8 MiB here; 16 MiB leaves room for the allocator. Before
        // the bound, each 1-byte segment pinned a 2 KiB frame buffer (over 512 MiB here).
        #expect(peak - before < 16 * 1024, "peak RSS grew by \(peak - before) KiB")
        #expect(held.stillWorks(), "the connection made before the attack no longer works")
        #expect(daemon.process.isRunning)
    }

    @Test("50,000 malformed frames of 16 kinds, and 10,000 spoofed from outside addresses: dropped and counted")
    func malformedAndSpoofed() throws {
        let stats = FileManager.default.temporaryDirectory.appendingPathComponent("vk-malformed-\(getpid()).sock").path
        try withAttack("malformed", extraArguments: ["--stats", stats]) { daemon, _ in
            func counters() throws -> [String: Int] {
                let json = try run(vpnkitBinary(), ["stats", stats, "--json"], timeout: 20)
                let object = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
                return (object?["stack"] as? [String: Any] ?? [:]).compactMapValues { $0 as? Int }
            }
            let line = try attack(daemon, "malformed", "50000", "11")
            usleep(500_000)
            let afterMalformed = try counters()
            let sent = Int(line.split(separator: " ")[3]) ?? 0
            // Most frames reached the daemon (paced; on a loaded machine the TAP queue still drops
            // some), and each kind of damage was counted as such.
            #expect(afterMalformed["frames_received", default: 0] >= sent / 2, "\(sent) sent: \(afterMalformed)")
            for counter in ["ipv4_bad_checksum", "ipv4_malformed", "arp_malformed", "tcp_malformed", "tcp_bad_checksum", "udp_malformed",
                "ipv4_reassembly_overlap", "ipv4_reassembly_oversized", "ethernet_unsupported_type"] {
                #expect(afterMalformed[counter, default: 0] > 0, "\(counter) never counted: \(afterMalformed)")
            }
            _ = try attack(daemon, "spoof", "10000")
            usleep(500_000)
            let afterSpoof = try counters()
            func grew(_ name: String) -> Int { afterSpoof[name, default: 0] - afterMalformed[name, default: 0] }
            // Spoofed sources: the two thirds sent to forwarded addresses are dropped at the NAT's
            // door; answers to what was addressed to the gateway find no route back (nothing is
            // reflected to an outside address).
            // (About 6,700 of them when every frame arrives; a loaded machine's TAP queue drops some.)
            #expect(grew("forwarded_bad_source") >= 1_000, "\(afterSpoof)")
            #expect(grew("ipv4_no_route") > 0, "\(afterSpoof)")
            #expect(grew("forwarded_udp_datagrams") + grew("forwarded_tcp_requests") + grew("forwarded_icmp_echo_requests") == 0, "spoofed traffic was forwarded: \(afterSpoof)")
        }
    }
}
