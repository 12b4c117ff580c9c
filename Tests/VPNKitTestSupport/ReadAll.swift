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
