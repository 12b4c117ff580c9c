import Foundation
import Testing
import VPNKitTestSupport

/// What the slirp4netns drop-in tests need: root (rootlesskit maps root's subordinate ids), rootlesskit,
/// the real slirp4netns to compare with, and unshare for a mount namespace of the test's own.
let slirpDropIn: (usable: Bool, reason: String) = {
    guard canUseNamespaces else { return (false, "needs root and network namespaces") }
    for tool in ["rootlesskit", "slirp4netns", "unshare", "curl", "python3"] where which(tool) == nil {
        return (false, "\(tool) is not installed (scripts/install-deps.sh installs it)")
    }
    return (true, "")
}()

/// rootlesskit (Debian's 1.1.0, the judge) driving our binary as `slirp4netns`, and the same script
/// under the real slirp4netns, so the two are compared on one script. Each run: a host HTTP server on
/// 127.0.0.1 and ::1 (a pattern blob, hashed on both sides), a DNS server on 127.0.0.54:53 named by
/// the resolv.conf of the test's mount namespace (the host's own resolver is never asked), and a web
/// server in the child published with rootlesskit's slirp4netns port driver (the API socket).
@Suite(
    "rootlesskit --net=slirp4netns: our binary beside the real slirp4netns", .serialized,
    .enabled(if: runsHere(slirpDropIn.usable), Comment(rawValue: "skipped: \(slirpDropIn.reason)")),
    .requires(slirpDropIn.usable, Comment(rawValue: slirpDropIn.reason)))
struct Slirp4netnsDropInTests {
    enum Binary: String, CaseIterable, CustomTestStringConvertible {
        case ours, real
        var testDescription: String { self == .ours ? "vpnkit as slirp4netns" : "the real slirp4netns" }
    }

    /// A directory holding `slirp4netns`, a symlink to our binary (as the README shows).
    static func ourSlirp4netns() throws -> String {
        let directory = try freshDirectory("slirp4netns-bin")
        let link = directory.appendingPathComponent("slirp4netns").path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: vpnkitBinary())
        return link
    }

    static func path(of binary: Binary) throws -> String {
        binary == .ours ? try ourSlirp4netns() : which("slirp4netns")!
    }

    /// The host's servers: HTTP on 127.0.0.1:PORT and [::1]:PORT, DNS on 127.0.0.54:53 answering
    /// every A question with 10.11.12.13.
    final class Hosts {
        let process = Process()
        let input = Pipe()
        let port: Int

        init() throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", slirpHostScript, "127.0.0.54"]
            let output = Pipe()
            process.standardOutput = output
            process.standardInput = input
            try process.run()
            let line = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            guard let port = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                process.terminate()
                throw NamespaceError(message: "the host servers did not start: \(line)")
            }
            self.port = port
        }

        deinit {
            try? input.fileHandleForWriting.close()
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// Runs rootlesskit with `binary` as its slirp4netns in a mount namespace whose resolv.conf names
    /// the test's DNS server, the child running `script`; `hostSide`, a shell snippet, runs meanwhile in
    /// the background on the host (one process tree: no second `Process` racing the first).
    static func rootlesskit(_ binary: Binary, options: [String], script: String, hostSide: String = "", timeout: Double = 150) throws -> CommandOutput {
        try RootlesskitTests.ensureSubordinateIDs()
        let directory = try freshDirectory("rootlesskit-slirp")
        let resolv = directory.appendingPathComponent("resolv.conf").path
        try "nameserver 127.0.0.54\n".write(toFile: resolv, atomically: true, encoding: .utf8)
        var command = ["rootlesskit", "--net=slirp4netns", "--slirp4netns-binary=\(try path(of: binary))", "--mtu", "65520"]
        command += options + ["--", "sh", "-c", script]
        let quoted = command.map(shellQuoted).joined(separator: " ")
        let inner = "mount --bind \(resolv) /etc/resolv.conf && exec \(quoted)"
        let outer = (hostSide.isEmpty ? "" : "( \(hostSide) ) & ") + "unshare -m sh -c \(shellQuoted(inner)); status=$?; wait; exit $status"
        return try run("/bin/sh", ["-c", outer], timeout: timeout)
    }

    static func shellQuoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    @Test("the child fetches a host file through 10.0.2.2 (hash checked), resolves through 10.0.2.3, has an fd00::/64 address and fetches from the host's ::1 through fd00::2; the host fetches the child's port 80 through the published 127.0.0.1 port", arguments: Binary.allCases)
    func dropIn(_ binary: Binary) throws {
        let hosts = try Hosts()
        let blob = 3_000_000
        let expected = try patternSHA256(blob)
        let share = try freshDirectory("rootlesskit-share")
        let www = share.appendingPathComponent("www")
        try FileManager.default.createDirectory(at: www, withIntermediateDirectories: true)
        var served = Data(count: 2_000_000)
        for i in served.indices { served[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13) }
        try served.write(to: www.appendingPathComponent("served.bin"))
        let hostPort = try freeTCPPort()
        let ready = share.appendingPathComponent("ready").path
        let finished = share.appendingPathComponent("finished").path
        let script = """
            cd \(www.path) && python3 -m http.server 80 --bind 0.0.0.0 >/dev/null 2>&1 &
            server=$!
            # The link-local and SLAAC addresses leave "tentative" once duplicate address detection is over.
            for i in $(seq 1 100); do ip -6 addr show dev tap0 | grep -q 'fd00::' && ! ip -6 addr show dev tap0 | grep -q tentative && break; sleep 0.1; done
            echo "v4 $(curl -sS --max-time 30 http://10.0.2.2:\(hosts.port)/blob/\(blob) | sha256sum)"
            echo "dns $(getent ahostsv4 probe.vpnkit.test | head -n 1)"
            echo "addr6 $(ip -6 addr show dev tap0 scope global | grep -o 'fd00::[0-9a-f:]*' | head -n 1)"
            echo "v6 $(curl -sS -g --max-time 30 'http://[fd00::2]:\(hosts.port)/blob/\(blob)' | sha256sum)"
            for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:80/ && break; sleep 0.1; done
            touch \(ready)
            for i in $(seq 1 600); do [ -e \(finished) ] && break; sleep 0.1; done
            kill $server
            """
        let fetched = share.appendingPathComponent("fetched.bin").path
        // On the host, once the child says its server is up: fetch its file through the published port.
        let hostSide = """
            for i in $(seq 1 900); do [ -e \(ready) ] && break; sleep 0.1; done
            curl -sS --max-time 30 -o \(fetched) http://127.0.0.1:\(hostPort)/served.bin; echo "host-curl=$?"
            touch \(finished)
            """
        let result = try Self.rootlesskit(
            binary, options: ["--port-driver=slirp4netns", "-p", "127.0.0.1:\(hostPort):80/tcp", "--ipv6"], script: script, hostSide: hostSide)
        let log = "\(binary): \(result.output)\n\(result.error)"
        #expect(result.status == 0, "\(log)")
        #expect(result.output.contains("v4 \(expected)"), "\(log)")
        #expect(result.output.contains("dns 10.11.12.13"), "\(log)")
        #expect(result.output.contains("addr6 fd00::"), "\(log)")
        #expect(result.output.contains("v6 \(expected)"), "\(log)")
        #expect(result.output.contains("host-curl=0"), "host fetch \(log)")
        #expect(FileManager.default.contents(atPath: fetched) == served, "the file the host fetched through 127.0.0.1:\(hostPort) differs \(log)")
        _ = hosts
    }

    @Test("--disable-host-loopback: 10.0.2.2 refuses the host's loopback servers", arguments: Binary.allCases)
    func disableHostLoopback(_ binary: Binary) throws {
        let hosts = try Hosts()
        let script = "curl -sS --max-time 10 http://10.0.2.2:\(hosts.port)/; echo \"curl=$?\""
        let result = try Self.rootlesskit(binary, options: ["--disable-host-loopback"], script: script)
        let log = "\(binary): \(result.output)\n\(result.error)"
        #expect(result.status == 0, "\(log)")
        #expect(!result.output.contains("hello from the host"), "\(log)")
        // Refused at once (7), not left to time out (28).
        #expect(result.output.contains("curl=7"), "\(log)")
        _ = hosts
    }

    @Test("unprivileged: nobody's daemon serves the namespace of nobody's `unshare -rn`, entering its user namespace; the child reaches the host through 10.0.2.2")
    func unprivileged() throws {
        guard let prefix = asNobody, !prefix.isEmpty else {
            Issue.record("needs root, setpriv, and a vpnkit binary nobody can run")
            return
        }
        let hosts = try Hosts()
        let nobody = prefix.map(Self.shellQuoted).joined(separator: " ")
        let script = """
            \(nobody) unshare -rn sleep 60 &
            child=$!
            for i in $(seq 1 50); do [ "$(readlink /proc/$child/ns/user)" != "$(readlink /proc/self/ns/user)" ] && break; sleep 0.1; done
            \(nobody) \(Self.shellQuoted(vpnkitBinary())) slirp4netns -c $child tap0 &
            daemon=$!
            for i in $(seq 1 100); do nsenter -t $child -n ip -4 addr show dev tap0 2>/dev/null | grep -q 10.0.2.100 && break; sleep 0.1; done
            echo "daemon-uid $(stat -c %u /proc/$daemon)"
            echo "fetched $(nsenter -t $child -n curl -sS --max-time 10 http://10.0.2.2:\(hosts.port)/)"
            kill $daemon; sleep 0.5; kill -9 $daemon $child 2>/dev/null
            """
        let result = try run("/bin/sh", ["-c", script], timeout: 60)
        #expect(result.output.contains("daemon-uid 65534"), "\(result.output) \(result.error)")
        #expect(result.output.contains("fetched hello from the host"), "\(result.output) \(result.error)")
        _ = hosts
    }

    @Test("--outbound-addr: the host sees the NAT's TCP and UDP leave from 127.0.0.2; --macaddress sets the device's MAC", arguments: Binary.allCases)
    func outboundAddressAndMAC(_ binary: Binary) throws {
        let peer = try LineProcess("/usr/bin/env", ["python3", "-c", peerAddressScript])
        let port = peer.readLine().trimmingCharacters(in: .whitespacesAndNewlines)
        let script = """
            unshare -n sleep 60 &
            child=$!
            sleep 0.3
            \(Self.shellQuoted(try Self.path(of: binary))) -c --macaddress 02:11:22:33:44:55 --outbound-addr 127.0.0.2 $child tap0 >/dev/null 2>&1 &
            daemon=$!
            for i in $(seq 1 100); do nsenter -t $child -n ip -4 addr show dev tap0 2>/dev/null | grep -q 10.0.2.100 && break; sleep 0.1; done
            nsenter -t $child -n ip link show dev tap0 | grep -o 'ether [0-9a-f:]*'
            nsenter -t $child -n curl -sS --max-time 10 telnet://10.0.2.2:\(port) </dev/null
            nsenter -t $child -n python3 -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(b'x', ('10.0.2.2', \(port))); print(s.recvfrom(100)[0].decode())"
            kill $daemon; sleep 0.5; kill -9 $daemon $child 2>/dev/null
            """
        let result = try run("/bin/sh", ["-c", script], timeout: 60)
        let log = "\(binary): \(result.output) \(result.error)"
        #expect(result.output.contains("ether 02:11:22:33:44:55"), "\(log)")
        #expect(result.output.contains("tcp-peer 127.0.0.2"), "\(log)")
        #expect(result.output.contains("udp-peer 127.0.0.2"), "\(log)")
        _ = peer
    }
}



/// The slirp tests' host servers (see `Slirp4netnsDropInTests.Hosts`): the same pattern as the NAT
/// tests' `/blob/N`, on both loopbacks, and a DNS responder on the address given.
let slirpHostScript = #"""
import http.server, random, socket, socketserver, struct, sys, threading
block = random.Random(7).randbytes(1048573)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/blob/"):
            n = int(self.path[6:]); self.send_response(200); self.send_header("Content-Length", str(n)); self.end_headers()
            while n > 0:
                c = block[:n]; self.wfile.write(c); n -= len(c)
        else:
            b = b"hello from the host\n"; self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
class S4(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True; allow_reuse_address = True
class S6(S4): address_family = socket.AF_INET6
s4 = S4(("127.0.0.1", 0), H); port = s4.server_address[1]
s6 = S6(("::1", port), H)
for s in (s4, s6): threading.Thread(target=s.serve_forever, daemon=True).start()
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); dns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); dns.bind((sys.argv[1], 53))
def serve_dns():
    while True:
        q, peer = dns.recvfrom(2048)
        if len(q) < 17: continue
        i = 12
        while i < len(q) and q[i] != 0: i += q[i] + 1
        if i + 5 > len(q): continue
        qtype = struct.unpack("!H", q[i+1:i+3])[0]; end = i + 5
        answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([10, 11, 12, 13]) if qtype == 1 else b""
        header = q[:2] + b"\x81\x80" + q[4:6] + struct.pack("!HHH", 1 if answer else 0, 0, 0)
        dns.sendto(header + q[12:end] + answer, peer)
threading.Thread(target=serve_dns, daemon=True).start()
print(port, flush=True)
sys.stdin.read()
"""#

/// A TCP and a UDP server on 127.0.0.1 (one port, printed first) that answer with the address their
/// client came from.
let peerAddressScript = #"""
import socket, sys, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("127.0.0.1", 0)); t.listen(8)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", t.getsockname()[1]))
def tcp():
    while True:
        c, a = t.accept(); c.sendall(("tcp-peer %s\n" % a[0]).encode()); c.close()
def udp():
    while True:
        d, a = u.recvfrom(2048); u.sendto(("udp-peer %s\n" % a[0]).encode(), a)
threading.Thread(target=tcp, daemon=True).start(); threading.Thread(target=udp, daemon=True).start()
print(t.getsockname()[1], flush=True); sys.stdin.read()
"""#
