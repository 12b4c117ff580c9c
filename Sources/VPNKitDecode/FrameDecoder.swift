public import NIOCore
import VPNKitBase
public import VPNKitEthernet
public import VPNKitARP
public import VPNKitIPv4
public import VPNKitUDP
public import VPNKitTCP
public import VPNKitDHCP

/// What one frame decodes to, layer by layer. A layer that fails to parse sets `error` (prefixed with
/// the layer's name) and nothing above it is present. A fragment carries nothing above IPv4.
public struct DecodedFrame: Sendable {
    public var number: Int
    public var length: Int
    public var ethernet: EthernetHeader?
    public var arp: ARPHeader?
    public var ipv4: IPv4Summary?
    public var icmp: ICMPSummary?
    public var udp: UDPSummary?
    public var tcp: TCPSummary?
    public var dhcp: DHCPMessage?
    public var error: String?

    public struct IPv4Summary: Sendable {
        public var header: IPv4Header
        public var headerLength: Int
        public var checksumValid: Bool
    }
    public struct ICMPSummary: Sendable {
        public var header: ICMPv4Header
        public var checksumValid: Bool
    }
    public struct UDPSummary: Sendable {
        public var header: UDPHeader
        public var length: Int
        public var checksumValid: Bool
    }
    public struct TCPSummary: Sendable {
        public var header: TCPHeader
        public var payloadLength: Int
        public var checksumValid: Bool
    }
}

/// Decodes frames with the project's own parsers. Never traps, whatever the bytes.
public struct FrameDecoder: Sendable {
    public var linkType: Int32

    /// `linkType` is a LINKTYPE_ value: 1 (Ethernet), 101 or 228 (raw IPv4); others yield an error.
    public init(linkType: Int32 = 1) { self.linkType = linkType }

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
                default:
                    break
                }
            case 101, 228:
                // LINKTYPE_RAW may also carry IPv6; only version 4 is decoded.
                if linkType == 101, data.count > 0, data.loadU8(at: 0) >> 4 == 6 { break }
                try decodeIPv4(data, into: &frame)
            default:
                throw LayerError("link", .unsupported(field: "link type", value: Int(linkType)))
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
            let ports = [udp.sourcePort, udp.destinationPort]
            if ports.contains(BOOTP.serverPort) && ports.contains(where: { $0 == BOOTP.clientPort || $0 == BOOTP.serverPort }) {
                do throws(WireError) { frame.dhcp = try DHCPMessage(parsing: DHCPPacket(udp.payload)) } catch {
                    throw LayerError("dhcp", error)
                }
            }
        case .tcp:
            do throws(WireError) {
                let tcp = try TCPSegment(payload)
                frame.tcp = .init(
                    header: try TCPHeader(parsing: tcp), payloadLength: tcp.payloadLength,
                    checksumValid: tcp.isChecksumValid(source: packet.source, destination: packet.destination))
            } catch { throw LayerError("tcp", error) }
        default:
            break
        }
    }
}

/// A parse error tagged with the layer it happened in ("ipv4: total length 300 exceeds frame (98)").
struct LayerError: Error, CustomStringConvertible {
    var layer: String
    var error: WireError
    init(_ layer: String, _ error: WireError) {
        self.layer = layer
        self.error = error
    }
    var description: String { "\(layer): \(error)" }
}
