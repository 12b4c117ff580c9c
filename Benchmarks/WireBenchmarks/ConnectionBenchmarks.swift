import Benchmark
import Foundation
import NIOCore
import NIOPosix

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
            // The options the NAT sets on each host socket (NAT+TCP.swift), synchronously as it does.
            channel.eventLoop.makeCompletedFuture {
                guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
                try options.setOption(.autoRead, value: false)
                try options.setOption(.allowRemoteHalfClosure, value: true)
                try options.setOption(.socketOption(.so_keepalive), value: 1)
                try options.setOption(.maxMessagesPerRead, value: 1)
            }
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
}
