import Foundation
import Testing
import VPNKitTestSupport
import VPNKitDecode

let bulkScript = #"""
import hashlib, os, socket, sys, threading, time
mode, size = sys.argv[1], int(sys.argv[2])
def snmp():
    lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Tcp:")]
    counters = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    ext = [l.split() for l in open("/proc/net/netstat") if l.startswith("TcpExt:")]
    counters.update(zip(ext[0][1:], map(int, ext[1][1:])))
    return counters
before = snmp()
if mode == "echo":
    data = os.urandom(1 << 20)
    s = socket.create_connection(("192.168.65.1", 7), timeout=60)
    got = hashlib.sha256(); n = [0]
    def reader():
        while n[0] < size:
            chunk = s.recv(1 << 20)
            if not chunk: break
            got.update(chunk); n[0] += len(chunk)
    t = threading.Thread(target=reader); t.start()
    sent = hashlib.sha256(); start = time.time()
    for i in range(size >> 20):
        s.sendall(data); sent.update(data)
    t.join(120)
    elapsed = time.time() - start
    assert n[0] == size, f"echoed {n[0]} of {size}"
    assert got.digest() == sent.digest(), "hash differs"
    s.close()
elif mode == "discard":
    data = os.urandom(1 << 20)
    s = socket.create_connection(("192.168.65.1", 9), timeout=60)
    start = time.time()
    for i in range(size >> 20): s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    elapsed = time.time() - start
    s.close()
elif mode == "short":
    start = time.time()
    for i in range(size):
        c = socket.create_connection(("192.168.65.1", 7), timeout=5)
        c.sendall(b"x"); assert c.recv(1) == b"x"; c.close()
    elapsed = time.time() - start
    try:
        t0 = time.time()
        socket.create_connection(("192.168.65.1", 9999), timeout=5)
        sys.exit("connected to a closed port")
    except ConnectionRefusedError:
        print(f"refused in {time.time() - t0:.3f}s")
after = snmp()
def delta(name): return after.get(name, 0) - before.get(name, 0)
# Tail-loss probes and retransmissions the kernel itself found spurious are timers firing while
# ACKs were late (a starved machine), not data the stack lost: they are counted apart.
timers = delta('TCPLossProbes') + delta('TCPSpuriousRTOs')
print(f"ok {mode} {size} in {elapsed:.2f}s rate {size * 8 / elapsed / 1e6:.0f} Mbit/s retrans {max(0, delta('RetransSegs') - timers)} timer-retrans {timers}")
"""#

func parseResult(_ output: String) -> (rate: Int, retransmissions: Int)? {
    guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("ok ") }) else { return nil }
    let words = line.split(separator: " ")
    guard let r = words.firstIndex(of: "rate"), let t = words.firstIndex(of: "retrans"), let rate = Int(words[r + 1]), let retrans = Int(words[t + 1]) else { return nil }
    return (rate, retrans)
}

@Suite("TCP through vpnkit run --diagnostic-services, against the kernel", .serialized, .enabled(if: runsHere(canUseNamespaces), namespaceSkipReason), .requires(canUseNamespaces, namespaceSkipReason))
struct TCPDaemonTests {
    @Test("64 MiB echoed with matching hashes, a discard bulk rate with 0 kernel retransmissions, 200 short connections, RST at once, options negotiated")
    func diagnostics() throws {
        let capture = FileManager.default.temporaryDirectory.appendingPathComponent("vk-tcp-\(getpid()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: capture) }
        // The capture is written only for the short connections (bulk data would make it large).
        let daemon = try Daemon(label: "tcpd", arguments: ["--diagnostic-services", "--no-dhcp"])
        let echo = try daemon.namespace.exec(["python3", "-c", bulkScript, "echo", "\(64 << 20)"], timeout: 300)
        #expect(echo.status == 0, "\(echo.output) \(echo.error)")
        let discard = try daemon.namespace.exec(["python3", "-c", bulkScript, "discard", "\(256 << 20)"], timeout: 300)
        let result = parseResult(discard.output)
        #expect(result != nil, "\(discard.output) \(discard.error)")
        #expect(result?.retransmissions == 0, "\(discard.output)")
        let (status, stderr) = daemon.stop()
        #expect(status == 0)
        print("TCP through the daemon: echo \(echo.output.trimmingCharacters(in: .whitespacesAndNewlines)); discard \(discard.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        _ = stderr

        let short = try Daemon(label: "tcps", arguments: ["--diagnostic-services", "--no-dhcp", "--pcap", capture])
        let many = try short.namespace.exec(["python3", "-c", bulkScript, "short", "200"], timeout: 120)
        #expect(many.status == 0, "\(many.output) \(many.error)")
        #expect(many.output.contains("refused in 0."), "\(many.output)")
        _ = short.stop()
        // Options both ways, from the capture.
        var decoder = try CaptureDecoder(path: capture)
        var kernelSYN: [String: Bool] = [:], ourSYNACK: [String: Bool] = [:]
        while let frame = decoder.next() {
            guard let tcp = frame.tcp, tcp.header.flags.contains(.syn) else { continue }
            let h = tcp.header
            let seen = ["mss": h.maximumSegmentSize != nil, "wscale": h.windowScale != nil, "sack": h.sackPermitted, "ts": h.timestamps != nil]
            if h.flags.contains(.ack) { ourSYNACK = seen } else { kernelSYN = seen }
        }
        #expect(kernelSYN == ["mss": true, "wscale": true, "sack": true, "ts": true])
        #expect(ourSYNACK == ["mss": true, "wscale": true, "sack": true, "ts": true])
    }

    @Test("16 MiB echoed intact through a link that drops and reorders 2 % of frames")
    func faultyLink() throws {
        let daemon = try Daemon(label: "tcpf", arguments: ["--diagnostic-services", "--no-dhcp", "--fault-drop", "0.02", "--fault-reorder", "0.02", "--fault-seed", "3"])
        let echo = try daemon.namespace.exec(["python3", "-c", bulkScript, "echo", "\(16 << 20)"], timeout: 300)
        #expect(echo.status == 0, "\(echo.output) \(echo.error)")
        let (status, stderr) = daemon.stop()
        #expect(status == 0)
        #expect(stderr.contains("faults_to_guest: passed="), "\(stderr)")
        // Our side's loss recovery (the echo back to the guest is our sender): losses are repaired by
        // fast retransmit, SACK and loss probes; the 200 ms retransmission timer is the exception.
        func counter(_ name: String) -> Int {
            guard let range = stderr.range(of: " \(name)=") ?? stderr.range(of: "\(name)=") else { return 0 }
            return Int(stderr[range.upperBound...].prefix { $0.isNumber }) ?? 0
        }
        let retransmissions = counter("tcp_retransmissions"), timeouts = counter("tcp_retransmission_timeouts")
        #expect(retransmissions > 20, "\(stderr)")
        #expect(timeouts * 5 <= retransmissions, "\(timeouts) timeouts for \(retransmissions) retransmissions: \(stderr)")
        print("TCP through a faulty link: \(echo.output.trimmingCharacters(in: .whitespacesAndNewlines)); our side: \(retransmissions) retransmissions, \(timeouts) timeouts, \(counter("tcp_fast_retransmits")) fast retransmits, \(counter("tcp_loss_probes")) loss probes")
    }
}
