// The control API of `vpnkit run --api-socket`: ports published and unpublished at run time through
// HTTP on the unix socket (curl, as a user would, and the vpnkit subcommands), against a guest
// namespace whose server the host reaches through them; malformed requests refused without effect.
import Foundation
import Testing
import VPNKitTestSupport

let canRunControlAPI = canRunNAT && which("curl") != nil
let controlAPISkipReason: Comment = "skipped: needs root, network namespaces, python3, busybox and curl (CI installs them)"

/// One request to the API with curl; answers the status and body.
func apiRequest(_ socket: String, _ method: String, _ path: String, body: String? = nil, bodyFile: String? = nil) throws -> (status: Int, body: String) {
    var arguments = ["-s", "--max-time", "20", "--unix-socket", socket, "-X", method, "-w", "\n%{http_code}"]
    if let body { arguments += ["-H", "Content-Type: application/json", "--data-binary", body] }
    if let bodyFile { arguments += ["-H", "Content-Type: application/json", "--data-binary", "@" + bodyFile] }
    let result = try run("/usr/bin/env", ["curl"] + arguments + ["http://localhost" + path], timeout: 30)
    let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false)
    return (Int(lines.last ?? "") ?? -1, lines.dropLast().joined(separator: "\n"))
}

/// The JSON object of a body (empty when it is not one).
func jsonObject(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
}

/// Whether a TCP connection to 127.0.0.1:`port` is accepted (false: refused).
func hostAccepts(_ port: UInt16) throws -> Bool {
    try run("/usr/bin/env", ["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', \(port)), timeout=5).close()"], timeout: 20).status == 0
}

@Suite("the control API (vpnkit run --api-socket)", .serialized, .enabled(if: runsHere(canRunControlAPI), controlAPISkipReason), .requires(canRunControlAPI, controlAPISkipReason))
struct ControlAPIDaemonTests {
    @Test("publish at run time through POST /forwards: the host reaches the guest's server; GET /forwards lists it with its id; DELETE /forwards/ID and the host is refused while a connection accepted before keeps running; the socket is 0600 and goes with the daemon; /stats and /flows answer; the --stats socket answers the same GETs and changes nothing")
    func publishAndUnpublish() throws {
        let socket = FileManager.default.temporaryDirectory.appendingPathComponent("vk-api-\(getpid()).sock").path
        // A stale socket file from an earlier run is replaced.
        _ = try run("/usr/bin/env", ["python3", "-c", "import socket; socket.socket(socket.AF_UNIX).bind('\(socket)')"])
        // Stopped at the end of the test (a failure before that leaves it to Daemon's deinit).
        let statsSocket = FileManager.default.temporaryDirectory.appendingPathComponent("vk-api-stats-\(getpid()).sock").path
        let daemon = try Daemon(label: "api", arguments: ["--api-socket", socket, "--stats", statsSocket])
        let guest = try daemon.startPublishGuest()
        defer { withExtendedLifetime(guest) {} }
        var mode: Int?
        for _ in 0..<100 {
            mode = try? FileManager.default.attributesOfItem(atPath: socket)[.posixPermissions] as? Int
            if mode != nil, (try? apiRequest(socket, "GET", "/forwards").status) == 200 { break }
            usleep(50_000)
        }
        #expect(mode == 0o600, "api socket mode \(String(mode ?? -1, radix: 8))")
        #expect(try apiRequest(socket, "GET", "/forwards").body.contains("\"forwards\":[]"))

        let port = try freeTCPPort()
        let created = try apiRequest(socket, "POST", "/forwards", body: #"{"proto":"tcp","host_ip":"127.0.0.1","host_port":\#(port),"guest_port":80}"#)
        #expect(created.status == 201, "\(created.body)")
        let id = try #require(jsonObject(created.body)["id"] as? Int, "\(created.body)")
        #expect(jsonObject(created.body)["listeners"] as? [String] == ["127.0.0.1:\(port)"], "\(created.body)")
        // From the host alias of the family the guest was last seen on (SLAAC may come first).
        let reached = try publishClient("tcp", "127.0.0.1", port, 100_000)
        #expect(["ok tcp 127.0.0.1 192.168.65.2 100000", "ok tcp 127.0.0.1 fd00:65::2 100000"].contains(reached), "\(reached)")
        // The same host port again: in use.
        let conflict = try apiRequest(socket, "POST", "/forwards", body: #"{"proto":"tcp","host_ip":"127.0.0.1","host_port":\#(port),"guest_port":81}"#)
        #expect(conflict.status == 409 && jsonObject(conflict.body)["error"] is String, "\(conflict)")

        let listed = try apiRequest(socket, "GET", "/forwards")
        let forwards = jsonObject(listed.body)["forwards"] as? [[String: Any]] ?? []
        #expect(forwards.count == 1 && forwards.first?["id"] as? Int == id && forwards.first?["host_port"] as? Int == Int(port), "\(listed.body)")

        // The stats socket answers the same read-only GETs from the same routes, and changes nothing.
        let viaStats = try apiRequest(statsSocket, "GET", "/forwards")
        #expect(viaStats.status == 200 && viaStats.body == listed.body, "\(viaStats)")
        #expect(try apiRequest(statsSocket, "GET", "/metrics").body.contains("vpnkit_nat_tcp_flows "))
        _ = try? apiRequest(statsSocket, "POST", "/forwards", body: #"{"proto":"tcp","host_port":\#(try freeTCPPort()),"guest_port":80}"#)
        _ = try? apiRequest(statsSocket, "DELETE", "/forwards/\(id)")
        #expect(try apiRequest(socket, "GET", "/forwards").body == listed.body)

        // /stats is the --stats JSON (its listeners included); /flows the flow table.
        let stats = jsonObject(try apiRequest(socket, "GET", "/stats").body)
        #expect((stats["published"] as? [String])?.contains("tcp:127.0.0.1:\(port):80") == true, "\(stats)")
        #expect(stats["flows"] is [String: Any] && stats["stack"] is [String: Any])
        let flows = try apiRequest(socket, "GET", "/flows")
        #expect(flows.status == 200 && jsonObject(flows.body)["flows"] is [Any], "\(flows.body)")

        // A connection held open through the port: it is in the flow table, and it outlives the
        // port's removal.
        let holder = try LineProcess("/usr/bin/env", ["python3", "-c", """
            import socket, sys
            s = socket.create_connection(('127.0.0.1', \(port))); f = s.makefile('rb')
            print(f.readline().decode().strip(), flush=True)
            for line in sys.stdin:
                s.sendall(line.encode()); print(f.readline().decode().strip(), flush=True)
            """])
        defer { withExtendedLifetime(holder) {} }
        #expect(["192.168.65.2", "fd00:65::2"].contains(holder.readLine().replacingOccurrences(of: "::ffff:", with: "")))
        let table = jsonObject(try apiRequest(socket, "GET", "/flows").body)["flows"] as? [[String: Any]] ?? []
        #expect(table.contains { ($0["guest"] as? String)?.hasSuffix(":80") == true && $0["protocol"] as? String == "tcp" }, "\(table)")

        let deleted = try apiRequest(socket, "DELETE", "/forwards/\(id)")
        #expect(deleted.status == 204 && deleted.body.isEmpty, "\(deleted)")
        #expect(try hostAccepts(port) == false, "127.0.0.1:\(port) still accepts after DELETE")
        holder.send("still open")
        #expect(holder.readLine() == "still open", "the connection accepted before DELETE was cut")
        #expect(try apiRequest(socket, "GET", "/forwards").body.contains("\"forwards\":[]"))
        let again = try apiRequest(socket, "DELETE", "/forwards/\(id)")
        #expect(again.status == 404 && (jsonObject(again.body)["error"] as? String)?.contains("\(id)") == true, "\(again)")

        // A body over 1 KiB (curl asks with Expect: 100-continue first) naming the guest address.
        let padded = #"{"proto":"tcp","host_ip":"127.0.0.1","host_port":\#(port),"guest_port":80,"guest_ip":"192.168.65.3"}"# + String(repeating: " ", count: 3000)
        let started = Date()
        let withGuest = try apiRequest(socket, "POST", "/forwards", body: padded)
        #expect(withGuest.status == 201, "\(withGuest)")
        // Ids are never reused (the refused 409 attempt took one too).
        let second = try #require(jsonObject(withGuest.body)["id"] as? Int, "\(withGuest)")
        #expect(second > id)
        #expect(Date().timeIntervalSince(started) < 0.9, "curl waited for 100 Continue")
        #expect(try publishClient("tcp", "127.0.0.1", port, 1000) == "ok tcp 127.0.0.1 192.168.65.2 1000")
        #expect(try apiRequest(socket, "DELETE", "/forwards/\(second)").status == 204)

        let stopped = daemon.stop()
        #expect(stopped.status == 0, "\(stopped.stderr)")
        #expect(!FileManager.default.fileExists(atPath: socket), "the socket file outlived the daemon")
    }

    @Test("malformed requests get 4xx with a JSON error and change nothing: bad JSON, missing or unknown fields, port 0, bad protocol or address, unknown id or path, wrong method, a body over 64 KiB, broken HTTP; at most 16 connections at once")
    func malformedRequests() throws {
        let socket = FileManager.default.temporaryDirectory.appendingPathComponent("vk-api-bad-\(getpid()).sock").path
        let daemon = try Daemon(label: "apibad", arguments: ["--api-socket", socket])
        defer { _ = daemon.stop() }
        for _ in 0..<100 where (try? apiRequest(socket, "GET", "/forwards").status) != 200 { usleep(50_000) }
        let port = try freeTCPPort()
        let kept = try apiRequest(socket, "POST", "/forwards", body: #"{"proto":"tcp","host_port":\#(port),"guest_port":80}"#)
        #expect(kept.status == 201, "\(kept.body)")
        let before = try apiRequest(socket, "GET", "/forwards").body
        #expect((jsonObject(before)["forwards"] as? [Any])?.count == 1, "\(before)")
        let free = try freeTCPPort()

        let huge = FileManager.default.temporaryDirectory.appendingPathComponent("vk-api-huge-\(getpid()).json").path
        defer { try? FileManager.default.removeItem(atPath: huge) }
        try Data(#"{"proto":"tcp","host_port":\#(free),"guest_port":80,"pad":""#.utf8 + Array(repeating: UInt8(ascii: "x"), count: 100_000) + Data(#""}"#.utf8))
            .write(to: URL(fileURLWithPath: huge))
        let cases: [(String, String, String?, Int)] = [
            ("POST", "/forwards", "{not json", 400),
            ("POST", "/forwards", "[1,2]", 400),
            ("POST", "/forwards", #"{"proto":"tcp","host_port":\#(free)}"#, 400),
            ("POST", "/forwards", #"{"proto":"tcp","host_port":0,"guest_port":80}"#, 400),
            ("POST", "/forwards", #"{"proto":"tcp","host_port":\#(free),"guest_port":70000}"#, 400),
            ("POST", "/forwards", #"{"proto":"sctp","host_port":\#(free),"guest_port":80}"#, 400),
            ("POST", "/forwards", #"{"proto":"tcp","host_ip":"localhost","host_port":\#(free),"guest_port":80}"#, 400),
            ("POST", "/forwards", #"{"proto":"tcp","host_port":"\#(free)","guest_port":80}"#, 400),
            ("POST", "/forwards", #"{"proto":"tcp","host_port":\#(free),"guest_port":80,"guest_prot":80}"#, 400),
            ("POST", "/forwards", "", 400),
            ("DELETE", "/forwards/99", nil, 404),
            ("DELETE", "/forwards/abc", nil, 404),
            ("GET", "/nothing", nil, 404),
            ("PUT", "/forwards", #"{"proto":"tcp","host_port":\#(free),"guest_port":80}"#, 405),
            ("DELETE", "/forwards", nil, 405),
            ("POST", "/stats", "{}", 405),
            ("GET", "/forwards/1", nil, 405),
        ]
        for (method, path, body, status) in cases {
            let answer = try apiRequest(socket, method, path, body: body)
            #expect(answer.status == status, "\(method) \(path) \(body ?? ""): \(answer)")
            #expect(jsonObject(answer.body)["error"] is String, "\(method) \(path) \(body ?? ""): \(answer.body)")
        }
        let tooLarge = try apiRequest(socket, "POST", "/forwards", bodyFile: huge)
        #expect(tooLarge.status == 413 && jsonObject(tooLarge.body)["error"] is String, "\(tooLarge)")
        // Not HTTP at all.
        let garbage = try run("/usr/bin/env", ["python3", "-c", """
            import socket; s = socket.socket(socket.AF_UNIX); s.connect('\(socket)'); s.sendall(b'HELLO\\x00 nonsense\\r\\n\\r\\n'); print(s.recv(4096).decode(errors='replace').split('\\r\\n')[0])
            """], timeout: 20)
        #expect(garbage.output.hasPrefix("HTTP/1.1 400"), "\(garbage)")

        // At most 16 connections at once: a 17th is closed unanswered; once they go, requests are
        // served again.
        let crowd = try run("/usr/bin/env", ["python3", "-c", """
            import socket, time
            held = []
            for i in range(16):
                s = socket.socket(socket.AF_UNIX); s.connect('\(socket)'); held.append(s)
            time.sleep(1.0)
            # Generous: under a loaded test run the daemon may take seconds to get to it.
            extra = socket.socket(socket.AF_UNIX); extra.connect('\(socket)'); extra.settimeout(20)
            try:
                # Closed before the request is even sent (EPIPE) is closed too.
                extra.sendall(b'GET /forwards HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
                print('extra closed' if extra.recv(100) == b'' else 'extra answered')
            except (ConnectionResetError, BrokenPipeError):
                print('extra closed')
            except socket.timeout:
                print('extra neither answered nor closed within 20 s')
            for s in held: s.close()
            """], timeout: 45)
        #expect(crowd.output.trimmingCharacters(in: .whitespacesAndNewlines) == "extra closed", "\(crowd.output) \(crowd.error)")
        var served = false
        for _ in 0..<50 where !served {
            served = (try? apiRequest(socket, "GET", "/forwards").status) == 200
            if !served { usleep(100_000) }
        }
        #expect(served)

        #expect(try apiRequest(socket, "GET", "/forwards").body == before)
        #expect(try hostAccepts(free) == false, "a refused request opened port \(free)")
    }

    @Test("the vpnkit subcommands: publish prints the id, forwards lists it, flows prints the table, unpublish removes it; a refusal exits non-zero with the daemon's message")
    func subcommands() throws {
        let socket = FileManager.default.temporaryDirectory.appendingPathComponent("vk-api-cli-\(getpid()).sock").path
        let daemon = try Daemon(label: "apicli", arguments: ["--api-socket", socket])
        defer { _ = daemon.stop() }
        let guest = try daemon.startPublishGuest()
        defer { withExtendedLifetime(guest) {} }
        for _ in 0..<100 where (try? apiRequest(socket, "GET", "/forwards").status) != 200 { usleep(50_000) }
        let first = try freeTCPPort()
        let range = "tcp:127.0.0.1:\(first)-\(first + 1):80-81"
        let published = try run(vpnkitBinary(), ["publish", "--api-socket", socket, range], timeout: 20)
        // Two ports from the range, or a neighbour port was taken: then the second fails cleanly.
        let lines = published.output.split(separator: "\n")
        #expect(lines.first?.hasPrefix("1 tcp:127.0.0.1:\(first):80 127.0.0.1:\(first)") == true, "\(published)")
        // From the host alias of the family the guest was last seen on (SLAAC may come first).
        let reached = try publishClient("tcp", "127.0.0.1", first, 10_000)
        #expect(["ok tcp 127.0.0.1 192.168.65.2 10000", "ok tcp 127.0.0.1 fd00:65::2 10000"].contains(reached), "\(reached)")

        let listed = try run(vpnkitBinary(), ["forwards", "--api-socket", socket], timeout: 20)
        #expect(listed.status == 0 && listed.output.contains("127.0.0.1:\(first)") && listed.output.hasPrefix("ID"), "\(listed)")
        let flows = try run(vpnkitBinary(), ["flows", "--api-socket", socket], timeout: 20)
        #expect(flows.status == 0 && flows.output.hasPrefix("PROTO"), "\(flows)")

        let refused = try run(vpnkitBinary(), ["unpublish", "--api-socket", socket, "77"], timeout: 20)
        #expect(refused.status != 0 && refused.error.contains("no published port has id 77"), "\(refused)")
        let taken = try run(vpnkitBinary(), ["publish", "--api-socket", socket, "tcp:127.0.0.1:\(first):80"], timeout: 20)
        #expect(taken.status != 0 && taken.error.contains("in use"), "\(taken)")

        let removed = try run(vpnkitBinary(), ["unpublish", "--api-socket", socket, "1"], timeout: 20)
        #expect(removed.status == 0 && removed.output.contains("unpublished 1"), "\(removed)")
        #expect(try hostAccepts(first) == false)
        let bad = try run(vpnkitBinary(), ["publish", "--api-socket", socket, "tcp:9000-9001:80"], timeout: 20)
        #expect(bad.status != 0 && bad.error.contains("same length"), "\(bad)")
    }
}
