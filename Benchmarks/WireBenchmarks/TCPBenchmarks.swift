import Benchmark
import NIOCore
import VPNKitBase
import VPNKitStack
import VPNKitTCP
import VPNKitTransport

/// Two stacks on an in-memory pair (no faults, virtual time standing still): one sends a bulk stream
/// to the other, which reads everything at once. Measures the stack's own TCP cost per byte.
final class TCPBulkRig {
    let link: InMemoryLink
    let sender: NetworkStack
    let receiver: NetworkStack
    var socket: TCPSocket!
    var received = 0
    let chunk: ByteBuffer
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000)

    init(mtu: Int) throws {
        link = InMemoryLink(mtu: mtu)
        var a = StackConfiguration(mtu: mtu)
        a.gratuitousARPOnStart = false
        a.tcp.receiveBufferSize = 4 << 20
        a.tcp.sendBufferSize = 4 << 20
        var b = StackConfiguration(macAddress: guestMAC, subnet: IPv4SubnetDefault, gateway: guestIP, mtu: mtu)
        b.gratuitousARPOnStart = false
        b.tcp.receiveBufferSize = 4 << 20
        b.tcp.sendBufferSize = 4 << 20
        sender = NetworkStack(configuration: b)
        receiver = NetworkStack(configuration: a)
        chunk = ByteBuffer(repeating: 0x5A, count: 1 << 20)
        link.a.onFrame = { [unowned self] frame in self.receiver.receive(frame, now: self.now) }
        link.b.onFrame = { [unowned self] frame in self.sender.receive(frame, now: self.now) }
        try receiver.listenTCP(port: 9) { [unowned self] socket in
            socket.onReadable = { [unowned self, unowned socket] in
                while let data = socket.read(now: self.now) { self.received += data.readableBytes }
            }
        }
        socket = try sender.connectTCP(to: .v4(gatewayIP), port: 9, now: now)
        pump()
    }

    func pump() {
        var moved = true
        while moved {
            moved = false
            sender.drainOutput { link.b.send($0.joined); moved = true }
            receiver.drainOutput { link.a.send($0.joined); moved = true }
            link.deliver(until: now)
        }
    }

    /// Sends `bytes` through the connection.
    func transfer(_ bytes: Int) {
        let target = received + bytes
        var left = bytes
        while received < target {
            if left > 0 {
                var piece = chunk
                if piece.readableBytes > left { piece = piece.getSlice(at: piece.readerIndex, length: left)! }
                let n = socket.write(piece, now: now)
                left -= n
            }
            pump()
            now = now + .microseconds(50)
            sender.poll(now: now)
            receiver.poll(now: now)
        }
    }
}

let IPv4SubnetDefault = StackConfiguration().subnet

let tcpBenchmarks: @Sendable () -> Void = {
    for mtu in [1500, 65535] {
        // One iteration = 1 MiB through the connection: bytes/s = throughput × 2^20.
        Benchmark("TCP bulk between two stacks, MTU \(mtu) (MiB; × 8.39 = Mbit/s)", configuration: .init(scalingFactor: .one)) { benchmark in
            let rig = try TCPBulkRig(mtu: mtu)
            rig.transfer(1 << 20)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { rig.transfer(1 << 20) }
            benchmark.stopMeasurement()
        }
    }
}
