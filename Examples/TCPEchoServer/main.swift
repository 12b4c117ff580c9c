// A TCP echo server with its own TCP/IP stack on a TAP device: the kernel on the other side of the
// device connects to it like to any host on the link.
//
//   tcp-echo-server --tap tap0 [--netns NAME] [--address 10.0.0.1/24] [--port 7] [--mtu 1500] [--connections N]
//
// Set the device up on the kernel's side (in NAME when given), e.g.
//   ip -n NAME addr add 10.0.0.2/24 dev tap0 && ip -n NAME link set tap0 up
// then `nc 10.0.0.1 7` there. With --connections N it exits after serving N connections.
// Needs CAP_NET_ADMIN (root) to open the TAP device.
import Foundation
import VPNKit

var arguments = Array(CommandLine.arguments.dropFirst())
@MainActor func option(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    defer { arguments.removeSubrange(index...index + 1) }
    return arguments[index + 1]
}
func fail(_ text: String) -> Never {
    FileHandle.standardError.write(Data("tcp-echo-server: \(text)\n".utf8))
    exit(2)
}

guard let device = option("--tap") else { fail("--tap DEVICE is required") }
let namespace = option("--netns")
let cidr = option("--address") ?? "10.0.0.1/24"
guard let subnet = IPv4Subnet(cidr), let address = IPv4Address(String(cidr.split(separator: "/")[0])) else { fail("bad --address \(cidr)") }
guard let port = UInt16(option("--port") ?? "7") else { fail("bad --port") }
guard let mtu = Int(option("--mtu") ?? "1500") else { fail("bad --mtu") }
let connectionsToServe = option("--connections").flatMap(Int.init)

let stack: UserspaceStack
do {
    stack = try await UserspaceStack.start(
        configuration: StackConfiguration(subnet: subnet, gateway: address, mtu: mtu),
        link: .tap(device: device, namespace: namespace, mtu: mtu))
} catch {
    fail("cannot start on \(device): \(error)")
}
let listener = try await stack.listenTCP(port: port)
print("echoing on \(address):\(port) over \(device)\(namespace.map { " in \($0)" } ?? "")")

// Echo every connection in a task of its own; reads pull from the stack only when the previous
// write completed, so a client that does not read closes its own window (backpressure).
await withTaskGroup(of: Void.self) { group in
    var served = 0
    for await connection in listener {
        served += 1
        let number = served
        group.addTask {
            var echoed = 0
            do {
                while let bytes = try await connection.read() {
                    echoed += bytes.readableBytes
                    try await connection.write(bytes)
                }
                await connection.shutdown()
            } catch {
                print("connection \(number): \(error)")
            }
            print("connection \(number) from \(connection.remoteAddress):\(connection.remotePort): echoed \(echoed) bytes")
        }
        if let connectionsToServe, served >= connectionsToServe { break }
    }
    await group.waitForAll()
}
let snapshot = try await stack.snapshot()
print("tcp connections opened \(snapshot.counters[.tcpConnectionsOpened]), segments in \(snapshot.counters[.tcpSegmentsReceived]) out \(snapshot.counters[.tcpSegmentsSent])")
await stack.shutdown()
