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
#endif

/// Capture link types (LINKTYPE_* values as stored in files).
public struct PcapLinkType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public static let ethernet = PcapLinkType(rawValue: 1)
    /// Raw IP, no link header (LINKTYPE_RAW; libpcap reports it as DLT_RAW).
    public static let raw = PcapLinkType(rawValue: 101)
    /// Raw IPv4 (LINKTYPE_IPV4).
    public static let ipv4 = PcapLinkType(rawValue: 228)
    /// The DLT_ value libpcap's API takes for this link type (they differ only for raw IP).
    var datalink: Int32 { self == .raw ? DLT_RAW : rawValue }

    /// Maps libpcap's DLT_ value back to the file's LINKTYPE_ value.
    init(datalink: Int32) { self.rawValue = datalink == DLT_RAW ? 101 : datalink }

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
    case cannotOpen(path: String, reason: String)
    case readFailed(reason: String)
    case cannotWrite(path: String, reason: String)

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
    /// Seconds and nanoseconds since the epoch.
    public var seconds: Int64
    public var nanoseconds: Int32
    /// The captured bytes (may be shorter than `originalLength` when the capture was truncated).
    public var data: ByteBuffer
    /// The frame's length on the wire.
    public var originalLength: Int

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
    public let path: String
    /// The file's link type.
    public let linkType: PcapLinkType
    /// The snapshot length recorded in the file.
    public let snapshotLength: Int
    private let allocator = ByteBufferAllocator()
    /// Set when reading stopped because of an error (a truncated file, say) rather than at the end.
    public private(set) var readError: PcapError?

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
    public let path: String
    public let linkType: PcapLinkType

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
