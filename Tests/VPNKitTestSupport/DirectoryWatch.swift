// What happens to the names in a directory, as inotify(7) reports it: used to check that a socket
// file is created with its mode (one IN_CREATE, and never an IN_ATTRIB from a chmod after).
//
// The only pointers are to the bytes of a local array, for the length of one read(2) with its count
// and of one 4-byte load at an offset checked against what was read.

#if canImport(Glibc)
import Glibc
#endif

/// Watches one directory for created, attribute-changed, moved-in and deleted names. Not thread-safe.
public final class DirectoryWatch {
    /// One event: the name it concerns (empty for the directory itself) and its IN_* mask.
    public struct Event: Sendable, Equatable, CustomStringConvertible {
        public var name: String
        public var mask: UInt32

        public var description: String {
            let kinds = [(UInt32(IN_CREATE), "create"), (UInt32(IN_ATTRIB), "attrib"), (UInt32(IN_MOVED_TO), "moved_to"),
                         (UInt32(IN_DELETE), "delete"), (UInt32(IN_MOVED_FROM), "moved_from")]
            return "\(name):" + kinds.filter { mask & $0.0 != 0 }.map(\.1).joined(separator: "+")
        }
    }

    private let fd: Int32

    /// Starts watching `directory`.
    public init(_ directory: String) throws {
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw WatchError(call: "inotify_init1", errno: errno) }
        let mask = UInt32(IN_CREATE | IN_ATTRIB | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)
        guard inotify_add_watch(fd, directory, mask) >= 0 else {
            let error = errno
            close(fd)
            throw WatchError(call: "inotify_add_watch \(directory)", errno: error)
        }
    }

    deinit { close(fd) }

    /// The events queued so far (none when nothing happened), oldest first.
    public func events() -> [Event] {
        var events: [Event] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { return events }
            var offset = 0
            // struct inotify_event: wd, mask, cookie, len (host order), then len bytes of name.
            func word(_ at: Int) -> UInt32 { buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) } }
            while offset + 16 <= n {
                let mask = word(offset + 4)
                let length = Int(word(offset + 12))
                guard offset + 16 + length <= n else { break }
                let name = buffer[(offset + 16)..<(offset + 16 + length)].prefix { $0 != 0 }
                events.append(Event(name: String(decoding: name, as: UTF8.self), mask: mask))
                offset += 16 + length
            }
        }
    }
}

/// inotify could not be set up.
public struct WatchError: Error, CustomStringConvertible {
    public var call: String
    public var errno: Int32
    public var description: String { "\(call) failed: errno \(errno)" }
}
