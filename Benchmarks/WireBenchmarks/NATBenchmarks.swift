import Benchmark
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import VPNKit

/// A guest stack and a gateway stack with the NAT, joined in memory on one event loop, in front of a
/// plain-socket server on the host's 127.0.0.1 (a thread of this process): what a forwarded TCP
/// segment costs end to end, both stacks and the host socket included. One iteration = 1 MiB, so
/// bytes/s = the figure × 2^20 and mallocs per segment = mallocs per iteration / 724 (1 MiB / 1448 B
/// at MTU 1500).
final class NATRig: @unchecked Sendable {
    let gateway: UserspaceStack
    let guest: UserspaceStack
    let connection: AsyncTCPConnection
    let server: LoopbackServer
    let chunk = ByteBuffer(repeating: 0x5A, count: 1 << 20)

    init(toHost: Bool, mtu: Int) async throws {
        server = try LoopbackServer(source: !toHost)
        let (gatewayLink, guestLink) = UserspaceStack.Link.connectedPair(mtu: mtu)
        gateway = try await UserspaceStack.start(configuration: StackConfiguration(subnet: IPv4Subnet("192.168.65.0/24")!, mtu: mtu), link: gatewayLink)
        var nat = NATConfiguration()
        nat.hostAlias = IPAddress("192.168.65.2")
        try await gateway.attachNAT(nat, dns: nil)
        var configuration = StackConfiguration(
            macAddress: MACAddress("02:00:00:00:65:03")!, subnet: IPv4Subnet("192.168.65.0/24")!, gateway: IPv4Address("192.168.65.3")!, mtu: mtu)
        configuration.gratuitousARPOnStart = false
        guest = try await UserspaceStack.start(configuration: configuration, link: guestLink)
        connection = try await guest.connectTCP(to: IPAddress("192.168.65.2")!, port: server.port)
    }

    /// Guest → host: 1 MiB written by the guest, until the host server has read it all.
    func upload() async throws {
        let target = server.count + chunk.readableBytes
        try await connection.write(chunk)
        while server.count < target { await Task.yield() }
    }

    /// Host → guest: 1 MiB read by the guest from what the host server keeps sending.
    func download() async throws {
        var left = 1 << 20
        while left > 0, let data = try await connection.read() { left -= data.readableBytes }
    }

    func stop() async {
        await connection.abort()
        await guest.shutdown()
        await gateway.shutdown()
        server.stop()
    }
}

/// A socket of `type` bound to 127.0.0.1 on a port the kernel picks, and that port.
func bindLoopback(type: __socket_type) -> (Int32, UInt16) {
    let fd = socket(AF_INET, Int32(type.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return (fd, UInt16(bigEndian: address.sin_port))
}

/// A TCP server on 127.0.0.1 with blocking sockets on a thread of its own: it reads and counts
/// everything (discard), or writes without end (source), for one connection.
final class LoopbackServer: @unchecked Sendable {
    let port: UInt16
    private let listener: Int32
    private let received = NIOLockedValueBox(0)
    private let stopped = NIOLockedValueBox(false)
    private let waiter = NIOLockedValueBox<(count: Int, promise: EventLoopPromise<Void>)?>(nil)
    var count: Int { received.withLockedValue { $0 } }

    /// Succeeds once the server has read `target` bytes in all (a discard server).
    func waitForCount(_ target: Int, on loop: any EventLoop) -> EventLoopFuture<Void> {
        let promise = loop.makePromise(of: Void.self)
        waiter.withLockedValue { $0 = (target, promise) }
        checkWaiter(count)
        return promise.futureResult
    }

    private func checkWaiter(_ count: Int) {
        let due = waiter.withLockedValue { waiting -> EventLoopPromise<Void>? in
            guard let current = waiting, count >= current.count else { return nil }
            waiting = nil
            return current.promise
        }
        due?.succeed()
    }

    init(source: Bool) throws {
        let (listener, port) = bindLoopback(type: SOCK_STREAM)
        _ = listen(listener, 4)
        self.listener = listener
        self.port = port
        let received = self.received
        let stopped = self.stopped
        Thread.detachNewThread { [self] in
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            var buffer = [UInt8](repeating: 0x5A, count: 1 << 16)
            while !stopped.withLockedValue({ $0 }) {
                let n = buffer.withUnsafeMutableBytes { source ? write(fd, $0.baseAddress, $0.count) : read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                if !source { self.checkWaiter(received.withLockedValue { $0 += n; return $0 }) }
            }
            close(fd)
        }
    }

    func stop() {
        stopped.withLockedValue { $0 = true }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

/// A UDP echo server on 127.0.0.1 on a thread of its own.
final class LoopbackUDPEcho: @unchecked Sendable {
    let port: UInt16
    private let fd: Int32

    init() {
        let (fd, port) = bindLoopback(type: SOCK_DGRAM)
        self.fd = fd
        self.port = port
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 2048)
            var peer = sockaddr_storage()
            while true {
                var peerLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let n = buffer.withUnsafeMutableBytes { raw in
                    withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, raw.baseAddress, raw.count, 0, $0, &peerLength) } }
                }
                if n <= 0 { return }
                _ = buffer.withUnsafeBytes { raw in
                    withUnsafePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, raw.baseAddress, n, 0, $0, peerLength) } }
                }
            }
        }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
    }
}

let natBenchmarks: @Sendable () -> Void = {
    Benchmark("NAT: UDP round trip guest→host echo→guest, 32 B, both stacks and the host socket (round trips)", configuration: .init(scalingFactor: .one)) { benchmark in
        let echo = LoopbackUDPEcho()
        let (gatewayLink, guestLink) = UserspaceStack.Link.connectedPair(mtu: 1500)
        let gateway = try await UserspaceStack.start(configuration: StackConfiguration(subnet: IPv4Subnet("192.168.65.0/24")!), link: gatewayLink)
        var nat = NATConfiguration()
        nat.hostAlias = IPAddress("192.168.65.2")
        try await gateway.attachNAT(nat, dns: nil)
        var configuration = StackConfiguration(
            macAddress: MACAddress("02:00:00:00:65:03")!, subnet: IPv4Subnet("192.168.65.0/24")!, gateway: IPv4Address("192.168.65.3")!)
        configuration.gratuitousARPOnStart = false
        let guest = try await UserspaceStack.start(configuration: configuration, link: guestLink)
        let socket = try await guest.bindUDP(port: 40000)
        var replies = socket.messages.makeAsyncIterator()
        let payload = ByteBuffer(repeating: 0x61, count: 32)
        let host = IPAddress("192.168.65.2")!
        try await socket.send(payload, to: host, port: echo.port)
        _ = await replies.next()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try await socket.send(payload, to: host, port: echo.port)
            _ = await replies.next()
        }
        benchmark.stopMeasurement()
        await socket.close()
        await guest.shutdown()
        await gateway.shutdown()
        echo.stop()
    }

    for (toHost, label) in [(true, "guest→host"), (false, "host→guest")] {
        Benchmark("NAT: forwarded TCP \(label), MTU 1500, both stacks and the host socket (MiB; 724 segments each)", configuration: .init(scalingFactor: .one)) { benchmark in
            let rig = try await NATRig(toHost: toHost, mtu: 1500)
            if toHost { try await rig.upload() } else { try await rig.download() }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                if toHost { try await rig.upload() } else { try await rig.download() }
            }
            benchmark.stopMeasurement()
            await rig.stop()
        }
    }
}
