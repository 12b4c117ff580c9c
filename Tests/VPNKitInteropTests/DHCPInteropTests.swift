import Foundation
import Testing
import VPNKitTestSupport

let busybox = which("busybox")

/// A udhcpc script that applies the lease (address, MTU, route) and records the variables it got,
/// one file per action, in `directory`.
func udhcpcScript(in directory: URL) throws -> String {
    let path = directory.appendingPathComponent("udhcpc.sh").path
    let script = """
        #!/bin/sh
        dir=\(directory.path)
        env | grep -E '^(ip|subnet|mask|router|dns|domain|search|mtu|lease|serverid|broadcast|hostname)=' | sort > "$dir/$1.env"
        echo "$1" >> "$dir/actions"
        case "$1" in
          bound|renew)
            ip addr flush dev "$interface"
            ip addr add "$ip/$mask" dev "$interface"
            [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
            [ -n "$router" ] && ip route replace default via "$router" dev "$interface"
            ;;
        esac
        exit 0
        """
    try script.write(toFile: path, atomically: true, encoding: .utf8)
    chmod(path, 0o755)
    return path
}

func environment(_ file: URL) -> [String: String] {
    guard let text = try? String(contentsOf: file, encoding: .utf8) else { return [:] }
    var result: [String: String] = [:]
    for line in text.split(separator: "\n") {
        let parts = line.split(separator: "=", maxSplits: 1)
        if parts.count == 2 { result[String(parts[0])] = String(parts[1]) }
    }
    return result
}

@Suite("DHCP against the kernel's busybox udhcpc", .serialized, .enabled(if: runsHere(canUseNamespaces && busybox != nil), "skipped: needs root, network namespaces and busybox (CI installs busybox)"), .requires(canUseNamespaces && busybox != nil, "skipped: needs root, network namespaces and busybox (CI installs busybox)"))
struct DHCPInteropTests {
    @Test("udhcpc gets .3, router, DNS, domain and search, MTU 9000 and the lease; it renews; a second MAC gets .4; the MTU works")
    func udhcpc() throws {
        let directory = try freshDirectory("vk-dhcp-\(getpid())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let script = try udhcpcScript(in: directory)

        let daemon = try Daemon(label: "dhcp", arguments: ["--mtu", "9000", "--domain", "guest.test", "--lease-time", "30"], address: nil)
        // Stay in the foreground for one renewal (T1 = 15 s; busybox takes no lease under 30 s), then stop.
        let first = try daemon.namespace.exec(
            ["timeout", "-s", "KILL", "19", busybox!, "udhcpc", "-i", "tap0", "-f", "-t", "5", "-T", "1", "-s", script, "-O", "search", "-O", "mtu"], timeout: 30)
        let bound = environment(directory.appendingPathComponent("bound.env"))
        #expect(bound["ip"] == "192.168.65.3", "\(first.output) \(first.error)")
        #expect(bound["mask"] == "24")
        #expect(bound["router"] == "192.168.65.1")
        #expect(bound["dns"] == "192.168.65.1")
        #expect(bound["domain"] == "guest.test")
        #expect(bound["search"] == "guest.test")
        #expect(bound["mtu"] == "9000")
        #expect(bound["lease"] == "30")
        #expect(bound["serverid"] == "192.168.65.1")
        let actions = (try? String(contentsOf: directory.appendingPathComponent("actions"), encoding: .utf8)) ?? ""
        #expect(actions.contains("renew"), "actions: \(actions)")

        // Configured only by DHCP, the guest reaches the gateway with the MTU we set: 8972 + 28 = 9000.
        let link = try daemon.namespace.ip("link", "show", "tap0")
        #expect(link.output.contains("mtu 9000"))
        let ping = try daemon.namespace.exec(["ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", "8972", "192.168.65.1"], timeout: 20)
        #expect(pingSummary(ping.output)?.received == 2, "\(ping.output) \(ping.error)")

        // Another guest MAC on the same link gets the next address while .3 is still leased.
        try daemon.namespace.ip("link", "set", "tap0", "address", "02:00:00:00:99:99")
        try? FileManager.default.removeItem(at: directory.appendingPathComponent("bound.env"))
        _ = try daemon.namespace.exec([busybox!, "udhcpc", "-i", "tap0", "-f", "-n", "-q", "-t", "5", "-T", "1", "-s", script], timeout: 30)
        #expect(environment(directory.appendingPathComponent("bound.env"))["ip"] == "192.168.65.4")

        let (status, stderr) = daemon.stop()
        #expect(status == 0)
        #expect(stderr.contains("lease: 192.168.65.3"), "\(stderr)")
        #expect(stderr.contains("lease: 192.168.65.4 02:00:00:00:99:99 bound"), "\(stderr)")
    }
}
