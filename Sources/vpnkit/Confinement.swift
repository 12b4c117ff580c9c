// Confinement after setup: the seccomp filter (SeccompFilter.swift) and the sandbox, a mount
// namespace whose root is an empty read-only tmpfs holding only the files the daemon still reads
// (resolv.conf and hosts, bound read-only), and capabilities dropped.
//
// Why the sandbox is made in two steps. Linux keeps the mount namespace, the root directory and the
// capabilities per thread; unshare(CLONE_NEWNS) moves only the calling thread, and entering a user
// namespace (what an unprivileged process needs to own a mount namespace) is refused to a process
// with more than one thread. By the time the daemon is set up, SwiftNIO, Dispatch and the Swift
// runtime have started threads. So `prepareIfRequested` runs first thing in `main`, while the
// process has one thread, and gives the process a mount namespace of its own (a slave of the host's,
// so setup still sees everything); every later thread starts in it. After setup, `confine` pivots
// that namespace's root, which moves every thread at once (they share one root directory).
//
// The mount namespace needs CAP_SYS_ADMIN. Unprivileged, `vpnkit slirp4netns` does as slirp4netns
// does, but at startup rather than after setup (slirp4netns has one thread): it enters the user
// namespace that owns the guest's network namespace (its owner has every capability there), so the
// TAP and --configure children find themselves in it already and enter only the network namespace.
// `vpnkit run` unprivileged has no such namespace and is refused --sandbox with a message. Capabilities are per thread too, and no system call changes
// another thread's: each thread is asked by a signal to drop its own (confine.c), and /proc tells
// when all have.

#if os(Linux)
import CVPNKitLinux
import Foundation
import Glibc
import Logging

enum Confinement {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The files the daemon reads after setup (the DNS service follows resolv.conf and hosts).
    static let keptFiles = ["/etc/resolv.conf", "/etc/hosts"]

    /// In `main`, before any thread exists: when `arguments` ask for the sandbox, a mount namespace
    /// of our own (unprivileged, in slirp4netns mode: inside the user namespace owning the guest's
    /// network namespace). Failures are reported later, by `confine`.
    static func prepareIfRequested(_ arguments: [String], slirp4netns: Bool) {
        let options = arguments.prefix { $0 != "--" }
        var namespaces: (net: String, user: String?)?
        if slirp4netns || options.first == "slirp4netns" {
            guard options.contains("--enable-sandbox") else { return }
            // Parsing starts no thread; validation is left for later.
            guard let command = try? Slirp4netnsCommand.parse(Array(slirp4netns ? arguments : Array(arguments.dropFirst()))) else { return }
            namespaces = command.namespacePaths
        } else if options.first == "run" {
            guard options.contains("--sandbox") || options.contains("--enable-sandbox"), !options.contains("--no-sandbox") else { return }
        } else {
            return
        }
        // Unprivileged without a guest namespace to take a user namespace from: refused later.
        if geteuid() != 0 && namespaces == nil { return }
        var step: UnsafePointer<CChar>?
        if vpnkit_sandbox_prepare(namespaces?.user, namespaces?.net, &step) != 0 {
            let code = errno
            preparationFailure = "\(step.map { String(cString: $0) } ?? "prepare"): \(String(cString: strerror(code)))"
        }
    }

    /// Why the startup step failed, if it did. Written once in `main` before any other thread exists.
    nonisolated(unsafe) private static var preparationFailure: String?

    /// Why `--enable-sandbox` cannot work in this process, or nil.
    static var sandboxUnavailableReason: String? {
        if vpnkit_sandbox_prepared() != 0 { return nil }
        if let preparationFailure { return "cannot sandbox: \(preparationFailure)" }
        if geteuid() != 0 {
            return "--sandbox needs root here: the sandbox's mount namespace needs CAP_SYS_ADMIN, which an unprivileged process gets only by entering a user namespace, and `vpnkit slirp4netns` (which enters the guest's) is the mode that does"
        }
        return "cannot sandbox: the mount namespace was not made at startup"
    }

    /// After setup: the sandbox (when `sandbox`), then the seccomp filter (when `seccomp`), then the
    /// self-test when VPNKIT_CONFINEMENT_SELFTEST=1.
    static func confine(sandbox: Bool, seccomp: Bool, keep: [String], logger: Logger) throws(Failure) {
        if sandbox {
            if let reason = sandboxUnavailableReason { throw Failure(description: reason) }
            // The other threads first, while /proc (which tells them apart) is still there; this
            // one keeps CAP_SYS_ADMIN for pivot_root, then drops its own.
            var undropped: Int32 = 0
            if vpnkit_drop_capabilities_other_threads(1, &undropped) != 0 {
                throw Failure(description: "cannot drop capabilities in every thread: \(String(cString: strerror(errno)))")
            }
            if undropped != 0 { throw Failure(description: "cannot drop capabilities in every thread: \(undropped) kept theirs") }
            try enterSandbox(keep: keep)
            try dropCapabilities()
            logger.info("sandboxed: the root is an empty read-only tmpfs with \(keep.joined(separator: ", ")); capabilities dropped (CAP_NET_BIND_SERVICE kept)")
        }
        if seccomp {
            do {
                try SeccompFilter.install()
            } catch {
                throw Failure(description: error.description)
            }
            logger.info("seccomp filter installed on every thread: \(SeccompFilter.denied.count) system calls and namespace-making clones refused")
        }
        if ProcessInfo.processInfo.environment["VPNKIT_CONFINEMENT_SELFTEST"] == "1" {
            logger.notice("\(selfTest())")
        }
    }

    /// Unsafe pointers here only: C strings (strdup'd, freed after the call) handed as an array the
    /// call reads and does not keep.
    private static func enterSandbox(keep: [String]) throws(Failure) {
        var cStrings = keep.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        var step: UnsafePointer<CChar>?
        let rc = cStrings.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { vpnkit_sandbox_enter($0.baseAddress, Int32($0.count), &step) }
        }
        if rc != 0 {
            let code = errno
            throw Failure(description: "cannot sandbox: \(step.map { String(cString: $0) } ?? "enter"): \(String(cString: strerror(code)))")
        }
    }

    private static func dropCapabilities() throws(Failure) {
        if vpnkit_drop_capabilities(1) != 0 {
            throw Failure(description: "cannot drop capabilities: \(String(cString: strerror(errno)))")
        }
    }

    /// What a confined daemon can no longer do: one line, `confinement self-test: execve=… open=…`,
    /// each an errno name or `ok`.
    static func selfTest() -> String {
        let exec = vpnkit_try_exec("/bin/true")
        let fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC)
        let openResult = fd >= 0 ? "ok" : name(of: errno)
        if fd >= 0 { close(fd) }
        return "confinement self-test: execve=\(exec == 0 ? "ok" : name(of: exec)) open=\(openResult)"
    }

    static func name(of code: Int32) -> String {
        switch code {
        case EPERM: return "EPERM"
        case ENOENT: return "ENOENT"
        case EACCES: return "EACCES"
        case ENOSYS: return "ENOSYS"
        default: return "errno \(code)"
        }
    }
}
#endif
