public import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads a pipe to its end with read(2), retrying EINTR. (Foundation's `readDataToEndOfFile` traps
/// when a signal — a child exiting, say — interrupts its read.)
public func readAll(_ handle: FileHandle) -> Data {
    let fd = handle.fileDescriptor
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 {
            data.append(contentsOf: buffer[0..<n])
        } else if n < 0 && errno == EINTR {
            continue
        } else {
            return data
        }
    }
}

/// A whole file as text, read with read(2) to its end; nil when it cannot be opened. For /proc
/// files: Foundation's `String(contentsOfFile:)` trusts their size (0) and returns only the first
/// 4 KiB, so a busy machine's /proc/net/tcp loses all but its first 27 sockets.
public func readProcFile(_ path: String) -> String? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    return String(decoding: readAll(handle), as: UTF8.self)
}
