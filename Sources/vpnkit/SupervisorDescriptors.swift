// The descriptors a supervisor hands a daemon so it need not poll: one to hear "ready" on, one whose
// end (or any byte) tells the daemon to exit. slirp4netns's -r/-e, and `vpnkit run`'s too.

@preconcurrency import Dispatch
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

final class SupervisorDescriptors: @unchecked Sendable {  // set at init, the source touched once
    let readyFD: Int32?
    let exitFD: Int32?
    private var exitSource: (any DispatchSourceRead)?
    private let queue = DispatchQueue(label: "vpnkit.exit-fd")

    init(readyFD: Int32?, exitFD: Int32?) {
        self.readyFD = readyFD
        self.exitFD = exitFD
        // Not inherited by anything we start.
        for fd in [readyFD, exitFD].compactMap({ $0 }) { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }

    /// Writes "1" to the ready descriptor and closes it (as slirp4netns does).
    func signalReady(logger: Logger) {
        guard let readyFD else { return }
        var one: UInt8 = UInt8(ascii: "1")
        var written: Int
        repeat { written = write(readyFD, &one, 1) } while written < 0 && errno == EINTR
        if written != 1 { logger.warning("cannot write to the ready descriptor \(readyFD): errno \(errno)") }
        close(readyFD)
    }

    /// Signals `stop` when the exit descriptor becomes readable: a byte, end of file, or an error.
    func watchExit(_ stop: StopReason) {
        guard let exitFD else { return }
        let source = DispatchSource.makeReadSource(fileDescriptor: exitFD, queue: queue)
        source.setEventHandler { [weak self] in
            stop.signal("the exit descriptor \(exitFD) became readable")
            self?.exitSource?.cancel()
        }
        source.resume()
        exitSource = source
    }
}

/// The daemon's pid in a file, written atomically (Foundation writes a temporary file beside it and
/// renames it into place, so a reader never sees it half written), removed at exit.
struct PidFile {
    let path: String

    static func write(_ path: String) throws -> PidFile {
        try Data("\(getpid())\n".utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        return PidFile(path: path)
    }

    func remove() { unlink(path) }
}
