/// A minimal JSON value with ordered object keys, so output follows the documented key order.
public indirect enum JSONValue: Sendable, Hashable {
    /// A whole number, written without a fraction or exponent.
    case int(Int64)
    /// `true` or `false`.
    case bool(Bool)
    /// A string, written with JSON escapes for quotes, backslashes and control characters.
    case string(String)
    /// An ordered list of values.
    case array([JSONValue])
    /// An object whose members are written in the order given (keys are not deduplicated).
    case object([(String, JSONValue)])

    /// Two values are equal when their serialized text is identical, so object member order matters.
    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool { lhs.serialized == rhs.serialized }
    /// Hashes the serialized text, consistent with `==`.
    public func hash(into hasher: inout Hasher) { hasher.combine(serialized) }

    /// Compact JSON text.
    public var serialized: String {
        var out = ""
        write(to: &out)
        return out
    }

    /// Appends the compact JSON text of this value to `out` (no whitespace, no trailing newline).
    public func write(to out: inout String) {
        switch self {
        case .int(let v): out += String(v)
        case .bool(let v): out += v ? "true" : "false"
        case .string(let s): Self.writeString(s, to: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, (key, value)) in members.enumerated() {
                if i > 0 { out += "," }
                Self.writeString(key, to: &out)
                out += ":"
                value.write(to: &out)
            }
            out += "}"
        }
    }

    static func writeString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

/// Builds an object, skipping absent members.
struct JSONObjectBuilder {
    var members: [(String, JSONValue)] = []
    mutating func add(_ key: String, _ value: JSONValue?) { if let value { members.append((key, value)) } }
    mutating func add(_ key: String, _ value: some BinaryInteger) { members.append((key, .int(Int64(value)))) }
    mutating func add(_ key: String, _ value: Bool) { members.append((key, .bool(value))) }
    mutating func add(_ key: String, _ value: some CustomStringConvertible) { members.append((key, .string(value.description))) }
    var value: JSONValue { .object(members) }
}
