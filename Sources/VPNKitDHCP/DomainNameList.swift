public import VPNKitBase

/// A list of domain names in RFC 1035 §4.1.4 form, with message compression, as DHCP option 119
/// (RFC 3397) carries them. Pointers are offsets into the option's concatenated value.
public enum DomainNameList {
    /// Decodes every name in `bytes`. Names are returned without the trailing dot.
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> [String] {
        var names: [String] = []
        var index = 0
        while index < bytes.count {
            let (name, next) = try decodeName(bytes, at: index)
            names.append(name)
            index = next
        }
        return names
    }

    /// Decodes the name at `start`; returns it and the index just past it in the original sequence.
    static func decodeName(_ bytes: [UInt8], at start: Int) throws(WireError) -> (String, Int) {
        var labels: [String] = []
        var index = start
        var resume: Int?
        var jumps = 0
        var length = 0
        while true {
            guard index < bytes.count else { throw .malformedOption(kind: 119, reason: "name runs past the option") }
            let byte = bytes[index]
            switch byte >> 6 {
            case 0:
                if byte == 0 {
                    return (labels.joined(separator: "."), resume ?? index + 1)
                }
                let labelLength = Int(byte)
                guard index + 1 + labelLength <= bytes.count else {
                    throw .malformedOption(kind: 119, reason: "label runs past the option")
                }
                length += labelLength + 1
                guard length <= 255 else { throw .malformedOption(kind: 119, reason: "name longer than 255 bytes") }
                labels.append(String(decoding: bytes[(index + 1)...(index + labelLength)], as: UTF8.self))
                index += 1 + labelLength
            case 3:
                guard index + 1 < bytes.count else { throw .malformedOption(kind: 119, reason: "pointer truncated") }
                let target = Int(byte & 0x3F) << 8 | Int(bytes[index + 1])
                // Pointers must go backward (RFC 1035 "prior occurrence"); this also rules out loops.
                guard target < index else { throw .malformedOption(kind: 119, reason: "pointer \(target) does not point backward") }
                jumps += 1
                guard jumps <= 128 else { throw .malformedOption(kind: 119, reason: "too many pointers") }
                if resume == nil { resume = index + 2 }
                index = target
            default:
                throw .malformedOption(kind: 119, reason: "reserved label type \(byte >> 6)")
            }
        }
    }

    /// Encodes `names` with compression: each suffix already written is replaced by a pointer.
    public static func encode(_ names: [String]) throws(WireError) -> [UInt8] {
        var bytes: [UInt8] = []
        var written: [[String]: Int] = [:]  // label suffix → offset
        for name in names {
            let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
            let labels = trimmed.isEmpty ? [] : trimmed.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard labels.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 63 }) else {
                throw .malformed("domain name \"\(name)\" has an empty or over-long label")
            }
            guard trimmed.utf8.count + 2 <= 255 else { throw .malformed("domain name \"\(name)\" is longer than 253 bytes") }
            var i = 0
            while i < labels.count {
                let suffix = Array(labels[i...])
                if let offset = written[suffix] {
                    bytes += [0xC0 | UInt8(offset >> 8), UInt8(offset & 0xFF)]
                    break
                }
                if bytes.count <= 0x3FFF { written[suffix] = bytes.count }
                bytes.append(UInt8(labels[i].utf8.count))
                bytes += labels[i].utf8
                i += 1
            }
            if i == labels.count { bytes.append(0) }
        }
        return bytes
    }
}
