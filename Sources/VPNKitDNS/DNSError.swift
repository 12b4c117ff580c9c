/// Why DNS bytes could not be parsed or a DNS value could not be built. Every throwing API of this
/// module throws this one typed error; `description` is the human text.
public enum DNSError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A read at `offset` needed `needed` bytes but the message has only `available`.
    case truncated(offset: Int, needed: Int, available: Int)
    /// The header's section counts need more bytes than the message has (each question takes at
    /// least 5 bytes, each resource record at least 11).
    case countsExceedMessage(questions: Int, records: Int, available: Int)
    /// A label length byte uses the reserved 0b01 or 0b10 prefix (a "label" longer than 63 bytes).
    case reservedLabelType(offset: Int, byte: UInt8)
    /// A compression pointer at `offset` points to `target`, which is not strictly before the
    /// labels that led to it (a loop or a forward pointer).
    case badCompressionPointer(offset: Int, target: Int)
    /// A name that follows more compression pointers than a name can have labels.
    case tooManyCompressionPointers(offset: Int)
    /// A name longer than 255 bytes in wire form.
    case nameTooLong(Int)
    /// A label longer than 63 bytes (text form).
    case labelTooLong(Int)
    /// A name in text form with an empty label ("a..b", ".a").
    case emptyLabel(String)
    /// Record data longer than a 16-bit length can carry.
    case rdataTooLong(Int)
    /// More entries in one section than a 16-bit count can carry.
    case tooManyRecords(Int)
    /// An encoded message longer than 65535 bytes.
    case messageTooLong(Int)
    /// A DNS-over-TCP frame announced or was asked to carry more than 65535 bytes.
    case frameTooLong(Int)
    /// The TCP framer would hold more than its limit of unframed bytes.
    case framerOverflow(buffered: Int, limit: Int)

    /// A one-line explanation that includes the offsets, lengths or limits involved.
    public var description: String {
        switch self {
        case .truncated(let offset, let needed, let available):
            return "truncated: \(needed) bytes at offset \(offset), message has \(available)"
        case .countsExceedMessage(let questions, let records, let available):
            return "\(questions) questions and \(records) records cannot fit in \(available) bytes"
        case .reservedLabelType(let offset, let byte):
            return "reserved label type 0x\(String(byte, radix: 16)) at offset \(offset)"
        case .badCompressionPointer(let offset, let target):
            return "compression pointer at \(offset) to \(target) does not point strictly backward"
        case .tooManyCompressionPointers(let offset):
            return "name at \(offset) follows too many compression pointers"
        case .nameTooLong(let length):
            return "name of \(length) bytes exceeds 255"
        case .labelTooLong(let length):
            return "label of \(length) bytes exceeds 63"
        case .emptyLabel(let text):
            return "name \"\(text)\" has an empty label"
        case .rdataTooLong(let length):
            return "record data of \(length) bytes exceeds 65535"
        case .tooManyRecords(let count):
            return "\(count) entries in one section exceed 65535"
        case .messageTooLong(let length):
            return "message of \(length) bytes exceeds 65535"
        case .frameTooLong(let length):
            return "TCP frame of \(length) bytes exceeds 65535"
        case .framerOverflow(let buffered, let limit):
            return "TCP framer would buffer \(buffered) bytes, limit \(limit)"
        }
    }
}
