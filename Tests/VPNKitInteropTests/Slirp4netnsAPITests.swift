import Foundation
import Testing
import VPNKitTestSupport

/// slirp4netns's API socket, ours against the real one: the same requests, in the same order, to each
/// (both serving a namespace of the test's own), and the replies compared byte for byte — errors,
/// the `list_hostfwd` shape and its key order included. The forward itself is checked too: the host
/// reaches the namespace's server through an added port, and is refused once it is removed.
@Suite(
    "slirp4netns API socket: our replies against the real slirp4netns's", .serialized,
    .enabled(if: runsHere(slirpDropIn.usable), Comment(rawValue: "skipped: \(slirpDropIn.reason)")),
    .requires(slirpDropIn.usable, Comment(rawValue: slirpDropIn.reason)))
struct Slirp4netnsAPITests {
    /// One request over a fresh connection (written, write side shut, the reply read to its end).
    static let client = #"""
        import socket, sys
        for request in sys.argv[2:]:
            s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
            s.sendall(request.encode()); s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                chunk = s.recv(65536)
                if not chunk: break
                reply += chunk
            print(reply.decode())
        """#

    /// Serves a fresh namespace with `binary` (-c, -a), runs `body` with the API socket's path, then stops it.
    static func serving(_ binary: Slirp4netnsDropInTests.Binary, _ body: (String, TestNamespace) throws -> Void) throws {
        let namespace = try TestNamespace("slirpapi")
        let directory = try freshDirectory("slirp-api")
        let socket = directory.appendingPathComponent("api.sock").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Slirp4netnsDropInTests.path(of: binary))
        process.arguments = ["-c", "-a", socket, "--netns-type=path", "/var/run/netns/\(namespace.name)", "tap0"]
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer {
            process.terminate()
            for _ in 0..<50 where process.isRunning { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        // Ready once the socket file exists and tap0 has its address.
        waitForFile(socket, timeout: 20, while: process)
        for _ in 0..<100 {
            if (try? namespace.ip("-4", "addr", "show", "dev", "tap0"))?.output.contains("10.0.2.100") == true { break }
            usleep(100_000)
        }
        try body(socket, namespace)
    }

    static func ask(_ socket: String, _ requests: [String]) throws -> [String] {
        let result = try run("/usr/bin/env", ["python3", "-c", client, socket] + requests, timeout: 60)
        return result.output.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    @Test("add_hostfwd, list_hostfwd, remove_hostfwd and every error: the same replies as slirp4netns 1.2, and the forward works until removed")
    func sameReplies() throws {
        let ports = try (0..<3).map { _ in try freeTCPPort() }
        let requests = [
            #"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":\#(ports[0]),"guest_port":80}}"#,
            #"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":\#(ports[1]),"guest_addr":"10.0.2.100","guest_port":80}}"#,
            #"{"execute":"list_hostfwd"}"#,
        ]
        let afterConnect = [
            #"{"execute":"remove_hostfwd","arguments":{"id":1}}"#,
            #"{"execute":"remove_hostfwd","arguments":{"id":1}}"#,
            #"{"execute":"remove_hostfwd","arguments":{"id":99}}"#,
            #"{"execute":"remove_hostfwd"}"#,
            #"{"execute":"add_hostfwd","arguments":{"proto":"sctp","host_port":\#(ports[2]),"guest_port":80}}"#,
            #"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"bogus","host_port":\#(ports[2]),"guest_port":80}}"#,
            #"{"execute":"add_hostfwd","arguments":{"proto":"tcp","guest_port":80}}"#,
            #"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":\#(ports[2])}}"#,
            #"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":\#(ports[1]),"guest_port":80}}"#,
            #"{"execute":"nothing"}"#,
            "garbage",
            "{}",
            #"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":\#(ports[2]),"guest_port":80}}"#,
            #"{"execute":"list_hostfwd"}"#,
        ]
        var replies: [Slirp4netnsDropInTests.Binary: [String]] = [:]
        var reached: [Slirp4netnsDropInTests.Binary: (open: String, removed: Int32)] = [:]
        for binary in Slirp4netnsDropInTests.Binary.allCases {
            try Self.serving(binary) { socket, namespace in
                let server = Process()
                server.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
                server.arguments = ["netns", "exec", namespace.name, "python3", "-c", "import http.server; http.server.HTTPServer(('0.0.0.0', 80), type('H', (http.server.BaseHTTPRequestHandler,), {'do_GET': lambda s: (s.send_response(200), s.end_headers(), s.wfile.write(b'guest page')), 'log_message': lambda *a: None})).serve_forever()"]
                try server.run()
                defer {
                    kill(server.processIdentifier, SIGKILL)
                    server.waitUntilExit()
                }
                var answers = try Self.ask(socket, requests)
                var open = ""
                for _ in 0..<50 {
                    open = (try? run(which("curl")!, ["-sS", "--max-time", "5", "http://127.0.0.1:\(ports[0])/"], timeout: 10))?.output ?? ""
                    if open == "guest page" { break }
                    usleep(100_000)
                }
                answers += try Self.ask(socket, afterConnect)
                let removed = try run(which("curl")!, ["-sS", "--max-time", "5", "http://127.0.0.1:\(ports[0])/"], timeout: 10).status
                replies[binary] = answers
                reached[binary] = (open, removed)
            }
        }
        let ours = replies[.ours] ?? [], real = replies[.real] ?? []
        #expect(real.count == requests.count + afterConnect.count, "the real slirp4netns answered \(real)")
        #expect(ours == real, "ours:\n\(ours.joined(separator: "\n"))\nreal:\n\(real.joined(separator: "\n"))")
        for binary in Slirp4netnsDropInTests.Binary.allCases {
            #expect(reached[binary]?.open == "guest page", "\(binary): the host did not reach the guest through the added port")
            // curl: 7, connection refused, once the forward is gone.
            #expect(reached[binary]?.removed == 7, "\(binary): after remove_hostfwd the port still answered")
        }
    }
}
