import Foundation
import VPNKitTestSupport
import Testing

/// The built `vpnkit` binary, beside the test bundle in the build products folder.
func vpnkitBinary() -> URL {
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    // swift test runs ….xctest from the products folder; the binary sits next to it.
    for _ in 0..<3 where !FileManager.default.fileExists(atPath: directory.appendingPathComponent("vpnkit").path) {
        directory = directory.deletingLastPathComponent()
    }
    return directory.appendingPathComponent("vpnkit")
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

func runVPNKit(_ arguments: [String]) throws -> CommandResult {
    let process = Process()
    process.executableURL = vpnkitBinary()
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = readAll(out.fileHandleForReading)
    let errData = readAll(err.fileHandleForReading)
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

@Suite("vpnkit decode (the command)")
struct CommandTests {
    @Test("decodes a capture: one line per frame, JSON on request, exit 0")
    func decodes() throws {
        let path = fixtures.appendingPathComponent("dhcp.pcap").path
        let plain = try runVPNKit(["decode", path])
        #expect(plain.status == 0, "\(plain.stderr)")
        let lines = plain.stdout.split(separator: "\n")
        #expect(lines.count == 7)
        #expect(lines.first?.contains("DHCP DISCOVER") == true)
        let json = try runVPNKit(["decode", path, "--json"])
        #expect(json.status == 0)
        let objects = try json.stdout.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(objects.count == 7)
        #expect((objects[0]?["dhcp"] as? [String: Any])?["msg_type"] as? Int == 1)
    }

    @Test("a missing file or a file that is not a capture: exit 1 with a clear message")
    func failures() throws {
        let missing = try runVPNKit(["decode", "/nonexistent/none.pcap"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("cannot open capture /nonexistent/none.pcap"))
        let notCapture = try runVPNKit(["decode", fixtures.appendingPathComponent("README.md").path])
        #expect(notCapture.status == 1)
        #expect(notCapture.stderr.contains("cannot open capture"))
        #expect(notCapture.stdout.isEmpty)
    }
}

@Suite("vpnkit (the root command)")
struct RootCommandTests {
    @Test("--version prints the version alone on stdout, exit 0")
    func version() throws {
        let result = try runVPNKit(["--version"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "0.9.0\n")
        #expect(result.stderr.isEmpty, "\(result.stderr)")
    }

    @Test("no arguments: the help, listing every subcommand and --version, on stdout, exit 0")
    func noArgumentsPrintsHelp() throws {
        let result = try runVPNKit([])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty, "\(result.stderr)")
        #expect(result.stdout.contains("USAGE: vpnkit <subcommand>"), "\(result.stdout)")
        for line in ["decode", "run", "stats", "publish", "unpublish", "forwards", "flows", "--version"] {
            #expect(result.stdout.contains("  \(line) "), "\(line) missing from: \(result.stdout)")
        }
        #expect(result.stdout == (try runVPNKit(["--help"])).stdout)
    }

    @Test("--publish ranges are checked before anything starts: lengths that differ, a reversed range, port 0 and an unknown protocol each exit 64 naming the problem")
    func publishRangeValidation() throws {
        let cases = [
            ("tcp:8000-8010:8000-8009", "same length"), ("tcp:8010-8000:8010-8000", "reversed port range 8010-8000"),
            ("tcp:0:80", "bad port 0"), ("sctp:80:80", "unknown protocol sctp"), ("tcp:[::zz]:80:80", "bad host address ::zz"),
        ]
        for (entry, message) in cases {
            let result = try runVPNKit(["run", "--socket", "/nonexistent/vk.sock", "--protocol", "qemu", "--publish", entry])
            #expect(result.status == 64, "\(entry): \(result.stderr)")
            #expect(result.stderr.contains("--publish \(entry)") && result.stderr.contains(message), "\(entry): \(result.stderr)")
        }
    }

    @Test("--io-engine: reactor with a --socket link is refused before anything starts (exit 64, naming the flag); an unknown engine too; nio with --socket gets past validation to the socket")
    func ioEngineValidation() throws {
        let socketArguments = ["run", "--socket", "/nonexistent/vk.sock", "--protocol", "qemu", "--connect"]
        let reactor = try runVPNKit(socketArguments + ["--io-engine", "reactor"])
        #expect(reactor.status == 64, "\(reactor.stderr)")
        #expect(reactor.stderr.contains("--io-engine reactor serves TAP links"), "\(reactor.stderr)")
        let unknown = try runVPNKit(socketArguments + ["--io-engine", "uring"])
        #expect(unknown.status == 64, "\(unknown.stderr)")
        #expect(unknown.stderr.contains("io-engine"), "\(unknown.stderr)")
        // Past validation: the link itself then fails (nobody serves the path), with status 1.
        let nio = try runVPNKit(socketArguments + ["--io-engine", "nio"])
        #expect(nio.status == 1, "\(nio.stderr)")
        #expect(!nio.stderr.contains("--io-engine"), "\(nio.stderr)")
    }

    @Test("the control API's clients: a bad port spec is refused before connecting; a socket nobody serves exits 1 saying so (no crash)")
    func controlClientErrors() throws {
        let bad = try runVPNKit(["publish", "--api-socket", "/nonexistent/vk.api", "tcp:9000-9001:80"])
        #expect(bad.status == 64 && bad.stderr.contains("same length"), "\(bad.stderr)")
        for arguments in [["forwards"], ["flows"], ["unpublish", "1"], ["publish", "tcp:8080:80"]] {
            let result = try runVPNKit(arguments + ["--api-socket", "/nonexistent/vk.api"])
            #expect(result.status == 1 && result.stderr.contains("cannot reach the control API at /nonexistent/vk.api"), "\(arguments): \(result.stderr)")
        }
    }
}
