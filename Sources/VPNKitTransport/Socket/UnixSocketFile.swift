// The socket files our listeners and datagram transports create (the qemu stream, vmnet and
// datagram sockets, and the daemon's stats socket), and their identity, so that what we remove is
// only ever the file we made.
//
// A socket file has its mode from the moment it exists: the bind runs with a umask of its own
// (`vpnkit_bind_unix`, in a short-lived child that shares our memory but not our umask), so there
// is no chmod(2) afterwards through a path somebody could have swapped, no moment in which the file
// is open to more users than asked, and the process's umask, which SwiftNIO's threads share, is
// never touched. The socket is bound at its real path (not in a private directory then moved),
// because a datagram socket's name is the source address its peer sees and answers to.
//
// Its identity is taken with lstat(2) right after the bind (fstat(2) on a unix socket describes
// the socket's own inode, not its file): a file that is not a socket of ours there by then fails
// the bind. Between the two calls only someone who may write the directory could swap the file,
// and they could remove ours anyway; keep these sockets in a directory others cannot write.

#if canImport(CVPNKitLinux)
import CVPNKitLinux
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A socket file we created: its path and identity (device and inode), so that closing removes our
/// file and never one that somebody put at the same path after us.
struct UnixSocketFile: Sendable {
    let path: String
    private let device: UInt64
    private let inode: UInt64

    /// What is at `path` now: nothing, the file we created, or another.
    private var current: (exists: Bool, ours: Bool) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return (false, false) }
        return (true, UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode)
    }

    /// Whether the file at `path` is still the one we created.
    var isStillBound: Bool { current.ours }

    /// Whether some other file is at `path` now (not ours, and not nothing).
    var isReplaced: Bool {
        let now = current
        return now.exists && !now.ours
    }

    /// Removes the file if it is still the one we created.
    func remove() {
        guard isStillBound else { return }
        unlink(path)
    }

    /// A non-blocking, close-on-exec unix socket of `type` (`SOCK_STREAM`, then listening with
    /// `backlog`, or `SOCK_DGRAM`) bound at `path`, its file created with the permission bits `mode`.
    /// What may be at `path` before: nothing; when `previous` is nil (a first bind), a socket file,
    /// removed as stale; when `previous` is given (binding again), `previous` itself, removed.
    /// Anything else stays and the call fails, as it does when the file does not come out with
    /// exactly `mode` (a default ACL on the directory). Returns the descriptor, which the caller
    /// owns, and the file.
    static func bind(path: String, type: Int32, mode: UInt32, backlog: Int32 = 128, previous: UnixSocketFile?) throws -> (fd: Int32, file: UnixSocketFile) {
        try clearTheWay(path, previous: previous)
        let fd = openSocket(type: type)
        guard fd >= 0 else { throw TransportError.systemCall("socket(AF_UNIX)", errno: errno) }
        guard bindSocket(fd, path: path, mode: mode) == 0 else {
            let error = errno
            close(fd)
            throw TransportError.systemCall(error == ENAMETOOLONG ? "bind \(path) (path empty or longer than sun_path)" : "bind \(path)", errno: error)
        }
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK, info.st_uid == geteuid() else {
            close(fd)
            throw UnixSocketFileError.replaced(path)
        }
        let file = UnixSocketFile(path: path, device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        do {
            let permissions = UInt32(info.st_mode) & 0o7777  // mode_t: UInt32 on Linux, UInt16 on Darwin
            guard permissions == mode else { throw UnixSocketFileError.mode(path, got: permissions, wanted: mode) }
            if type == Int32(SOCK_STREAM.rawValue), listen(fd, backlog) != 0 {
                throw TransportError.systemCall("listen \(path)", errno: errno)
            }
        } catch {
            close(fd)
            file.remove()
            throw error
        }
        return (fd, file)
    }

    /// A non-blocking, close-on-exec unix socket of `type`, or -1 with errno set.
    private static func openSocket(type: Int32) -> Int32 {
        #if os(Linux)
        return socket(AF_UNIX, type | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = Darwin.socket(AF_UNIX, type, 0)
        guard fd >= 0 else { return -1 }
        guard fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0, fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else {
            let error = errno
            close(fd)
            errno = error
            return -1
        }
        return fd
        #endif
    }

    /// bind(2) of `fd` at `path`, its file with the permission bits `mode`. Returns 0, or -1 with
    /// errno set (ENAMETOOLONG for a path that is empty or does not fit `sun_path`).
    ///
    /// On Linux the file has its mode from the moment it exists (`vpnkit_bind_unix`). Elsewhere
    /// there is no way to give a bind a umask of its own without changing the process's, so the
    /// file is created with `0777 & ~umask` and set to `mode` with chmod(2) right after: a weaker
    /// guarantee, for the moment between the two calls (keep the socket in a private directory).
    private static func bindSocket(_ fd: Int32, path: String, mode: UInt32) -> Int32 {
        #if os(Linux)
        return vpnkit_bind_unix(fd, path, mode)
        #else
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else {
            errno = ENAMETOOLONG
            return -1
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        address.sun_len = UInt8(MemoryLayout<sockaddr_un>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Darwin.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { return -1 }
        guard chmod(path, mode_t(mode)) == 0 else { return -1 }
        return 0
        #endif
    }

    /// Removes what may be at `path` before our socket is bound there: a stale socket (first bind)
    /// or our own earlier file (binding again). Anything else is left alone and makes this throw.
    private static func clearTheWay(_ path: String, previous: UnixSocketFile?) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        if let previous {
            guard previous.isStillBound else { throw UnixSocketFileError.replaced(path) }
        } else {
            guard info.st_mode & S_IFMT == S_IFSOCK else {
                throw TransportError.systemCall("bind \(path) (a file that is not a socket is in the way)", errno: EEXIST)
            }
        }
        guard unlink(path) == 0 || errno == ENOENT else { throw TransportError.systemCall("unlink \(path)", errno: errno) }
    }
}

/// Why a unix socket file could not be made (or made again).
enum UnixSocketFileError: Error, CustomStringConvertible {
    /// Binding again after a pause: the file at the path is not the one this listener made.
    case replaced(String)
    /// The file did not come out with the mode asked for (a default ACL on its directory).
    case mode(String, got: UInt32, wanted: UInt32)

    var description: String {
        switch self {
        case .replaced(let path): return "\(path) is no longer the socket file this listener bound"
        case .mode(let path, let got, let wanted):
            return "\(path) came out with mode \(String(got, radix: 8)), not \(String(wanted, radix: 8)) (a default ACL on its directory?); not serving it"
        }
    }
}
