// A DHCP client that prints its lease.
//
//   dhcp-lease                              ask a DHCP server run in this process (an in-memory link)
//   dhcp-lease --tap tap0 [--netns NAME]    ask whatever DHCP server answers on a TAP device's link
//   options: --hostname NAME  --timeout SECONDS  --mac 02:xx:xx:xx:xx:xx
//
// The client runs its own stack: it broadcasts DISCOVER, probes the offered address with ARP
// (RFC 5227), takes the lease and configures the stack with it. Exit status 1 when no lease came.
import Foundation
import VPNKit

var arguments = Array(CommandLine.arguments.dropFirst())
@MainActor func option(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    defer { arguments.removeSubrange(index...index + 1) }
    return arguments[index + 1]
}
let device = option("--tap")
let namespace = option("--netns")
let hostName = option("--hostname") ?? "dhcp-lease-example"
let timeout = Int64(option("--timeout") ?? "30") ?? 30
let mac = MACAddress(option("--mac") ?? "02:00:00:00:01:01") ?? MACAddress(rawValue: 0x0200_0000_0101)

let clientLink: UserspaceStack.Link
var server: UserspaceStack?
if let device {
    clientLink = .tap(device: device, namespace: namespace)
} else {
    // No link given: a server of our own on the other end of an in-memory pair.
    let (serverLink, link) = UserspaceStack.Link.connectedPair()
    clientLink = link
    let gatewayStack = try await UserspaceStack.start(
        configuration: StackConfiguration(subnet: IPv4Subnet("10.77.0.0/24")!), link: serverLink)
    var settings = gatewayStack.defaultDHCPServerConfiguration
    settings.domainName = "example.internal"
    settings.leaseTime = .seconds(600)
    try await gatewayStack.serveDHCP(settings)
    server = gatewayStack
}

let client = try await UserspaceStack.start(configuration: .unconfigured(macAddress: mac), link: clientLink)
do {
    let lease = try await client.configureWithDHCP(hostName: hostName, timeout: .seconds(timeout))
    print("address   \(lease.address)/\(lease.subnet.prefixLength)")
    print("server    \(lease.serverIdentifier)")
    print("routers   \(lease.routers.map(\.description).joined(separator: " "))")
    print("dns       \(lease.dnsServers.map(\.description).joined(separator: " "))")
    if let domain = lease.domainName { print("domain    \(domain)") }
    if let mtu = lease.mtu { print("mtu       \(mtu)") }
    print("lease     \(lease.leaseTime.nanoseconds / 1_000_000_000) s (renew after \(lease.renewalTime.nanoseconds / 1_000_000_000) s)")
    let snapshot = try await client.snapshot()
    print("stack     \(snapshot.addresses.map(\.description).joined(separator: " ")) on \(snapshot.subnet)")
} catch {
    print("no lease: \(error)")
    await client.shutdown()
    await server?.shutdown()
    exit(1)
}
await client.shutdown()
await server?.shutdown()
