// Starting the daemon's stack, shared by `vpnkit run` and `vpnkit slirp4netns`.

import ArgumentParser
import Logging
import NIOCore
import NIOPosix
import VPNKit
#if os(Linux)
import VPNKitReactor
#endif

/// Where a daemon's data path runs (`--io-engine`).
enum IOEngine: String, ExpressibleByArgument, CaseIterable {
    /// SwiftNIO's event loop: host sockets are channels.
    case nio
    /// The daemon's own epoll loop (Linux): host sockets of its own.
    case reactor
}

enum DaemonStack {
    /// Starts a stack on an event loop of its own (one thread: the daemon's data path). When the link
    /// cannot be opened, logs `failure` with the error, releases the loop and exits with status 1.
    /// With `.reactor`, the loop is the daemon's own epoll reactor rather than SwiftNIO's.
    static func start(
        configuration: StackConfiguration, link: UserspaceStack.Link, logger: Logger, failure: String, engine: IOEngine
    ) async throws -> (UserspaceStack, any EventLoopGroup) {
        let group: any EventLoopGroup
        #if os(Linux)
        if engine == .reactor {
            do {
                group = try Reactor.start(name: "vpnkit-reactor")
            } catch {
                logger.error("\(failure): cannot start the reactor: \(error)")
                throw ExitCode(1)
            }
        } else {
            group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        }
        #else
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        #endif
        do {
            let stack = try await UserspaceStack.start(configuration: configuration, link: link, on: group.next(), logger: logger)
            return (stack, group)
        } catch {
            logger.error("\(failure): \(error)")
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }
    }
}
