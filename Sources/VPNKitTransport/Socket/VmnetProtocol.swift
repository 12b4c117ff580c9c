// The wire format of Docker's vpnkit "vmnet" protocol (the server side, as hyperkit, rootlesskit and
// the Go client connect to it). Learned from, and cross-checked between, these sources (read, not
// copied):
//   - moby/vpnkit src/hostnet/vmnet.ml: modules Init (marshal/unmarshal), Command (unmarshal: type
//     codes 1 and 8, zero UUID → server picks one; Command.sizeof = 1 + 36 + 4 is what the server
//     reads whatever the type), Vif (create: max_packet_size = mtu + 50; marshal), Response
//     (sizeof = 1 + 1 + 256, Vif = 1, Disconnect = 2 with a length byte), Packet (2-byte LE
//     length), and server_negotiate (the order of the exchange; on a version other than 22 it
//     sends its own init message, then disconnects).
//   - moby/vpnkit go/pkg/vmnet/vmnet.go: InitMessage.Write / readInitMessage (5 + 4 LE + 40),
//     Ethernet.Write (type byte, 36-byte UUID text, then a uint32 LE IPv4 that is 0 for type 1 and
//     the address's big-endian value written little-endian for type 8), readVif (1 + 2 + 2 + 6, then
//     1 + 256 - 6 - 2 - 2 bytes of padding: 258 bytes in all), Vif.Write/Read (2-byte LE length).
//   - moby/vpnkit c/vpnkit-tap-vsockd/protocol.c (write_ethernet_args: 40 bytes after the type,
//     36 of UUID and 4 zero) and moby/hyperkit src/lib/pci_virtio_net_vpnkit.c (vpnkit_connect:
//     packed msg_command of 41 bytes and msg_response of 258 bytes; vmn_write asserts a frame is at
//     most max_packet_size).
//
// The exchange:
//   client → server  init      "VMN3T" (5) · version UInt32 LE = 22 (4) · commit (40 bytes)
//   server → client  init      same shape
//   client → server  command   type (1) · UUID text (36) · IPv4 UInt32 LE or zero (4)        = 41
//   server → client  response  1 (1) · MTU UInt16 LE · max packet size UInt16 LE · MAC (6) · zeros = 258
//                           or 2 (1) · reason length (1) · reason · zeros                        = 258
//   then both ways   frames    length UInt16 LE (2) · Ethernet frame

public import NIOCore
public import VPNKitBase

/// Constants of the vmnet protocol.
package enum Vmnet {
    /// The magic that opens an init message (protocol version 1 and later).
    public static let magic: [UInt8] = Array("VMN3T".utf8)
    /// The magic of protocol version 0, which we do not speak.
    public static let magicVersion0: [UInt8] = Array("VMNET".utf8)
    /// The protocol version we speak (vmnet.ml `Init.default`).
    public static let version: UInt32 = 22
    /// `max_packet_size` = MTU + 50 (vmnet.ml `Vif.create`), capped by the 16-bit field.
    public static func maxPacketSize(mtu: Int) -> Int { min(mtu + 50, Int(UInt16.max)) }
}

/// The first message each side sends: 49 bytes.
package struct VmnetInitMessage: Sendable, Hashable {
    /// Length of an init message on the wire: 49 bytes.
    public static let size = 5 + 4 + 40

    /// The 5-byte magic; `Vmnet.magic` (`VMN3T`) in a message we accept. `read(from:)` does not check it.
    public var magic: [UInt8]
    /// The protocol version, little-endian on the wire; we accept only `Vmnet.version` (22).
    public var version: UInt32
    /// 40 bytes: the sender's build identifier (a git commit hash in vpnkit and hyperkit).
    public var commit: [UInt8]

    /// Creates an init message; traps unless `magic` has 5 bytes and `commit` 40.
    public init(magic: [UInt8] = Vmnet.magic, version: UInt32 = Vmnet.version, commit: [UInt8]) {
        precondition(magic.count == 5 && commit.count == 40, "a vmnet init message has a 5-byte magic and a 40-byte commit")
        self.magic = magic
        self.version = version
        self.commit = commit
    }

    /// The 40-byte commit field we send.
    public static let ourCommit: [UInt8] = {
        let name = Array("SwiftVPNKit".utf8)
        return name + [UInt8](repeating: UInt8(ascii: "0"), count: 40 - name.count)
    }()

    /// The init message we send.
    public static let ours = VmnetInitMessage(commit: ourCommit)

    /// Reads a message from `buffer`; nil (nothing consumed) when fewer than `size` bytes are there.
    public static func read(from buffer: inout ByteBuffer) -> VmnetInitMessage? {
        guard buffer.readableBytes >= size else { return nil }
        let magic = buffer.readBytes(length: 5)!
        let version = buffer.readInteger(endianness: .little, as: UInt32.self)!
        let commit = buffer.readBytes(length: 40)!
        return VmnetInitMessage(magic: magic, version: version, commit: commit)
    }

    /// Appends the 49-byte encoding to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeBytes(magic)
        buffer.writeInteger(version, endianness: .little)
        buffer.writeBytes(commit)
    }
}

/// A UUID as vmnet carries it: 36 characters of text, 8-4-4-4-12 hex digits.
public struct VmnetUUID: Sendable, Hashable, CustomStringConvertible {
    /// The 16 bytes, in text order.
    public let bytes: [UInt8]

    /// Wraps 16 raw bytes; nil for any other count.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses "6ba7b810-9dad-11d1-80b4-00c04fd430c8" (either case); nil for anything else.
    public init?(_ text: some StringProtocol) {
        self.init(utf8: Array(text.utf8))
    }

    /// Parses the 36 ASCII bytes of a UUID's text; nil for anything else.
    public init?(utf8 text: [UInt8]) {
        guard text.count == 36 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        var index = 0
        while index < 36 {
            if index == 8 || index == 13 || index == 18 || index == 23 {
                guard text[index] == UInt8(ascii: "-") else { return nil }
                index += 1
                continue
            }
            guard let high = Self.hexValue(text[index]), let low = Self.hexValue(text[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        self.bytes = bytes
    }

    /// A random (version 4) UUID: what the server picks when the client sends an all-zero UUID.
    public static func random() -> VmnetUUID {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = bytes[6] & 0x0F | 0x40
        bytes[8] = bytes[8] & 0x3F | 0x80
        return VmnetUUID(bytes: bytes)!
    }

    /// Lower-case canonical text.
    public var description: String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { text.append(UInt8(ascii: "-")) }
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// A MAC address that depends only on the UUID: the first 48 bits of the 64-bit FNV-1a hash of
    /// the 16 bytes, made locally administered (0x02 set) and unicast (0x01 clear) in the first
    /// octet. The same UUID gets the same address in every process.
    public var derivedMACAddress: MACAddress {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let raw = hash >> 16
        return MACAddress(rawValue: raw & ~(UInt64(0x03) << 40) | UInt64(0x02) << 40)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// The command a client sends after the init exchange: always 41 bytes on the wire.
package enum VmnetCommand: Sendable, Hashable {
    /// Type 1: connect an Ethernet interface. `uuid` nil: the client sent 36 zero bytes and asks the
    /// server to pick one.
    case ethernet(uuid: VmnetUUID?)
    /// Type 8: the same, asking for a particular IPv4 address.
    case preferredIPv4(uuid: VmnetUUID?, address: IPv4Address)
    /// Type 6: bind a host port (vmnet.ml marshals it: address UInt32 LE, port UInt16 LE, a byte
    /// 0 for TCP and 1 for UDP). vpnkit's server refuses it; so do we.
    case bindIPv4(address: IPv4Address, port: UInt16, isTCP: Bool)

    /// Length of a command on the wire: 41 bytes, whatever its type.
    public static let size = 1 + 36 + 4

    /// The type byte of the `ethernet` command (1).
    public static let ethernetType: UInt8 = 1
    /// The type byte of the `bindIPv4` command (6).
    public static let bindIPv4Type: UInt8 = 6
    /// The type byte of the `preferredIPv4` command (8).
    public static let preferredIPv4Type: UInt8 = 8

    /// Why a command could not be parsed.
    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        /// The type byte (given) is none of 1, 6 and 8.
        case unknownType(UInt8)
        /// The 36-byte UUID field (given) is neither all zeros nor UUID text.
        case invalidUUID([UInt8])

        /// A short explanation; the server sends it to the client in its disconnect response.
        public var description: String {
            switch self {
            case .unknownType(let type): return "unknown command \(type)"
            case .invalidUUID(let bytes):
                let printable = bytes.map { $0 >= 0x20 && $0 < 0x7F ? Character(UnicodeScalar($0)) : "?" }
                return "invalid UUID \"\(String(printable))\""
            }
        }
    }

    /// Reads one command (41 bytes) from `buffer`; nil (nothing consumed) when fewer bytes are there.
    /// The bytes are consumed even when parsing fails.
    public static func read(from buffer: inout ByteBuffer) -> Result<VmnetCommand, ParseError>? {
        guard buffer.readableBytes >= size else { return nil }
        let type = buffer.readInteger(as: UInt8.self)!
        var body = buffer.readSlice(length: size - 1)!
        switch type {
        case ethernetType, preferredIPv4Type:
            let text = body.readBytes(length: 36)!
            let uuid: VmnetUUID?
            if text.allSatisfy({ $0 == 0 }) {
                uuid = nil
            } else if let parsed = VmnetUUID(utf8: text) {
                uuid = parsed
            } else {
                return .failure(.invalidUUID(text))
            }
            if type == ethernetType { return .success(.ethernet(uuid: uuid)) }
            // The address's usual (big-endian) value, written little-endian: 192.168.65.3 arrives as
            // 03 41 a8 c0 (vmnet.go Ethernet.Write, hyperkit's OSSwapInt32).
            let address = IPv4Address(rawValue: body.readInteger(endianness: .little, as: UInt32.self)!)
            return .success(.preferredIPv4(uuid: uuid, address: address))
        case bindIPv4Type:
            let address = IPv4Address(rawValue: body.readInteger(endianness: .little, as: UInt32.self)!)
            let port = body.readInteger(endianness: .little, as: UInt16.self)!
            let flag = body.readInteger(as: UInt8.self)!
            return .success(.bindIPv4(address: address, port: port, isTCP: flag == 0))
        default:
            return .failure(.unknownType(type))
        }
    }
}

/// The server's answer to the command: always 258 bytes on the wire.
package enum VmnetResponse: Sendable, Hashable {
    /// Type 1: the interface is connected.
    case vif(mtu: UInt16, maxPacketSize: UInt16, macAddress: MACAddress)
    /// Type 2: refused; the reason is at most 255 bytes of UTF-8 (longer is cut).
    case disconnect(reason: String)

    /// Length of a response on the wire: 258 bytes.
    public static let size = 1 + 1 + 256

    /// Appends the response to `buffer`, padded with zeros to 258 bytes.
    public func write(to buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        switch self {
        case .vif(let mtu, let maxPacketSize, let macAddress):
            buffer.writeInteger(UInt8(1))
            buffer.writeInteger(mtu, endianness: .little)
            buffer.writeInteger(maxPacketSize, endianness: .little)
            buffer.writeBytes(macAddress.bytes)
        case .disconnect(let reason):
            let text = Array(reason.utf8.prefix(255))
            buffer.writeInteger(UInt8(2))
            buffer.writeInteger(UInt8(text.count))
            buffer.writeBytes(text)
        }
        buffer.writeRepeatingByte(0, count: Self.size - (buffer.writerIndex - start))
    }
}
