/// The TCP flags field (the low 12 bits of header bytes 12–13: 3 reserved bits, NS/AE, CWR … FIN).
public struct TCPFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// The flag bits, in the low 12 bits (the data offset nibble is never included).
    public var rawValue: UInt16
    /// Creates a flag set from the header's bytes 12–13; the data offset in the top four bits is discarded.
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue & 0x0FFF }

    /// FIN: the sender has no more data.
    public static let fin = TCPFlags(rawValue: 0x001)
    /// SYN: synchronize sequence numbers (opens a connection).
    public static let syn = TCPFlags(rawValue: 0x002)
    /// RST: reset the connection.
    public static let rst = TCPFlags(rawValue: 0x004)
    /// PSH: push buffered data to the application.
    public static let psh = TCPFlags(rawValue: 0x008)
    /// ACK: the acknowledgment number is significant.
    public static let ack = TCPFlags(rawValue: 0x010)
    /// URG: the urgent pointer is significant.
    public static let urg = TCPFlags(rawValue: 0x020)
    /// ECE: ECN echo (congestion experienced, or ECN-capable in a SYN).
    public static let ece = TCPFlags(rawValue: 0x040)
    /// CWR: congestion window reduced.
    public static let cwr = TCPFlags(rawValue: 0x080)
    /// The former ECN-nonce bit, now AccECN's AE.
    public static let ns = TCPFlags(rawValue: 0x100)

    /// The set flags as tcpdump-style letters (`S`, `F`, `R`, `P`, `.` for ACK, `U`, `E`, `W`, `N`), such as
    /// `S.` for a SYN-ACK; `none` when empty.
    public var description: String {
        let names: [(TCPFlags, String)] = [
            (.syn, "S"), (.fin, "F"), (.rst, "R"), (.psh, "P"), (.ack, "."), (.urg, "U"), (.ece, "E"), (.cwr, "W"),
            (.ns, "N"),
        ]
        let text = names.filter { self.contains($0.0) }.map(\.1).joined()
        return text.isEmpty ? "none" : text
    }
}
