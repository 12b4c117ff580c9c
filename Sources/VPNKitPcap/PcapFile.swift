// Reading and writing capture files through libpcap.
//
// Why this file is safe: it is the only place that calls libpcap. Every handle is created in an
// initializer that throws on failure (so no method sees a nil handle) and closed exactly once in
// deinit. Packet bytes returned by pcap_next_ex are valid only until the next call on the handle, so
// they are copied into a ByteBuffer before `next()` returns; `caplen` bounds the copy. Writes pass a
// header filled from the buffer's own length. The types are not Sendable: a handle is used from one
// thread at a time.

import CPcap
public import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Capture link types (LINKTYPE_* values as stored in files).
public struct PcapLinkType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The LINKTYPE_ number as stored in a capture file's header.
    public var rawValue: Int32
    /// Wraps any LINKTYPE_ number; types without a named constant are kept.
    public init(rawValue: Int32) { self.rawValue = rawValue }
    /// Ethernet II frames (LINKTYPE_ETHERNET, 1), the stack's own link type and the writer's default.
    public static let ethernet = PcapLinkType(rawValue: 1)
    /// Raw IP, no link header (LINKTYPE_RAW; libpcap reports it as DLT_RAW).
    public static let raw = PcapLinkType(rawValue: 101)
    /// Raw IPv4 (LINKTYPE_IPV4).
    public static let ipv4 = PcapLinkType(rawValue: 228)
    /// The DLT_ value libpcap's API takes for this link type (they differ only for raw IP).
    var datalink: Int32 { self == .raw ? DLT_RAW : rawValue }

    /// Maps libpcap's DLT_ value back to the file's LINKTYPE_ value.
    init(datalink: Int32) { self.rawValue = datalink == DLT_RAW ? 101 : datalink }

    /// A short name such as `Ethernet` or `raw IP`, or `link type` and the number for other types.
    public var description: String {
        switch self {
        case .ethernet: return "Ethernet"
        case .raw: return "raw IP"
        case .ipv4: return "raw IPv4"
        default: return "link type \(rawValue)"
        }
    }
}

/// Errors from opening, reading or writing captures.
public enum PcapError: Error, Sendable, CustomStringConvertible {
    /// The file at `path` could not be opened for reading or is not a capture libpcap understands; `reason`
    /// is libpcap's message.
    case cannotOpen(path: String, reason: String)
    /// Reading a record failed partway through the file (for example a truncated file); `reason` is libpcap's
    /// message.
    case readFailed(reason: String)
    /// The capture file at `path` could not be created; `reason` says why.
    case cannotWrite(path: String, reason: String)

    /// A one-line message naming the path (when there is one) and libpcap's reason.
    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason): return "cannot open capture \(path): \(reason)"
        case .readFailed(let reason): return "capture read failed: \(reason)"
        case .cannotWrite(let path, let reason): return "cannot write capture \(path): \(reason)"
        }
    }
}

/// One captured frame.
public struct PcapRecord: Sendable {
    /// The capture time: whole seconds since the Unix epoch (see `nanoseconds` for the fraction).
    public var seconds: Int64
    /// The fraction of the second, in nanoseconds (0..<1_000_000_000).
    public var nanoseconds: Int32
    /// The captured bytes (may be shorter than `originalLength` when the capture was truncated).
    public var data: ByteBuffer
    /// The frame's length on the wire.
    public var originalLength: Int

    /// Creates a record; `originalLength` defaults to the number of readable bytes in `data` (an untruncated
    /// capture).
    public init(seconds: Int64, nanoseconds: Int32, data: ByteBuffer, originalLength: Int? = nil) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
        self.data = data
        self.originalLength = originalLength ?? data.readableBytes
    }

    /// The timestamp in nanoseconds since the epoch.
    public var timestampNanoseconds: Int64 { seconds &* 1_000_000_000 &+ Int64(nanoseconds) }
}

/// Reads pcap and pcapng files (any link type libpcap knows; `linkType` says which).
public final class PcapReader: Sequence, IteratorProtocol {
    private let handle: OpaquePointer
    /// The path the reader was opened with.
    public let path: String
    /// The file's link type.
    public let linkType: PcapLinkType
    /// The snapshot length recorded in the file.
    public let snapshotLength: Int
    private let allocator = ByteBufferAllocator()
    /// Set when reading stopped because of an error (a truncated file, say) rather than at the end.
    public private(set) var readError: PcapError?

    /// Opens the capture file at `path`, asking libpcap for nanosecond timestamps whatever the file stores.
    ///
    /// - Throws: `PcapError.cannotOpen` when the file cannot be opened or is not a pcap or pcapng file.
    public init(path: String) throws(PcapError) {
        var errbuf = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard
            let handle = pcap_open_offline_with_tstamp_precision(
                path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errbuf)
        else {
            throw .cannotOpen(path: path, reason: Self.string(errbuf))
        }
        self.handle = handle
        self.path = path
        self.linkType = PcapLinkType(datalink: pcap_datalink(handle))
        self.snapshotLength = Int(pcap_snapshot(handle))
    }

    deinit { pcap_close(handle) }

    /// The next record, or nil at the end of the file or after a read error (see `readError`).
    public func next() -> PcapRecord? {
        guard readError == nil else { return nil }
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        let status = pcap_next_ex(handle, &header, &data)
        switch status {
        case 1:
            guard let header, let data else { return nil }
            let caplen = Int(header.pointee.caplen)
            var buffer = allocator.buffer(capacity: caplen)
            buffer.writeBytes(UnsafeRawBufferPointer(start: data, count: caplen))
            return PcapRecord(
                seconds: Int64(header.pointee.ts.tv_sec), nanoseconds: Int32(header.pointee.ts.tv_usec),
                data: buffer, originalLength: Int(header.pointee.len))
        case PCAP_ERROR_BREAK:
            return nil
        default:
            readError = .readFailed(reason: String(cString: pcap_geterr(handle)))
            return nil
        }
    }

    static func string(_ errbuf: [CChar]) -> String {
        errbuf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

/// Writes pcap files (nanosecond timestamps).
public final class PcapWriter {
    private let dead: OpaquePointer
    private let dumper: OpaquePointer
    /// The path of the file being written.
    public let path: String
    /// The link type recorded in the file header; every record written should be a frame of this type.
    public let linkType: PcapLinkType

    /// Creates (or truncates) the pcap file at `path` and writes its header. `snapshotLength` is the largest
    /// record length, in bytes, announced in the header; it is not enforced on writes.
    ///
    /// - Throws: `PcapError.cannotWrite` when the file cannot be created.
    public init(path: String, linkType: PcapLinkType = .ethernet, snapshotLength: Int = 262_144) throws(PcapError) {
        guard
            let dead = pcap_open_dead_with_tstamp_precision(
                linkType.datalink, Int32(snapshotLength), UInt32(PCAP_TSTAMP_PRECISION_NANO))
        else {
            throw .cannotWrite(path: path, reason: "pcap_open_dead failed")
        }
        guard let dumper = pcap_dump_open(dead, path) else {
            let reason = String(cString: pcap_geterr(dead))
            pcap_close(dead)
            throw .cannotWrite(path: path, reason: reason)
        }
        self.dead = dead
        self.dumper = dumper
        self.path = path
        self.linkType = linkType
    }

    deinit {
        pcap_dump_close(dumper)
        pcap_close(dead)
    }

    /// Appends one record.
    public func write(_ record: PcapRecord) {
        var header = pcap_pkthdr()
        header.ts.tv_sec = Int(record.seconds)
        header.ts.tv_usec = Int(record.nanoseconds)
        header.caplen = UInt32(record.data.readableBytes)
        header.len = UInt32(max(record.originalLength, record.data.readableBytes))
        // pcap_dump's first argument is the dumper handle passed as u_char*.
        let user = UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self)
        record.data.withUnsafeReadableBytes { raw in
            if let base = raw.baseAddress?.assumingMemoryBound(to: UInt8.self) {
                pcap_dump(user, &header, base)
            } else {
                var empty: UInt8 = 0  // an empty record still needs a valid pointer
                pcap_dump(user, &header, &empty)
            }
        }
    }

    /// Flushes buffered records to the file.
    public func flush() { pcap_dump_flush(dumper) }
}
