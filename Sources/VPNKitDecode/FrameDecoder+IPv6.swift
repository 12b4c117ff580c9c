// The IPv6 half of the decoder (the fixed header, the extension-header walk, ICMPv6 and neighbour
// discovery, UDP and TCP over the IPv6 pseudo-header) and what UDP carries in either family (DHCP,
// DNS).

import VPNKitBase
import VPNKitDHCP
public import VPNKitDNS
import VPNKitIPv6
import VPNKitTCP
import VPNKitUDP

/// A decoded DNS message with the data of its answers as text.
public struct DNSSummary: Sendable {
    /// The message: header, questions and records (the authority and additional sections are kept but
    /// not rendered).
    public var message: DNSMessage
    /// The data of each answer, in the order of `message.answers`: an address for A and AAAA (RFC 5952
    /// text for AAAA), a name for CNAME, PTR and NS (compression resolved, no trailing dot); nil for any
    /// other type, and for data that does not parse (the frame's `error` then says which answer).
    public var answerData: [String?]
}

extension FrameDecoder {
    func decodeIPv6(_ bytes: ByteView, into frame: inout DecodedFrame) throws(LayerError) {
        let packet: IPv6Packet
        do throws(WireError) { packet = try IPv6Packet(bytes) } catch { throw LayerError("ipv6", error) }
        frame.ipv6 = .init(header: IPv6Header(parsing: packet), chain: nil)
        let chain: IPv6HeaderChain
        do throws(IPv6HeaderChainError) { chain = try packet.headerChain() } catch { throw LayerError("ipv6", error) }
        frame.ipv6?.chain = chain
        frame.ipv6Fragment = chain.fragment
        if let fragment = chain.fragment, !fragment.isAtomic { return }
        let end = IPv6Packet.headerLength + packet.payloadLength
        let upper = packet.bytes.view(from: chain.upperLayerOffset, length: end - chain.upperLayerOffset)
        let source = packet.source
        let destination = packet.destination
        switch chain.upperLayer {
        case .icmpv6:
            let icmp: ICMPv6Packet
            do throws(WireError) { icmp = try ICMPv6Packet(upper) } catch { throw LayerError("icmpv6", error) }
            frame.icmpv6 = .init(
                header: ICMPv6Header(parsing: icmp), checksumValid: icmp.isChecksumValid(source: source, destination: destination))
            if (ICMPv6Type.routerSolicitation.rawValue...ICMPv6Type.neighborAdvertisement.rawValue).contains(icmp.type.rawValue) {
                do throws(WireError) { frame.ndp = try NDPMessage(parsing: icmp) } catch { throw LayerError("ndp", error) }
            }
        case .udp:
            let udp: UDPDatagram
            do throws(WireError) { udp = try UDPDatagram(upper) } catch { throw LayerError("udp", error) }
            // Over IPv6 the checksum is mandatory: a zero one (none) is invalid (RFC 8200 §8.1).
            let pseudo = IPPseudoHeader(source: .v6(source), destination: .v6(destination), protocol: .udp, length: udp.length)
            frame.udp = .init(
                header: UDPHeader(parsing: udp), length: udp.length, checksumValid: udp.checksum != 0 && udp.isChecksumValid(pseudo))
            try decodeUDPPayload(udp, into: &frame)
        case .tcp:
            do throws(WireError) {
                let tcp = try TCPSegment(upper)
                frame.tcp = .init(
                    header: try TCPHeader(parsing: tcp), payloadLength: tcp.payloadLength,
                    checksumValid: tcp.isChecksumValid(source: .v6(source), destination: .v6(destination)))
            } catch { throw LayerError("tcp", error) }
        default:
            break
        }
    }

    /// DHCP between ports 67 and 68 (or 67 and 67), DNS from or to port 53; nothing for other ports.
    func decodeUDPPayload(_ udp: UDPDatagram, into frame: inout DecodedFrame) throws(LayerError) {
        let ports = [udp.sourcePort, udp.destinationPort]
        if ports.contains(BOOTP.serverPort) && ports.contains(where: { $0 == BOOTP.clientPort || $0 == BOOTP.serverPort }) {
            do throws(WireError) { frame.dhcp = try DHCPMessage(parsing: DHCPPacket(udp.payload)) } catch {
                throw LayerError("dhcp", error)
            }
        } else if ports.contains(53) {
            let message: DNSMessage
            var offsets: [Int] = []
            let bytes = udp.payload
            do throws(DNSError) { message = try DNSMessage(parsing: bytes, recordDataOffsets: &offsets) } catch {
                throw LayerError("dns", error)
            }
            var data: [String?] = []
            for (index, answer) in message.answers.enumerated() {
                do throws(LayerError) {
                    data.append(try Self.answerData(answer, in: bytes, at: offsets[index]))
                } catch {
                    data.append(nil)
                    if frame.error == nil { frame.error = "dns: answer \(index + 1) (\(answer.type)) data: \(error.reason)" }
                }
            }
            frame.dns = DNSSummary(message: message, answerData: data)
        }
    }

    /// The text of an answer's data (see `DNSSummary.answerData`); nil for the types not rendered.
    static func answerData(_ record: DNSResourceRecord, in message: ByteView, at offset: Int) throws(LayerError) -> String? {
        switch record.type {
        case .a:
            guard record.data.count == 4 else { throw LayerError("dns", "\(record.data.count) bytes, not 4") }
            return IPv4Address(record.data[0], record.data[1], record.data[2], record.data[3]).description
        case .aaaa:
            guard let address = IPv6Address(octets: record.data), record.data.count == 16 else {
                throw LayerError("dns", "\(record.data.count) bytes, not 16")
            }
            return address.description
        case .cname, .ptr, .ns:
            let name: DNSName
            let end: Int
            do throws(DNSError) { (name, end) = try DNSName.read(from: message, at: offset) } catch { throw LayerError("dns", error) }
            guard end <= offset + record.data.count else {
                throw LayerError("dns", "the name runs \(end - offset - record.data.count) bytes past the record data")
            }
            return name.description
        default:
            return nil
        }
    }
}
