public import NIOCore
public import VPNKitBase

/// A DNS message (RFC 1035 §4.1): header, question, answer, authority and additional sections.
///
/// Parsing checks every length against the bytes present and throws `DNSError` on anything
/// malformed; it never traps. Bytes after the last record are ignored.
public struct DNSMessage: Sendable, Hashable {
    /// The largest UDP payload a client that sent no OPT record accepts (RFC 1035 §4.2.1).
    public static let classicUDPPayloadSize = 512
    /// The smallest question in wire form: a root name, type and class.
    static let minimumQuestionLength = 5
    /// The smallest resource record in wire form: a root name, type, class, TTL and data length.
    static let minimumRecordLength = 11

    /// Id and flags; the section counts are those of the arrays below.
    public var header: DNSHeader
    /// The question section (one entry in practice).
    public var questions: [DNSQuestion]
    /// The answer section.
    public var answers: [DNSResourceRecord]
    /// The authority section.
    public var authorities: [DNSResourceRecord]
    /// The additional section, where the OPT record lives.
    public var additionals: [DNSResourceRecord]

    /// A message made of the given parts.
    public init(
        header: DNSHeader, questions: [DNSQuestion] = [], answers: [DNSResourceRecord] = [],
        authorities: [DNSResourceRecord] = [], additionals: [DNSResourceRecord] = []
    ) {
        self.header = header
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
    }

    /// Parses the readable bytes of `buffer`.
    public init(parsing buffer: ByteBuffer) throws(DNSError) {
        try self.init(parsing: ByteView(buffer))
    }

    /// Parses the bytes of `message`, which must start with the header.
    public init(parsing message: ByteView) throws(DNSError) {
        var offsets: [Int] = []
        try self.init(parsing: message, recordDataOffsets: &offsets)
    }

    /// Parses like `init(parsing:)` and sets `recordDataOffsets` to where each record's data starts
    /// in `message`: the answers', then the authorities', then the additionals'. A name inside record
    /// data (CNAME, NS, PTR) may use compression pointers that refer to the whole message: read it with
    /// `DNSName.read(from: message, at: offset)`.
    public init(parsing message: ByteView, recordDataOffsets: inout [Int]) throws(DNSError) {
        recordDataOffsets = []
        let header = try DNSHeader(parsing: message)
        let questionCount = Int(message.loadU16(at: 4))
        let recordCounts = [Int(message.loadU16(at: 6)), Int(message.loadU16(at: 8)), Int(message.loadU16(at: 10))]
        let recordCount = recordCounts.reduce(0, +)
        // Reject impossible counts before reserving anything for them.
        let available = message.count - DNSHeader.length
        guard questionCount * Self.minimumQuestionLength + recordCount * Self.minimumRecordLength <= available else {
            throw .countsExceedMessage(questions: questionCount, records: recordCount, available: available)
        }
        var reader = DNSReader(message, offset: DNSHeader.length)
        var questions: [DNSQuestion] = []
        questions.reserveCapacity(questionCount)
        for _ in 0..<questionCount {
            let name = try reader.readName()
            let type = DNSRecordType(rawValue: try reader.readU16())
            let recordClass = DNSClass(rawValue: try reader.readU16())
            questions.append(DNSQuestion(name: name, type: type, recordClass: recordClass))
        }
        var sections: [[DNSResourceRecord]] = []
        for count in recordCounts {
            var records: [DNSResourceRecord] = []
            records.reserveCapacity(count)
            for _ in 0..<count {
                records.append(try Self.readRecord(&reader, dataOffsets: &recordDataOffsets))
            }
            sections.append(records)
        }
        self.init(header: header, questions: questions, answers: sections[0], authorities: sections[1], additionals: sections[2])
    }

    static func readRecord(_ reader: inout DNSReader, dataOffsets: inout [Int]) throws(DNSError) -> DNSResourceRecord {
        let name = try reader.readName()
        let type = DNSRecordType(rawValue: try reader.readU16())
        let recordClass = DNSClass(rawValue: try reader.readU16())
        let ttl = try reader.readU32()
        let length = Int(try reader.readU16())
        dataOffsets.append(reader.offset)
        let data = try reader.readBytes(length)
        return DNSResourceRecord(name: name, type: type, recordClass: recordClass, ttl: ttl, data: data)
    }

    // MARK: EDNS

    /// The first OPT record of the additional section, if any.
    public var optRecord: DNSResourceRecord? { additionals.first { $0.type == .opt } }

    /// The EDNS parameters of the first OPT record, if any.
    public var edns: DNSEDNS? { optRecord.flatMap(DNSEDNS.init) }

    /// The UDP payload size the sender advertises in its OPT record; nil without one.
    public var ednsUDPPayloadSize: Int? { optRecord.map { Int($0.recordClass.rawValue) } }

    /// The number of OPT records in the additional section (more than one is a format error).
    public var optRecordCount: Int { additionals.reduce(0) { $0 + ($1.type == .opt ? 1 : 0) } }

    // MARK: Encoding

    /// The message in wire form. With `compressNames`, owner and question names reuse earlier
    /// suffixes through pointers; record data is always copied verbatim.
    public func encoded(compressNames: Bool = true) throws(DNSError) -> ByteBuffer {
        var buffer = ByteBuffer()
        try write(to: &buffer, compressNames: compressNames)
        return buffer
    }

    /// Appends the wire form to `buffer`. Throws if a section has more than 65535 entries, a
    /// record's data is longer than 65535 bytes or the message would be longer than 65535 bytes;
    /// `buffer` is then left as it was.
    public func write(to buffer: inout ByteBuffer, compressNames: Bool = true) throws(DNSError) {
        for section in [questions.count, answers.count, authorities.count, additionals.count] where section > 0xFFFF {
            throw .tooManyRecords(section)
        }
        for record in answers + authorities + additionals where record.data.count > 0xFFFF {
            throw .rdataTooLong(record.data.count)
        }
        let start = buffer.writerIndex
        var compressor = DNSNameCompressor(enabled: compressNames, messageStart: start)
        buffer.writeInteger(header.id)
        buffer.writeInteger(header.flags)
        buffer.writeInteger(UInt16(truncatingIfNeeded: questions.count))
        buffer.writeInteger(UInt16(truncatingIfNeeded: answers.count))
        buffer.writeInteger(UInt16(truncatingIfNeeded: authorities.count))
        buffer.writeInteger(UInt16(truncatingIfNeeded: additionals.count))
        for question in questions {
            compressor.write(question.name, to: &buffer)
            buffer.writeInteger(question.type.rawValue)
            buffer.writeInteger(question.recordClass.rawValue)
        }
        for record in answers + authorities + additionals {
            compressor.write(record.name, to: &buffer)
            buffer.writeInteger(record.type.rawValue)
            buffer.writeInteger(record.recordClass.rawValue)
            buffer.writeInteger(record.ttl)
            buffer.writeInteger(UInt16(truncatingIfNeeded: record.data.count))
            buffer.writeBytes(record.data)
        }
        let length = buffer.writerIndex - start
        guard length <= 0xFFFF else {
            buffer.moveWriterIndex(to: start)
            throw .messageTooLong(length)
        }
    }
}
