#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whether accept(2) failing with `errno` means the process (or the system) is out of descriptors
/// or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): the connection stays queued and the listening socket
/// stays readable, so a listener that retried at once would spin. Both listeners (SwiftNIO's
/// `PausingListener` and the reactor's `ReactorListener`) pause instead.
public func acceptRanOutOfDescriptors(errno: Int32) -> Bool {
    errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM
}
