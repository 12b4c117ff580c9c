// The IPv6 targets: the fixed header and the extension-header walk, ICMPv6, neighbour discovery, and
// the decoder on IPv6 packets. Each checks what it can: no trap, and what parses re-emits to the
// same bytes or the same value.

import NIOCore
import VPNKitBase
import VPNKitDecode
import VPNKitEthernet
import VPNKitIPv6

/// The addresses the ICMPv6 and NDP targets checksum over.
let fuzzSourceV6 = IPv6Address(high: 0xFE80_0000_0000_0000, low: 1)
let fuzzDestinationV6 = IPv6Address(high: 0xFD00_0065_0000_0000, low: 2)

func fuzzIPv6(_ buffer: ByteBuffer) {
    guard let packet = try? IPv6Packet(buffer) else { return }
    consume((packet.trafficClass, packet.flowLabel, packet.nextHeader, packet.hopLimit, packet.source, packet.destination))
    let end = IPv6Packet.headerLength + packet.payloadLength
    let walk = Result { () throws(IPv6HeaderChainError) in try packet.headerChain() }
    if case .success(let chain) = walk {
        precondition(chain.upperLayerOffset >= 40 && chain.upperLayerOffset <= end, "the upper layer starts outside the packet")
        precondition(chain.headerCount <= IPv6ExtensionLimits().maximumHeaders, "more headers walked than the limit")
        if let offset = chain.fragmentHeaderOffset { precondition(offset >= 40 && offset + 8 <= end, "the fragment header lies outside the packet") }
        precondition((chain.fragment == nil) == (chain.fragmentHeaderOffset == nil), "a fragment header without its offset")
        if let fragment = chain.fragment {
            // The fragment header re-emits the same fields (reserved bits written as zero).
            var out = ByteBuffer.withHeadroom(capacity: 0)
            fragment.prepend(to: &out)
            let original = packet.bytes.view(from: chain.fragmentHeaderOffset ?? 0, length: 8)
            let emitted = ByteView(out)
            precondition(
                emitted.loadU8(at: 0) == original.loadU8(at: 0) && emitted.loadU16(at: 2) == original.loadU16(at: 2) & 0xFFF9
                    && emitted.loadU32(at: 4) == original.loadU32(at: 4), "the fragment header round trip changed a field")
        }
    }
    // Tighter bounds can only refuse more: whatever they accept, the defaults accept the same way.
    var tight = IPv6ExtensionLimits()
    tight.maximumHeaders = 2
    tight.maximumBytes = 64
    tight.maximumOptions = 2
    if let chain = try? packet.headerChain(limits: tight) {
        precondition(walk == .success(chain), "tighter limits changed what the walk found")
    }
    // The fixed header re-emits byte for byte in front of its payload, and the walk finds the same.
    let header = IPv6Header(parsing: packet)
    var out = ByteBuffer.withHeadroom(capacity: packet.payloadLength)
    out.writeImmutableBuffer(packet.payload.buffer)
    header.prepend(to: &out)
    precondition(out.readableBytesView.elementsEqual(packet.packet.buffer.readableBytesView), "IPv6 round trip changed the bytes")
    guard let again = try? IPv6Packet(out) else { fatalError("a re-encoded IPv6 packet does not parse") }
    precondition(IPv6Header(parsing: again) == header, "IPv6 round trip changed the header")
    precondition(Result { () throws(IPv6HeaderChainError) in try again.headerChain() } == walk, "IPv6 round trip changed the walk")
}

func fuzzICMPv6(_ buffer: ByteBuffer) {
    guard let message = try? ICMPv6Packet(buffer) else { return }
    consume((message.type, message.code, message.checksum, message.restOfHeader, message.identifier, message.sequenceNumber))
    consume((message.type.isError, message.type.description, message.isChecksumValid(source: fuzzSourceV6, destination: fuzzDestinationV6)))
    // The header re-emits in front of the same body, with a checksum that verifies.
    let header = ICMPv6Header(parsing: message)
    var out = ByteBuffer.withHeadroom(capacity: message.body.count)
    out.writeImmutableBuffer(message.body.buffer)
    header.prepend(to: &out, source: fuzzSourceV6, destination: fuzzDestinationV6)
    guard let again = try? ICMPv6Packet(out) else { fatalError("a re-encoded ICMPv6 message does not parse") }
    precondition(ICMPv6Header(parsing: again) == header, "ICMPv6 round trip changed the header")
    precondition(again.body.buffer.readableBytesView.elementsEqual(message.body.buffer.readableBytesView), "ICMPv6 round trip changed the body")
    precondition(again.isChecksumValid(source: fuzzSourceV6, destination: fuzzDestinationV6), "an ICMPv6 message we wrote does not verify")
}

/// The input is an ICMPv6 message whose type is folded into 133...136 (RS, RA, NS, NA), so every
/// input reaches the neighbour discovery parser; the option parser also runs on the raw bytes.
func fuzzNDP(_ buffer: ByteBuffer) {
    consume(try? NDPOptions.parse(ByteView(buffer)))
    var bytes = [UInt8](buffer.readableBytesView)
    guard !bytes.isEmpty else { return }
    if !(133...136).contains(bytes[0]) { bytes[0] = 133 + bytes[0] % 4 }
    guard let packet = try? ICMPv6Packet(ByteBuffer(bytes: bytes)), let message = try? NDPMessage(parsing: packet) else { return }
    consume((message.type, message.options, message.linkLayerAddress))
    var out = ByteBuffer.withHeadroom(capacity: 0)
    message.prepend(to: &out, source: fuzzSourceV6, destination: fuzzDestinationV6)
    guard let again = try? ICMPv6Packet(out) else { fatalError("a re-encoded NDP message is not ICMPv6") }
    precondition(again.isChecksumValid(source: fuzzSourceV6, destination: fuzzDestinationV6), "an NDP message we wrote does not verify")
    let reparsed = try? NDPMessage(parsing: again)
    guard ndpSearchListsSurvive(message) else { return }
    precondition(reparsed == message, "NDP round trip changed the message")
}

/// Whether the DNSSL names re-encode to what was parsed: text names hold no replacement characters
/// (the labels were UTF-8), no empty or over-long labels, and the option still fits a length byte.
func ndpSearchListsSurvive(_ message: NDPMessage) -> Bool {
    for option in message.options {
        guard case .dnsSearchList(_, let domains) = option else { continue }
        for domain in domains {
            if domain.unicodeScalars.contains("\u{FFFD}") { return false }
            for label in domain.split(separator: ".", omittingEmptySubsequences: false) where label.isEmpty || label.utf8.count > 63 {
                return false
            }
        }
        if option.encoded.count > 255 * 8 { return false }
    }
    return true
}

/// The decoder on an IPv6 packet, as a raw IPv6 capture holds it and inside an Ethernet frame: the
/// layers above the link come out the same, renders do not trap, and the layers present agree with
/// the extension-header walk.
func fuzzDecode(_ buffer: ByteBuffer) {
    let raw = FrameDecoder(linkType: 229).decode(buffer, number: 1)
    consume((raw.json.serialized, raw.line))
    var framed = ByteBuffer.withHeadroom(capacity: buffer.readableBytes)
    framed.writeImmutableBuffer(buffer)
    EthernetHeader(destination: MACAddress(rawValue: 0x0200_0000_0001), source: MACAddress(rawValue: 0x0200_0000_0002), etherType: .ipv6)
        .prepend(to: &framed)
    let ethernet = FrameDecoder().decode(framed, number: 1)
    consume(ethernet.line)
    precondition(aboveLink(ethernet.json) == aboveLink(raw.json), "the Ethernet and raw IPv6 decodes differ above the link")
    if buffer.readableBytes > 0, buffer.getInteger(at: buffer.readerIndex, as: UInt8.self)! >> 4 == 6 {
        precondition(FrameDecoder(linkType: 101).decode(buffer, number: 1).json == raw.json, "LINKTYPE_RAW decodes IPv6 differently")
    }
    let upper = [raw.icmpv6 != nil, raw.udp != nil, raw.tcp != nil].filter { $0 }.count
    precondition(upper <= 1, "more than one upper layer")
    precondition(raw.ipv4 == nil && raw.icmp == nil && raw.arp == nil && raw.ethernet == nil, "IPv4 layers from an IPv6 packet")
    guard let ip = raw.ipv6 else {
        precondition(upper == 0 && raw.ipv6Fragment == nil && raw.error != nil, "layers without an IPv6 header, or no error")
        return
    }
    guard let chain = ip.chain else {
        precondition(upper == 0 && raw.error?.hasPrefix("ipv6: ") == true, "a refused walk without its error")
        return
    }
    precondition(raw.ipv6Fragment == chain.fragment, "the fragment header reported is not the walk's")
    if let fragment = chain.fragment, !fragment.isAtomic {
        precondition(upper == 0 && raw.ndp == nil && raw.dns == nil && raw.dhcp == nil, "a layer above a fragment")
        return
    }
    if raw.error == nil {
        switch chain.upperLayer {
        case .icmpv6: precondition(raw.icmpv6 != nil, "ICMPv6 missing")
        case .udp: precondition(raw.udp != nil, "UDP missing")
        case .tcp: precondition(raw.tcp != nil, "TCP missing")
        default: precondition(upper == 0, "an upper layer the walk did not name")
        }
    }
    if raw.ndp != nil { precondition(raw.icmpv6 != nil, "NDP without ICMPv6") }
    if raw.dns != nil || raw.dhcp != nil { precondition(raw.udp != nil, "DNS or DHCP without UDP") }
}

/// A decoded frame's JSON without the members that depend on the link (`len`, `eth`).
func aboveLink(_ value: JSONValue) -> JSONValue {
    guard case .object(let members) = value else { return value }
    return .object(members.filter { $0.0 != "len" && $0.0 != "eth" })
}
