import Foundation
import Testing

/// `vpnkit slirp4netns`'s command line, without root: what rootlesskit and Podman read from
/// `--help` to decide what the binary can do, the version line, the name it answers to through a
/// symlink, and the clear refusals (exit status non-zero, a message naming the option).
@Suite("vpnkit slirp4netns: the command line")
struct Slirp4netnsCommandLineTests {
    @Test("--help lists every option rootlesskit and Podman look for, and exits 0")
    func help() throws {
        let result = try runVPNKit(["slirp4netns", "--help"])
        #expect(result.status == 0, "\(result.stderr)")
        let text = result.stdout + result.stderr
        // rootlesskit refuses a binary whose help lacks --netns-type ("seems older than v0.4.0").
        for option in ["--netns-type", "--userns-path", "--enable-ipv6", "--cidr", "--disable-host-loopback", "--api-socket", "--mtu",
                       "--configure", "--exit-fd", "--ready-fd", "--disable-dns"] {
            #expect(text.contains(option), "\(option) is missing from --help")
        }
        #expect(text.contains("PID|PATH [TAPNAME]"))
    }

    @Test("a symlink named slirp4netns is slirp4netns's command line; -v prints the version")
    func symlink() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("s4nn-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let link = directory.appendingPathComponent("slirp4netns")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: vpnkitBinary())
        let process = Process()
        process.executableURL = link
        process.arguments = ["-v"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(text.hasPrefix("slirp4netns version 1.2.0"), "\(text)")
        #expect(text.contains("vpnkit"))
    }

    @Test(
        "options whose behaviour we lack, and bad values, are refused with the option named",
        arguments: [
            (["--outbound-addr=no-such-interface0", "1"], "--outbound-addr"),
            (["--outbound-addr6=127.0.0.1", "1"], "--outbound-addr6"),
            (["--macaddress=02:00:00:00:00:01", "1"], "--macaddress needs --configure"),
            (["-c", "--macaddress=01:00:00:00:00:01", "1"], "not a unicast MAC"),
            (["--cidr=10.0.2.0/26", "1"], "--cidr"),
            (["--cidr=banana", "1"], "--cidr"),
            (["--mtu=70000", "1"], "--mtu"),
            (["not-a-pid"], "not a PID"),
            (["--netns-type=path", "relative/path"], "absolute path"),
            (["1", "a-very-long-tap-name-indeed"], "TAPNAME"),
            ([String](), "PID|PATH"),
        ])
    func refusals(_ arguments: [String], _ named: String) throws {
        let result = try runVPNKit(["slirp4netns"] + arguments)
        #expect(result.status != 0)
        #expect(result.stderr.contains(named), "\(arguments): \(result.stderr)")
    }
}
