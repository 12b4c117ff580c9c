public import NIOCore
import VPNKitBase
public import VPNKitEthernet
public import VPNKitARP
public import VPNKitIPv4
public import VPNKitUDP
public import VPNKitTCP
public import VPNKitDHCP
public import VPNKitIPv6

/// What one frame decodes to, layer by layer. A layer that fails to parse sets `error` (prefixed with
/// the layer's name) and nothing above it is present. A fragment carries nothing above IPv4 (or
/// above its IPv6 fragment header).
public struct DecodedFrame: Sendable {
    /// The frame's position as given to `FrameDecoder.decode(_:number:)`; `CaptureDecoder` counts from 1.
    public var number: Int
    /// The number of captured bytes in the frame.
    public var length: Int
    /// The Ethernet header; nil for raw-IP captures or when the frame is too short for one.
    public var ethernet: EthernetHeader?
    /// The ARP packet, for frames with EtherType ARP that parsed.
    public var arp: ARPHeader?
    /// The IPv4 header, for IPv4 frames (or raw-IP captures) that parsed.
    public var ipv4: IPv4Summary?
    /// The IPv6 header and the walk of its extension headers, for IPv6 frames (or raw-IP captures) that parsed.
    public var ipv6: IPv6Summary?
    /// The fragment header of an IPv6 packet that has one; an atomic fragment (offset 0, no more
    /// fragments) is a whole packet and has its upper layer decoded too.
    public var ipv6Fragment: IPv6FragmentHeader?
    /// The ICMP header, for unfragmented ICMP packets that parsed.
    public var icmp: ICMPSummary?
    /// The ICMPv6 header, for ICMPv6 messages in unfragmented IPv6 packets that parsed.
    public var icmpv6: ICMPv6Summary?
    /// The neighbour discovery message, for ICMPv6 types 133 to 136 (RS, RA, NS, NA) that parsed.
    public var ndp: NDPMessage?
    /// The UDP header, for unfragmented UDP datagrams that parsed.
    public var udp: UDPSummary?
    /// The TCP header with its options, for unfragmented TCP segments that parsed.
    public var tcp: TCPSummary?
    /// The DHCP (or BOOTP) message, for UDP datagrams between ports 67 and 68 (or 67 and 67) that parsed.
    public var dhcp: DHCPMessage?
    /// The DNS message, for UDP datagrams from or to port 53 that parsed (either IP family).
    public var dns: DNSSummary?
    /// Why decoding stopped, as `layer: reason` (the layer is `link`, `eth`, `arp`, `ipv4`, `ipv6`, `icmp`,
    /// `icmpv6`, `ndp`, `udp`, `tcp`, `dhcp` or `dns`); nil when every layer present parsed. A DNS answer
    /// whose data does not parse also sets it, with the `dns` layer kept.
    public var error: String?

    /// The decoded IPv4 header with facts the value form does not keep.
    public struct IPv4Summary: Sendable {
        /// The header fields, options included.
        public var header: IPv4Header
        /// The header length in bytes as received (IHL × 4).
        public var headerLength: Int
        /// Whether the header checksum verified.
        public var checksumValid: Bool
    }
    /// The decoded IPv6 header with the walk of its extension headers.
    public struct IPv6Summary: Sendable {
        /// The fixed header's fields.
        public var header: IPv6Header
        /// What the walk of the extension headers found (RFC 8200 rules, bounded as the stack bounds
        /// it); nil when the walk refused the packet, and `error` then says why.
        public var chain: IPv6HeaderChain?
    }
    /// The decoded ICMPv6 header and whether its checksum verified.
    public struct ICMPv6Summary: Sendable {
        /// The type, code and second 32-bit word.
        public var header: ICMPv6Header
        /// Whether the checksum over the message and the IPv6 pseudo-header verified.
        public var checksumValid: Bool
    }
    /// The decoded ICMP header and whether its checksum verified.
    public struct ICMPSummary: Sendable {
        /// The type, code and rest-of-header word.
        public var header: ICMPv4Header
        /// Whether the checksum over the whole ICMP message verified.
        public var checksumValid: Bool
    }
    /// The decoded UDP header with its length and checksum result.
    public struct UDPSummary: Sendable {
        /// The ports, and whether the datagram carried a checksum.
        public var header: UDPHeader
        /// The UDP length field in bytes (header and data).
        public var length: Int
        /// Whether the checksum verified against the pseudo-header of the packet's family. A zero checksum
        /// (none sent) counts as valid over IPv4 and as invalid over IPv6, where it is mandatory.
        public var checksumValid: Bool
    }
    /// The decoded TCP header with its payload length and checksum result.
    public struct TCPSummary: Sendable {
        /// The header fields with the options parsed.
        public var header: TCPHeader
        /// The number of data bytes after the TCP header.
        public var payloadLength: Int
        /// Whether the checksum verified against the pseudo-header of the packet's family.
        public var checksumValid: Bool
    }
}

/// Decodes frames with the project's own parsers. Never traps, whatever the bytes.
public struct FrameDecoder: Sendable {
    /// The LINKTYPE_ value that says how each frame starts: 1 for Ethernet, 101 for raw IP (either
    /// version), 228 for raw IPv4, 229 for raw IPv6.
    public var linkType: Int32

    /// `linkType` is a LINKTYPE_ value: 1 (Ethernet), 101 (raw IP), 228 (raw IPv4) or 229 (raw IPv6);
    /// others yield an error.
    public init(linkType: Int32 = 1) { self.linkType = linkType }

    /// Decodes the readable bytes of `buffer` as one frame, layer by layer, stopping at the first layer that
    /// fails to parse. `number` is copied into the result. In a LINKTYPE_RAW capture the first nibble
    /// tells IPv4 from IPv6.
    public func decode(_ buffer: ByteBuffer, number: Int) -> DecodedFrame {
        let data = ByteView(buffer)
        var frame = DecodedFrame(number: number, length: data.count)
        do throws(LayerError) {
            switch linkType {
            case 1:
                let ethernet: EthernetFrame
                do throws(WireError) { ethernet = try EthernetFrame(data) } catch { throw LayerError("eth", error) }
                frame.ethernet = EthernetHeader(parsing: ethernet)
                switch ethernet.etherType {
                case .arp:
                    do throws(WireError) { frame.arp = ARPHeader(parsing: try ARPPacket(ethernet.payload)) } catch {
                        throw LayerError("arp", error)
                    }
                case .ipv4:
                    try decodeIPv4(ethernet.payload, into: &frame)
                case .ipv6:
                    try decodeIPv6(ethernet.payload, into: &frame)
                default:
                    break
                }
            case 101, 228, 229:
                // LINKTYPE_RAW (101) carries either version; the first nibble tells which.
                if linkType == 229 || (linkType == 101 && data.count > 0 && data.loadU8(at: 0) >> 4 == 6) {
                    try decodeIPv6(data, into: &frame)
                } else {
                    try decodeIPv4(data, into: &frame)
                }
            default:
                throw LayerError("link", WireError.unsupported(field: "link type", value: Int(linkType)))
            }
        } catch {
            frame.error = error.description
        }
        return frame
    }

    private func decodeIPv4(_ bytes: ByteView, into frame: inout DecodedFrame) throws(LayerError) {
        let packet: IPv4Packet
        do throws(WireError) { packet = try IPv4Packet(bytes) } catch { throw LayerError("ipv4", error) }
        frame.ipv4 = .init(
            header: IPv4Header(parsing: packet), headerLength: packet.headerLength,
            checksumValid: packet.isHeaderChecksumValid)
        guard !packet.isFragment else { return }
        let payload = packet.payload
        switch packet.protocol {
        case .icmp:
            do throws(WireError) {
                let icmp = try ICMPv4Packet(payload)
                frame.icmp = .init(header: ICMPv4Header(parsing: icmp), checksumValid: icmp.isChecksumValid)
            } catch { throw LayerError("icmp", error) }
        case .udp:
            let udp: UDPDatagram
            do throws(WireError) { udp = try UDPDatagram(payload) } catch { throw LayerError("udp", error) }
            frame.udp = .init(
                header: UDPHeader(parsing: udp), length: udp.length, checksumValid: udp.isChecksumValid(packet.pseudoHeader))
            try decodeUDPPayload(udp, into: &frame)
        case .tcp:
            do throws(WireError) {
                let tcp = try TCPSegment(payload)
                frame.tcp = .init(
                    header: try TCPHeader(parsing: tcp), payloadLength: tcp.payloadLength,
                    checksumValid: tcp.isChecksumValid(source: .v4(packet.source), destination: .v4(packet.destination)))
            } catch { throw LayerError("tcp", error) }
        default:
            break
        }
    }
}

/// A parse error tagged with the layer it happened in ("ipv4: total length 300 exceeds frame (98)").
struct LayerError: Error, CustomStringConvertible {
    var layer: String
    var reason: String
    init(_ layer: String, _ error: some CustomStringConvertible) {
        self.layer = layer
        self.reason = error.description
    }
    var description: String { "\(layer): \(reason)" }
}
