public import VPNKitPcap

/// Decodes a whole capture file frame by frame.
public struct CaptureDecoder {
    /// The underlying reader, for the file's link type and, after the last frame, `readError`.
    public let reader: PcapReader
    private let decoder: FrameDecoder
    private var number = 0

    /// Opens `path`; throws a `PcapError` when it cannot be opened or is not a capture.
    public init(path: String) throws(PcapError) {
        self.reader = try PcapReader(path: path)
        self.decoder = FrameDecoder(linkType: reader.linkType.rawValue)
    }

    /// The next decoded frame, or nil at the end (check `reader.readError` for a truncated file).
    public mutating func next() -> DecodedFrame? {
        guard let record = reader.next() else { return nil }
        number += 1
        return decoder.decode(record.data, number: number)
    }
}
