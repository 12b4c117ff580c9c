import VPNKitBase
import VPNKitEthernet
import VPNKitARP
import VPNKitIPv4
import VPNKitUDP
import VPNKitTCP
import VPNKitDHCP
import VPNKitDNS
import VPNKitIPv6

extension DecodedFrame {
    /// The frame as one JSON object in the documented schema (see docs/USAGE.md, "vpnkit decode").
    public var json: JSONValue {
        var o = JSONObjectBuilder()
        o.add("frame", number)
        o.add("len", length)
        if let e = ethernet {
            var j = JSONObjectBuilder()
            j.add("src", e.source)
            j.add("dst", e.destination)
            j.add("type", e.etherType.rawValue)
            if let vlan = e.vlan { j.add("vlan", vlan.id) }
            o.add("eth", j.value)
        }
        if let a = arp {
            var j = JSONObjectBuilder()
            j.add("op", a.operation.rawValue)
            j.add("sha", a.senderHardwareAddress)
            j.add("spa", a.senderProtocolAddress)
            j.add("tha", a.targetHardwareAddress)
            j.add("tpa", a.targetProtocolAddress)
            o.add("arp", j.value)
        }
        if let ip = ipv4 {
            let h = ip.header
            var j = JSONObjectBuilder()
            j.add("src", h.source)
            j.add("dst", h.destination)
            j.add("proto", h.protocol.rawValue)
            j.add("ttl", h.timeToLive)
            j.add("id", h.identification)
            j.add("df", h.dontFragment)
            j.add("mf", h.moreFragments)
            j.add("offset", h.fragmentOffset)
            j.add("len", h.totalLength)
            j.add("ihl", ip.headerLength)
            j.add("checksum_ok", ip.checksumValid)
            o.add("ipv4", j.value)
        }
        if let ip = ipv6 {
            let h = ip.header
            var j = JSONObjectBuilder()
            j.add("src", h.source)
            j.add("dst", h.destination)
            j.add("next_header", h.nextHeader.rawValue)
            j.add("hop_limit", h.hopLimit)
            j.add("payload_len", h.payloadLength)
            j.add("flow_label", h.flowLabel)
            j.add("traffic_class", h.trafficClass)
            o.add("ipv6", j.value)
        }
        if let f = ipv6Fragment {
            var j = JSONObjectBuilder()
            j.add("next_header", f.nextHeader.rawValue)
            j.add("offset", f.offset)
            j.add("more", f.moreFragments)
            j.add("id", f.identification)
            o.add("ipv6_frag", j.value)
        }
        if let icmp {
            let h = icmp.header
            var j = JSONObjectBuilder()
            j.add("type", h.type.rawValue)
            j.add("code", h.code)
            if h.type.hasIdentifierAndSequence {
                j.add("id", h.identifier)
                j.add("seq", h.sequenceNumber)
            }
            j.add("checksum_ok", icmp.checksumValid)
            o.add("icmp", j.value)
        }
        if let icmpv6 {
            let h = icmpv6.header
            var j = JSONObjectBuilder()
            j.add("type", h.type.rawValue)
            j.add("code", h.code)
            j.add("checksum_ok", icmpv6.checksumValid)
            if h.type.hasIdentifierAndSequence {
                j.add("id", h.restOfHeader >> 16)
                j.add("seq", h.restOfHeader & 0xFFFF)
            }
            switch ndp {
            case .neighborSolicitation(let target, _)?: j.add("target", target)
            case .neighborAdvertisement(let advertisement)?: j.add("target", advertisement.target)
            default: break
            }
            if h.type == .packetTooBig { j.add("mtu", h.restOfHeader) }
            o.add("icmpv6", j.value)
        }
        if let udp {
            var j = JSONObjectBuilder()
            j.add("sport", udp.header.sourcePort)
            j.add("dport", udp.header.destinationPort)
            j.add("len", udp.length)
            j.add("checksum_ok", udp.checksumValid)
            o.add("udp", j.value)
        }
        if let tcp {
            let h = tcp.header
            var j = JSONObjectBuilder()
            j.add("sport", h.sourcePort)
            j.add("dport", h.destinationPort)
            j.add("seq", h.sequenceNumber.rawValue)
            j.add("ack", h.acknowledgmentNumber.rawValue)
            j.add("flags", h.flags.rawValue)
            j.add("window", h.window)
            j.add("payload_len", tcp.payloadLength)
            j.add("checksum_ok", tcp.checksumValid)
            var options = JSONObjectBuilder()
            if let mss = h.maximumSegmentSize { options.add("mss", mss) }
            if let shift = h.windowScale { options.add("wscale", shift) }
            if h.sackPermitted { options.add("sack_permitted", true) }
            let blocks = h.options.flatMap { option -> [SACKBlock] in
                if case .sack(let b) = option { return b }
                return []
            }
            if h.options.contains(where: { if case .sack = $0 { return true } else { return false } }) {
                options.add("sack", .array(blocks.map { .array([.int(Int64($0.left)), .int(Int64($0.right))]) }))
            }
            if let ts = h.timestamps { options.add("ts", .array([.int(Int64(ts.value)), .int(Int64(ts.echoReply))])) }
            j.add("options", options.value)
            o.add("tcp", j.value)
        }
        if let d = dhcp {
            var j = JSONObjectBuilder()
            j.add("op", d.op)
            j.add("xid", d.transactionID)
            j.add("ciaddr", d.clientAddress)
            j.add("yiaddr", d.yourAddress)
            j.add("siaddr", d.serverAddress)
            j.add("chaddr", d.clientHardwareAddress)
            // The options were parsed when the frame was decoded; an overloaded area that fails now
            // contributes nothing rather than failing the render.
            let all = (try? d.allOptions()) ?? d.options
            if let type = all.messageType { j.add("msg_type", type.rawValue) }
            var opts = JSONObjectBuilder()
            if let v = all.subnetMask { opts.add("subnet_mask", v) }
            if let v = all.routers { opts.add("router", .array(v.map { .string($0.description) })) }
            if let v = all.domainNameServers { opts.add("dns", .array(v.map { .string($0.description) })) }
            if let v = all.leaseTime { opts.add("lease_time", v) }
            if let v = all.serverIdentifier { opts.add("server_id", v) }
            if let v = all.requestedIPAddress { opts.add("requested_ip", v) }
            if let v = all.interfaceMTU { opts.add("mtu", v) }
            if let v = try? all.domainSearch() { opts.add("domain_search", .array(v.map { .string($0) })) }
            if let v = all.hostName { opts.add("hostname", v) }
            if let v = all.parameterRequestList { opts.add("param_request", .array(v.map { .int(Int64($0.rawValue)) })) }
            j.add("options", opts.value)
            o.add("dhcp", j.value)
        }
        if let dns {
            let m = dns.message
            var j = JSONObjectBuilder()
            j.add("id", m.header.id)
            j.add("qr", m.header.isResponse)
            j.add("rcode", m.header.responseCode.rawValue)
            j.add("questions", .array(m.questions.map { q in .object([("name", .string(q.name.description)), ("type", .int(Int64(q.type.rawValue)))]) }))
            let answers = m.answers.enumerated().map { index, answer -> JSONValue in
                var a = JSONObjectBuilder()
                a.add("name", answer.name)
                a.add("type", answer.type.rawValue)
                a.add("ttl", answer.ttl)
                if index < dns.answerData.count, let data = dns.answerData[index] { a.add("data", data) }
                return a.value
            }
            j.add("answers", .array(answers))
            o.add("dns", j.value)
        }
        if let error { o.add("error", error) }
        return o.value
    }
}
