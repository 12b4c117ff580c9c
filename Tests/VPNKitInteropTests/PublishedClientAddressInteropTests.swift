// Published ports that show the guest the real client, against the kernel: a second namespace
// joined to the host by a veth pair plays another machine. It connects to the host's veth address
// on a port published on 0.0.0.0, and the guest's server (a real Linux socket) reports the peer it
// accepted: the client namespace's own address, with its replies routed back through the guest's
// default route. A client on the host's loopback is still the host alias, and so is every client
// under --publish-source alias.

import Foundation
import Testing
import VPNKitTestSupport

let canRunClientAddress = canUseNamespaces && which("python3") != nil
let clientAddressSkipReason: Comment = "skipped: needs root, network namespaces and python3 (CI runs as root)"

/// Another machine for published ports: a namespace joined to the test's own by a veth pair, the
/// host end `10.77.N.1/24`, the namespace end `10.77.N.2/24` (N from the process id, so parallel
/// runs do not collide). The namespace (and with it the pair) is deleted when released.
final class ClientMachine {
    let namespace: TestNamespace
    let hostInterface: String
    let hostAddress: String
    let address: String

    init(_ label: String) throws {
        namespace = try TestNamespace(label)
        let net = Int(getpid() % 200) + 20
        hostInterface = "vkc\(getpid() % 100_000)"
        hostAddress = "10.77.\(net).1"
        address = "10.77.\(net).2"
        _ = try? run("/usr/sbin/ip", ["link", "del", hostInterface])
        for arguments in [
            ["link", "add", hostInterface, "type", "veth", "peer", "name", "eth0", "netns", namespace.name],
            ["addr", "add", "\(hostAddress)/24", "dev", hostInterface],
            ["link", "set", hostInterface, "up"],
        ] {
            let result = try run("/usr/sbin/ip", arguments)
            guard result.status == 0 else { throw NamespaceError(message: "ip \(arguments.joined(separator: " ")): \(result.error)") }
        }
        try namespace.ip("addr", "add", "\(address)/24", "dev", "eth0")
        try namespace.ip("link", "set", "eth0", "up")
        // Reachable once duplicate address detection and the carrier allow.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if (try? namespace.exec(["ping", "-c", "1", "-W", "1", hostAddress], timeout: 5))?.status == 0 { return }
            usleep(100_000)
        }
        throw NamespaceError(message: "the client namespace cannot reach \(hostAddress)")
    }

    /// Runs `publishHostClientScript` here; its `ok …` line, or what went wrong.
    func client(_ mode: String, port: UInt16, count: Int) throws -> String {
        let result = try namespace.exec(["python3", "-c", publishHostClientScript, mode, hostAddress, "\(port)", "\(count)"], timeout: 90)
        return result.output.hasPrefix("ok ") ? result.output.trimmingCharacters(in: .whitespacesAndNewlines) : "\(result.output) \(result.error)"
    }

    deinit {
        _ = try? run("/usr/sbin/ip", ["link", "del", hostInterface])
    }
}

/// A daemon with `arguments` whose guest has 192.168.65.3 and a default route via the gateway (as
/// DHCP would give it), seen by the daemon over IPv4, running `publishGuestScript`.
func clientAddressDaemon(_ label: String, _ arguments: [String]) throws -> (Daemon, LineProcess) {
    let daemon = try Daemon(label: label, arguments: arguments, address: "192.168.65.3/24")
    try daemon.namespace.ip("route", "add", "default", "via", "192.168.65.1")
    _ = try daemon.namespace.exec(["ping", "-c", "1", "-W", "2", "192.168.65.1"], timeout: 10)
    return (daemon, try daemon.startPublishGuest())
}

@Suite("published ports show the guest the real client (vpnkit run --publish, a client namespace on a veth pair)", .serialized,
       .enabled(if: runsHere(canRunClientAddress), clientAddressSkipReason), .requires(canRunClientAddress, clientAddressSkipReason))
struct PublishedClientAddressInteropTests {
    @Test("tcp and udp on 0.0.0.0: the client namespace's connection (1 MiB echoed byte-exact) and datagrams reach the guest from 10.77.N.2, its own address; a client on the host's 127.0.0.1 from 192.168.65.2")
    func clientSeenAsItself() throws {
        let machine = try ClientMachine("pubcli")
        let port = try freeTCPPort()
        let (daemon, guest) = try clientAddressDaemon("pubclig", ["--publish", "tcp:0.0.0.0:\(port):80", "--publish", "udp:0.0.0.0:\(port):5353"])
        defer { _ = daemon.stop() }
        defer { withExtendedLifetime(guest) {} }
        let host = machine.hostAddress
        #expect(try machine.client("tcp", port: port, count: 1 << 20) == "ok tcp \(host) \(machine.address) \(1 << 20)")
        #expect(try machine.client("udp", port: port, count: 100) == "ok udp \(host) \(machine.address) 100")
        #expect(try publishClient("tcp", "127.0.0.1", port, 100_000) == "ok tcp 127.0.0.1 192.168.65.2 100000")
        #expect(try publishClient("udp", "127.0.0.1", port, 20) == "ok udp 127.0.0.1 192.168.65.2 20")
        // Again from the client namespace: a second connection and client socket on fresh ports.
        #expect(try machine.client("tcp", port: port, count: 1000) == "ok tcp \(host) \(machine.address) 1000")
        let (status, stderr) = daemon.stop()
        #expect(status == 0, "\(stderr)")
        // Two connections and one UDP client (its datagrams reuse one socket) shown as themselves.
        #expect(stderr.contains("published_client_addresses=3"), "\(stderr)")
    }

    @Test("--publish-source alias: the client namespace's connection and datagrams come from 192.168.65.2, as before")
    func aliasOnly() throws {
        let machine = try ClientMachine("pubalias")
        let port = try freeTCPPort()
        let (daemon, guest) = try clientAddressDaemon(
            "pubaliasg", ["--publish-source", "alias", "--publish", "tcp:0.0.0.0:\(port):80", "--publish", "udp:0.0.0.0:\(port):5353"])
        defer { _ = daemon.stop() }
        defer { withExtendedLifetime(guest) {} }
        let host = machine.hostAddress
        #expect(try machine.client("tcp", port: port, count: 100_000) == "ok tcp \(host) 192.168.65.2 100000")
        #expect(try machine.client("udp", port: port, count: 20) == "ok udp \(host) 192.168.65.2 20")
    }
}
