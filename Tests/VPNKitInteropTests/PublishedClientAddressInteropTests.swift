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
/// host end `10.77.N.1/24` and `fd77:N::1/64`, the namespace end `10.77.N.2/24` and `fd77:N::2/64`
/// (N from the process id, so parallel runs do not collide). The namespace (and with it the pair) is
/// deleted when released.
final class ClientMachine {
    let namespace: TestNamespace
    let hostInterface: String
    let hostAddress: String
    let address: String
    let hostAddress6: String
    let address6: String

    init(_ label: String) throws {
        namespace = try TestNamespace(label)
        let net = Int(getpid() % 200) + 20
        hostInterface = "vkc\(getpid() % 100_000)"
        hostAddress = "10.77.\(net).1"
        address = "10.77.\(net).2"
        hostAddress6 = "fd77:\(net)::1"
        address6 = "fd77:\(net)::2"
        _ = try? run("/usr/sbin/ip", ["link", "del", hostInterface])
        for arguments in [
            ["link", "add", hostInterface, "type", "veth", "peer", "name", "eth0", "netns", namespace.name],
            ["addr", "add", "\(hostAddress)/24", "dev", hostInterface],
            ["-6", "addr", "add", "\(hostAddress6)/64", "dev", hostInterface, "nodad"],
            ["link", "set", hostInterface, "up"],
        ] {
            let result = try run("/usr/sbin/ip", arguments)
            guard result.status == 0 else { throw NamespaceError(message: "ip \(arguments.joined(separator: " ")): \(result.error)") }
        }
        try namespace.ip("addr", "add", "\(address)/24", "dev", "eth0")
        try namespace.ip("-6", "addr", "add", "\(address6)/64", "dev", "eth0", "nodad")
        try namespace.ip("link", "set", "eth0", "up")
        // Reachable once duplicate address detection and the carrier allow.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if (try? namespace.exec(["ping", "-c", "1", "-W", "1", hostAddress], timeout: 5))?.status == 0 { return }
            usleep(100_000)
        }
        throw NamespaceError(message: "the client namespace cannot reach \(hostAddress)")
    }

    /// Runs `publishHostClientScript` here toward `host` (the host's veth address by default); its
    /// `ok …` line, or what went wrong.
    func client(_ mode: String, host: String? = nil, port: UInt16, count: Int) throws -> String {
        let result = try namespace.exec(["python3", "-c", publishHostClientScript, mode, host ?? hostAddress, "\(port)", "\(count)"], timeout: 90)
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

/// The client namespace's side of `strayTraffic`: a UDP socket and a TCP listener of its own
/// (their ports printed), `whoami` to the published UDP port (the answer printed: whom the guest
/// saw), then whatever the guest sends on its own: one datagram and one connection, each printed
/// with the address and port it came from.
let strayClientScript = #"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("", 0)); u.settimeout(20)
t = socket.socket(); t.bind(("", 0)); t.listen(4); t.settimeout(20)
print(u.getsockname()[1], t.getsockname()[1], flush=True)
u.sendto(b"whoami", (host, port)); print(u.recvfrom(100)[0].decode().removeprefix("::ffff:"), flush=True)
d, a = u.recvfrom(100); print(f"{d.decode()} {a[0]} {a[1]}", flush=True)
c, a = t.accept(); print(f"tcp {a[0]}", flush=True)
"""#

/// The guest's stray traffic to the client namespace (argv 1): a datagram from its port 5354 to the
/// client's UDP port (argv 2), then a connection to its TCP listener (argv 3).
let strayGuestScript = #"""
import socket, sys
host, uport, tport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("", 5354)); s.sendto(b"stray", (host, uport))
socket.create_connection((host, tport), timeout=20).close()
print("ok stray", flush=True)
"""#

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

    @Test("a dual-stack listener [::]: the client namespace over IPv6 reaches the guest from fd77:N::2, over IPv4 (IPv4-mapped on the listener) from 10.77.N.2, both families for tcp and udp")
    func dualStackListener() throws {
        let machine = try ClientMachine("pubcli6")
        let port = try freeTCPPort()
        let daemon = try natDaemon6("pubcli6g", ["--publish", "tcp:[::]:\(port):80", "--publish", "udp:[::]:\(port):5353"], address: "192.168.65.3/24")
        defer { _ = daemon.stop() }
        try daemon.namespace.ip("route", "add", "default", "via", "192.168.65.1")
        _ = try daemon.namespace.exec(["ping", "-c", "1", "-W", "2", "192.168.65.1"], timeout: 10)
        let guest = try daemon.startPublishGuest()
        defer { withExtendedLifetime(guest) {} }
        let (v4, v6) = (machine.hostAddress, machine.hostAddress6)
        #expect(try machine.client("tcp", host: v6, port: port, count: 1 << 20) == "ok tcp \(v6) \(machine.address6) \(1 << 20)")
        #expect(try machine.client("tcp", host: v4, port: port, count: 1 << 20) == "ok tcp \(v4) \(machine.address) \(1 << 20)")
        #expect(try machine.client("udp", host: v6, port: port, count: 50) == "ok udp \(v6) \(machine.address6) 50")
        #expect(try machine.client("udp", host: v4, port: port, count: 50) == "ok udp \(v4) \(machine.address) 50")
        // Loopback clients of either family: the alias of the listener's family, as before.
        #expect(try publishClient("tcp", "::1", port, 1000) == "ok tcp ::1 fd00:65::2 1000")
        #expect(try publishClient("tcp", "127.0.0.1", port, 1000) == "ok tcp 127.0.0.1 fd00:65::2 1000")
    }

    @Test("no way out for the guest: while the client's UDP socket is published, a datagram the guest sends it from another port, and a connection to the client namespace, go through the NAT as before (from the host's 10.77.N.1, not from the published port)")
    func strayTraffic() throws {
        let machine = try ClientMachine("pubstray")
        let port = try freeTCPPort()
        let (daemon, guest) = try clientAddressDaemon("pubstrayg", ["--publish", "udp:0.0.0.0:\(port):5353"])
        defer { _ = daemon.stop() }
        defer { withExtendedLifetime(guest) {} }
        let client = try LineProcess("/usr/sbin/ip", ["netns", "exec", machine.namespace.name, "python3", "-c", strayClientScript, machine.hostAddress, "\(port)"])
        defer { withExtendedLifetime(client) {} }
        let ports = client.readLine().split(separator: " ").map(String.init)
        try #require(ports.count == 2, "the client namespace's sockets did not start")
        #expect(client.readLine() == machine.address, "the guest did not see the client's own address")
        let sent = try daemon.namespace.exec(["python3", "-c", strayGuestScript, machine.address, ports[0], ports[1]], timeout: 40)
        #expect(sent.output.hasPrefix("ok stray"), "\(sent.output) \(sent.error)")
        let stray = client.readLine().split(separator: " ").map(String.init)
        #expect(stray.count == 3 && stray[0] == "stray" && stray[1] == machine.hostAddress && stray[2] != "\(port)", "\(stray)")
        #expect(client.readLine() == "tcp \(machine.hostAddress)")
    }
}

@Suite("vpnkit run --publish-source")
struct PublishSourceOptionTests {
    @Test("anything but client or alias is refused before the daemon starts, with the choices named")
    func refusesOtherValues() throws {
        let result = try run(vpnkitBinary(), ["run", "--publish-source", "guest", "--netns", "vk-none", "--tap", "tap0"], timeout: 20)
        #expect(result.status != 0)
        #expect(result.error.contains("--publish-source wants client or alias, got guest"), "\(result.error)")
    }
}
