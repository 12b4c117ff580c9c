import Benchmark
import Foundation
import NIOCore
import NIOPosix
import VPNKit

/// A TCP server on 127.0.0.1 with a blocking socket on a thread of its own that accepts and closes
/// every connection (plain C calls, no allocation), so that what a benchmark counts is the client's.
final class LoopbackAcceptor: @unchecked Sendable {
    let port: UInt16
    private let listener: Int32

    init() {
        let (listener, port) = bindLoopback(type: SOCK_STREAM)
        _ = listen(listener, 1024)
        self.listener = listener
        self.port = port
        Thread.detachNewThread {
            while true {
                let fd = accept(listener, nil, nil)
                if fd < 0 { return }
                close(fd)
            }
        }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

/// Connects `count` times, one after another, each a fresh channel closed at once, all on `loop`.
func connectAndClose(_ count: Int, to address: SocketAddress, on loop: any EventLoop) -> EventLoopFuture<Void> {
    guard count > 0 else { return loop.makeSucceededVoidFuture() }
    return ClientBootstrap(group: loop)
        .channelInitializer { channel in
            // What the NAT sets on each host socket, as it does.
            channel.eventLoop.makeCompletedFuture { try NATConfiguration().configureHostTCPChannel(channel) }
        }
        .connect(to: address)
        .flatMap { channel in channel.close() }
        .flatMap { connectAndClose(count - 1, to: address, on: loop) }
}

let connectionBenchmarks: @Sendable () -> Void = {
    // The floor of SwiftNIO's share of a NAT connection: a ClientBootstrap connect to 127.0.0.1 and a
    // close, with the NAT's channel options, on one event loop; no data, no stack. CPU time includes
    // the kernel's handshake and the acceptor thread's accept and close.
    Benchmark(
        "SwiftNIO alone: ClientBootstrap connect + close to 127.0.0.1, the NAT's options (connections)",
        configuration: .init(metrics: metrics + [.cpuUser, .cpuSystem], scalingFactor: .kilo)
    ) { benchmark in
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let acceptor = LoopbackAcceptor()
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: Int(acceptor.port))
        let loop = group.next()
        try await connectAndClose(100, to: address, on: loop).get()
        benchmark.startMeasurement()
        try await connectAndClose(benchmark.scaledIterations.count, to: address, on: loop).get()
        benchmark.stopMeasurement()
        acceptor.stop()
        try await group.shutdownGracefully()
    }

    // The same work with plain system calls (socket, connect, close; loopback completes the
    // handshake inside connect), for the difference SwiftNIO's machinery makes.
    Benchmark(
        "Plain sockets: connect + close to 127.0.0.1 (connections)",
        configuration: .init(metrics: metrics + [.cpuUser, .cpuSystem], scalingFactor: .kilo)
    ) { benchmark in
        let acceptor = LoopbackAcceptor()
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = acceptor.port.bigEndian
        func once() {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            _ = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            close(fd)
        }
        for _ in 0..<100 { once() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { once() }
        benchmark.stopMeasurement()
        acceptor.stop()
    }
}
