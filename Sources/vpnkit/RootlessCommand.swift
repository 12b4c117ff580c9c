// `vpnkit run -- COMMAND` as an ordinary user: the command gets a user namespace and a network
// namespace of its own (as `unshare -rn` or `pasta -- CMD` give), with no privilege on the host, no
// setuid helper and no subordinate ids. Linux only.
#if os(Linux)

import CVPNKitLinux
@preconcurrency import Dispatch
import Foundation
import Logging
import VPNKit

/// The command's process, forked into new user, network and mount namespaces (spawn.c), waiting
/// until the daemon has opened and configured tap0 there (`go`), then exec'ing the command as the
/// caller: the caller's uid and gid are mapped to themselves. Its resolv.conf (the gateway's DNS) is
/// a file in a private directory, bind-mounted over /etc/resolv.conf in the command's mount
/// namespace and removed when the daemon ends.
final class RootlessCommand: @unchecked Sendable {  // the descriptors and flags are touched on one task
    let arguments: [String]
    let pid: pid_t
    let device = "tap0"
    private let directory: String
    private var goDescriptors: [Int32]
    private var reapedStatus: Int32?
    private let lock = NSLock()
    private var reaped: Int32? { lock.withLock { reapedStatus } }
    private let queue = DispatchQueue(label: "vpnkit.rootless-child")

    var netnsPath: String { "/proc/\(pid)/ns/net" }
    var usernsPath: String { "/proc/\(pid)/ns/user" }

    /// Forks the child and waits until it has its namespaces. `resolvConf` is the text of its
    /// /etc/resolv.conf.
    init(arguments: [String], resolvConf: String) throws {
        self.arguments = arguments
        let base = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"].flatMap { access($0, W_OK) == 0 ? $0 : nil } ?? "/tmp"
        var template = Array("\(base)/vpnkit-run-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw GuestNamespaceError(message: "cannot make a directory under \(base): errno \(errno)")
        }
        directory = String(cString: made)
        let resolvPath = directory + "/resolv.conf"
        do {
            try resolvConf.write(toFile: resolvPath, atomically: true, encoding: .utf8)
        } catch {
            rmdir(directory)
            throw GuestNamespaceError(message: "cannot write \(resolvPath): \(error)")
        }
        var descriptors: [Int32] = [-1, -1]
        var step: UnsafePointer<CChar>?
        // A NULL-terminated argument vector, built before the fork.
        var cArguments: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for argument in cArguments { free(argument) } }
        let child = cArguments.withUnsafeMutableBufferPointer { argv in
            descriptors.withUnsafeMutableBufferPointer { fds in
                vpnkit_spawn_unshared(argv.baseAddress, resolvPath, fds.baseAddress, &step)
            }
        }
        guard child > 0 else {
            let err = errno
            unlink(resolvPath)
            rmdir(directory)
            throw GuestNamespaceError(message: "\(step.map { String(cString: $0) } ?? "spawn"): \(String(cString: strerror(err)))")
        }
        pid = child
        goDescriptors = descriptors
    }

    /// Lets the child go on: it mounts the resolv.conf and execs the command. Throws when that
    /// failed (the child then exits 127).
    func go() throws {
        guard goDescriptors.count == 2 else { return }
        var step: UnsafePointer<CChar>?
        let result = goDescriptors.withUnsafeBufferPointer { vpnkit_spawn_go($0.baseAddress, &step) }
        goDescriptors = []
        guard result == 0 else {
            let err = errno
            throw GuestNamespaceError(message: "\(step.map { String(cString: $0) } ?? "go"): \(String(cString: strerror(err)))")
        }
    }

    /// Waits for the command to exit, forwarding `signals` to it; if `other` fires first (the guest
    /// link ended, the exit descriptor), the command is sent SIGTERM and, after a grace, SIGKILL.
    /// Returns its exit status (128 + N for signal N).
    func wait(forwarding signals: SignalWatcher, or other: StopReason) async -> (status: Int32, reason: String) {
        let pid = self.pid
        let forwarding = Task {
            for await number in signals.stream { kill(pid, number) }
        }
        let exited = reap()
        let reason = await withTaskGroup(of: String.self) { group in
            group.addTask { _ = await exited.value; return "the command exited" }
            group.addTask { for await reason in other.stream { return reason }; return "link ended" }
            let first = await group.next() ?? "stopped"
            group.cancelAll()
            return first
        }
        if reaped == nil {
            kill(pid, SIGTERM)
            let killer = Task {
                try await Task.sleep(for: .seconds(2))
                kill(pid, SIGKILL)
            }
            _ = await exited.value
            killer.cancel()
        }
        forwarding.cancel()
        return (await exited.value, reason)
    }

    /// waitpid on a queue of its own (it blocks): the exit status, 128 + N for signal N.
    private func reap() -> Task<Int32, Never> {
        let pid = self.pid
        return Task<Int32, Never> {
            await withCheckedContinuation { continuation in
                queue.async {
                    var status: Int32 = 0
                    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                    // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import.
                    let signal = status & 0x7f
                    let result = signal == 0 ? (status >> 8) & 0xff : 128 + signal
                    self.lock.withLock { self.reapedStatus = result }
                    continuation.resume(returning: result)
                }
            }
        }
    }

    /// Ends a child that was never told to go (or whose command failed to start), reaps it and
    /// removes the resolv.conf; safe to call more than once.
    func remove() {
        if goDescriptors.count == 2 {
            goDescriptors.withUnsafeBufferPointer { vpnkit_spawn_abandon($0.baseAddress) }
            goDescriptors = []
        }
        if reaped == nil, kill(pid, 0) == 0 {
            // Only a child that has not been reaped by `wait` is still ours to reap here.
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == 0 {
                kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            }
        }
        unlink(directory + "/resolv.conf")
        rmdir(directory)
    }

    /// The resolv.conf for the command: the gateway's DNS, its IPv6 address second when IPv6 is on.
    static func resolvConf(gateway: IPv4Address, gateway6: IPv6Address?, domain: String?) -> String {
        var text = "nameserver \(gateway)\n"
        if let gateway6 { text += "nameserver \(gateway6)\n" }
        if let domain { text += "search \(domain)\n" }
        return text
    }
}

#endif  // os(Linux)
