#if os(Linux)
import CVPNKitLinux
#endif
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// glibc's allocator serves blocks above its mmap threshold (128 KiB at start) with fresh `mmap`s and
/// hands them back with `munmap` on free; free memory at the top of the heap above the trim threshold
/// goes back to the kernel too. The data path allocates and frees buffers of 64–256 KiB thousands of
/// times a second (a TAP frame at MTU 65520, a host socket read), so with the defaults every one of
/// them page-faults its memory in again and is zeroed by the kernel, the largest cost of a bulk
/// host→guest transfer at a large MTU.
///
/// The daemon keeps such buffers on the heap instead: blocks up to 4 MiB come from the heap, and up to
/// 64 MiB of free heap is kept for reuse before any is returned. What this costs is resident memory
/// that stays after a burst (bounded by the trim threshold), not memory that grows. A `MALLOC_*_`
/// environment variable set by the user wins: then nothing is changed.
/// glibc only: elsewhere `apply` does nothing.
enum MallocTuning {
    static let mmapThreshold: Int32 = 4 << 20
    static let trimThreshold: Int32 = 64 << 20

    static func apply(logger: Logger) {
        #if os(Linux)
        let environment = ProcessInfoLite.environmentNames
        guard !environment.contains(where: { $0.hasPrefix("MALLOC_") }) else {
            logger.debug("malloc tuning skipped: MALLOC_* set in the environment")
            return
        }
        if vpnkit_tune_malloc(mmapThreshold, trimThreshold) != 1 { logger.notice("malloc tuning not applied (mallopt refused it)") }
        #endif
    }
}

#if os(Linux)
/// The names of the process's environment variables, without Foundation.
enum ProcessInfoLite {
    static var environmentNames: [String] {
        var names: [String] = []
        var cursor = environ
        while let entry = cursor.pointee {
            let text = String(cString: entry)
            names.append(String(text.prefix { $0 != "=" }))
            cursor += 1
        }
        return names
    }
}
#endif
