import Benchmark
import NIOCore
import VPNKitARP
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv4
import VPNKitStack
import VPNKitTransport
import VPNKitUDP

let guestMAC = MACAddress(rawValue: 0x0250_0000_0003)
let guestIP = IPv4Address(192, 168, 65, 3)
let gatewayIP = IPv4Address(192, 168, 65, 1)

func echoRequestFrame(size: Int) -> ByteBuffer {
    var body = ByteBuffer.withHeadroom(capacity: size)
    body.writeRepeatingByte(0x61, count: size)
    ICMPv4Header.echo(reply: false, identifier: 1, sequenceNumber: 1).prepend(to: &body)
    IPv4Header(source: guestIP, destination: gatewayIP, protocol: .icmp, identification: 1).prepend(to: &body)
    EthernetHeader(destination: MACAddress(rawValue: 0x5A94_EFE4_0CEE), source: guestMAC, etherType: .ipv4).prepend(to: &body)
    return body
}

func arpRequestFrame() -> ByteBuffer {
    var buffer = ByteBuffer.withHeadroom(capacity: 0)
    ARPHeader(
        operation: .request, senderHardwareAddress: guestMAC, senderProtocolAddress: guestIP, targetHardwareAddress: .zero,
        targetProtocolAddress: gatewayIP
    ).prepend(to: &buffer)
    EthernetHeader(destination: .broadcast, source: guestMAC, etherType: .arp).prepend(to: &buffer)
    return buffer
}

/// A stack on one end of an in-memory pair, the benchmark playing the guest on the other end.
final class EchoRig {
    let link = InMemoryLink()
    let stack: NetworkStack
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var replies = 0

    init() {
        var configuration = StackConfiguration()
        configuration.gratuitousARPOnStart = false
        stack = NetworkStack(configuration: configuration)
        link.a.onFrame = { [unowned self] frame in
            self.stack.receive(frame, now: self.now)
            self.stack.drainOutput { self.link.a.send($0.joined) }
        }
        link.b.onFrame = { [unowned self] _ in self.replies += 1 }
    }

    func exchange(_ frame: ByteBuffer) {
        link.b.send(frame)
        link.deliver(until: now)
    }
}

let stackBenchmarks: @Sendable () -> Void = {
    for size in [56, 1472] {
        Benchmark("Stack: ICMP echo through the in-memory pair, \(size) B (echoes)", configuration: .init(scalingFactor: .kilo)) { benchmark in
            let rig = EchoRig()
            rig.exchange(arpRequestFrame())
            let request = echoRequestFrame(size: size)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { rig.exchange(request) }
            benchmark.stopMeasurement()
            precondition(rig.replies >= benchmark.scaledIterations.count, "replies missing: \(rig.replies)")
        }
    }
    Benchmark("Stack: ARP request answered through the in-memory pair (requests)", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let rig = EchoRig()
        let request = arpRequestFrame()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { rig.exchange(request) }
        benchmark.stopMeasurement()
        precondition(rig.replies >= benchmark.scaledIterations.count, "replies missing: \(rig.replies)")
    }
}
