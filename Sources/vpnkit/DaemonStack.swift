// Starting the daemon's stack, shared by `vpnkit run` and `vpnkit slirp4netns`.

import ArgumentParser
import Logging
import NIOPosix
import VPNKit

enum DaemonStack {
    /// Starts a stack on an event loop of its own (one thread: the daemon's data path). When the link
    /// cannot be opened, logs `failure` with the error, releases the loop and exits with status 1.
    static func start(
        configuration: StackConfiguration, link: UserspaceStack.Link, logger: Logger, failure: String
    ) async throws -> (UserspaceStack, MultiThreadedEventLoopGroup) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
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
