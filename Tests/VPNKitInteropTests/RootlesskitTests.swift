import Foundation
import Testing
import VPNKitTestSupport

/// Whether this machine's rootlesskit can use a vpnkit binary. Debian's rootlesskit 1.1.0 is built
/// without vpnkit's Go client and answers `--net=vpnkit` with "not supported in this Debian package".
let rootlesskitVPNKit: (usable: Bool, reason: String) = {
    guard canUseNamespaces, let rootlesskit = which("rootlesskit") else { return (false, "no rootlesskit, or not root") }
    guard let probe = try? run(rootlesskit, ["--net=vpnkit", "--vpnkit-binary=/bin/false", "--", "true"], timeout: 20) else {
        return (false, "rootlesskit did not run")
    }
    if probe.error.contains("not supported in this Debian package") {
        return (false, "this rootlesskit is built without vpnkit support (Debian's package answers --net=vpnkit with \"not supported in this Debian package\")")
    }
    return (true, "")
}()

@Suite("rootlesskit --net=vpnkit with our binary", .serialized, .enabled(if: rootlesskitVPNKit.usable, Comment(rawValue: "skipped: \(rootlesskitVPNKit.reason)")))
struct RootlesskitTests {
    static func ensureSubordinateIDs() throws {
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            if !text.split(separator: "\n").contains(where: { $0.hasPrefix("root:") }) {
                try (text + "root:100000:65536\n").write(toFile: file, atomically: true, encoding: .utf8)
            }
        }
    }

    @Test("the child reaches the host's 127.0.0.1 through 192.168.65.2 and resolves host.internal; --disable-host-loopback blocks it")
    func rootlesskit() throws {
        try Self.ensureSubordinateIDs()
        let host = try HostServers()
        let script = "curl -sS --max-time 20 http://192.168.65.2:\(host.http)/ && getent ahostsv4 host.internal"
        let open = try run(which("rootlesskit")!, ["--net=vpnkit", "--vpnkit-binary=\(vpnkitBinary())", "--mtu", "1500", "--", "sh", "-c", script], timeout: 90)
        #expect(open.status == 0, "\(open.output) \(open.error)")
        #expect(open.output.contains("hello from the host"), "\(open.output)")
        #expect(open.output.contains("192.168.65.2"), "\(open.output)")
        let closed = try run(
            which("rootlesskit")!,
            ["--net=vpnkit", "--vpnkit-binary=\(vpnkitBinary())", "--mtu", "1500", "--disable-host-loopback", "--", "sh", "-c",
             "curl -sS --max-time 10 http://192.168.65.2:\(host.http)/"], timeout: 90)
        #expect(closed.status != 0, "\(closed.output)")
        #expect(!closed.output.contains("hello from the host"))
    }
}
