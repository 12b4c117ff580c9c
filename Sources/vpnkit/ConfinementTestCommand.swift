// `vpnkit _confinement-test` (hidden): confines this short-lived process as the daemon would and
// prints what it can still do (`confinement self-test: execve=… open=…`). The seccomp filter's
// test runs it as a child process, so the filter never lands in the test runner.

import ArgumentParser

#if os(Linux)
import Logging
import NIOCore
import NIOPosix
#endif

struct ConfinementTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "_confinement-test", abstract: "Confine this process and report what it can still do.", shouldDisplay: false)

    @Flag(name: .customLong("seccomp")) var seccomp = false

    func run() async throws {
        #if os(Linux)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        try Confinement.confine(sandbox: false, seccomp: seccomp, keep: [], logger: Logger(label: "confinement-test"))
        print(Confinement.selfTest())
        // A thread that existed before the filter (SwiftNIO's): TSYNC filtered it too.
        print("event loop thread: " + (try await group.next().submit { Confinement.selfTest() }.get()))
        try await group.shutdownGracefully()
        #else
        throw ValidationError("confinement needs Linux")
        #endif
    }
}
