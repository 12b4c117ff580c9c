/// Why a header could not be parsed. Every layer throws this one typed error, so a decoder or a
/// drop counter can name the reason without string matching; `description` is the human text.
public enum WireError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Fewer bytes than the fixed header needs.
    case truncated(needed: Int, available: Int)
    /// A length field points past the bytes we have (`field` names it).
    case lengthExceedsBuffer(field: String, value: Int, available: Int)
    /// A length field is smaller than the minimum it may take.
    case lengthTooSmall(field: String, value: Int, minimum: Int)
    /// A field holds a value this layer does not accept (version, hardware type…).
    case unsupported(field: String, value: Int)
    /// An option or sub-structure is malformed.
    case malformedOption(kind: Int, reason: String)
    /// Any other malformation, described.
    case malformed(String)

    /// A one-line, human-readable explanation naming the field and the values involved.
    public var description: String {
        switch self {
        case .truncated(let needed, let available):
            return "truncated: header needs \(needed) bytes, have \(available)"
        case .lengthExceedsBuffer(let field, let value, let available):
            return "\(field) \(value) exceeds frame (\(available))"
        case .lengthTooSmall(let field, let value, let minimum):
            return "\(field) \(value) is below the minimum \(minimum)"
        case .unsupported(let field, let value):
            return "unsupported \(field) \(value)"
        case .malformedOption(let kind, let reason):
            return "option \(kind): \(reason)"
        case .malformed(let text):
            return text
        }
    }
}
