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
    /// One readable line, tcpdump-like: "12 74B 02:..:01 > 02:..:02 IPv4 10.0.0.1 > 10.0.0.2 TCP 5000 > 80 [S] seq 1 win 64240 <mss 1460,...>".
    public var line: String {
        var parts: [String] = ["\(number)", "\(length)B"]
        if let e = ethernet {
            var text = "\(e.source) > \(e.destination)"
            if let vlan = e.vlan { text += " vlan \(vlan.id)" }
            text += " \(e.etherType)"
            parts.append(text)
        }
        if let a = arp {
            switch a.operation {
            case .request: parts.append("who-has \(a.targetProtocolAddress) tell \(a.senderProtocolAddress)")
            case .reply: parts.append("\(a.senderProtocolAddress) is-at \(a.senderHardwareAddress)")
            default: parts.append("op \(a.operation.rawValue) \(a.senderProtocolAddress) > \(a.targetProtocolAddress)")
            }
        }
        if let ip = ipv4 {
            let h = ip.header
            var text = "\(h.source) > \(h.destination) \(h.protocol) ttl \(h.timeToLive) id \(h.identification) len \(h.totalLength)"
            if h.dontFragment { text += " DF" }
            if h.moreFragments || h.fragmentOffset > 0 { text += " frag \(h.fragmentOffset)\(h.moreFragments ? "+" : "")" }
            if !ip.checksumValid { text += " [bad ip checksum]" }
            parts.append(text)
        }
        if let ip = ipv6 {
            let h = ip.header
            var text = "\(h.source) > \(h.destination) \(ip.chain?.upperLayer ?? h.nextHeader) hlim \(h.hopLimit) plen \(h.payloadLength)"
            if h.flowLabel != 0 { text += " flow 0x\(String(h.flowLabel, radix: 16))" }
            if h.trafficClass != 0 { text += " tc 0x\(String(h.trafficClass, radix: 16))" }
            if let chain = ip.chain, chain.headerCount > 0 {
                text += " exthdrs \(chain.headerCount)" + (chain.routerAlert ? " router-alert" : "")
            }
            if let f = ipv6Fragment { text += " frag \(f.offset)\(f.moreFragments ? "+" : "") id \(f.identification)" }
            parts.append(text)
        }
        if let icmp {
            let h = icmp.header
            var text = "type \(h.type.rawValue) code \(h.code)"
            if h.type.hasIdentifierAndSequence { text += " id \(h.identifier) seq \(h.sequenceNumber)" }
            if !icmp.checksumValid { text += " [bad icmp checksum]" }
            parts.append(text)
        }
        if let icmpv6 {
            let h = icmpv6.header
            var text = "\(h.type)"
            if h.type.isError || h.code != 0 { text += " code \(h.code)" }
            if h.type.hasIdentifierAndSequence { text += " id \(h.restOfHeader >> 16) seq \(h.restOfHeader & 0xFFFF)" }
            if h.type == .packetTooBig { text += " mtu \(h.restOfHeader)" }
            if let ndp { text += Self.text(ndp) }
            if !icmpv6.checksumValid { text += " [bad icmpv6 checksum]" }
            parts.append(text)
        }
        if let udp {
            var text = "\(udp.header.sourcePort) > \(udp.header.destinationPort) len \(udp.length)"
            if !udp.checksumValid { text += " [bad udp checksum]" }
            parts.append(text)
        }
        if let tcp {
            let h = tcp.header
            var text = "\(h.sourcePort) > \(h.destinationPort) [\(h.flags)] seq \(h.sequenceNumber) ack \(h.acknowledgmentNumber) win \(h.window) len \(tcp.payloadLength)"
            let options = h.options.compactMap { option -> String? in
                switch option {
                case .maximumSegmentSize(let v): return "mss \(v)"
                case .windowScale(let v): return "wscale \(v)"
                case .sackPermitted: return "sackOK"
                case .sack(let blocks): return "sack " + blocks.map { "\($0.left):\($0.right)" }.joined(separator: " ")
                case .timestamps(let v, let e): return "TS \(v):\(e)"
                case .unknown(let kind, let data): return "opt\(kind)[\(data.count)]"
                case .noOperation, .endOfList: return nil
                }
            }
            if !options.isEmpty { text += " <" + options.joined(separator: ",") + ">" }
            if !tcp.checksumValid { text += " [bad tcp checksum]" }
            parts.append(text)
        }
        if let d = dhcp {
            let all = (try? d.allOptions()) ?? d.options
            var text = "DHCP \(all.messageType.map(\.description) ?? "BOOTP op \(d.op)") xid 0x\(String(d.transactionID, radix: 16)) chaddr \(d.clientHardwareAddress)"
            if d.yourAddress != .any { text += " yiaddr \(d.yourAddress)" }
            if let requested = all.requestedIPAddress { text += " requested \(requested)" }
            parts.append(text)
        }
        if let dns {
            let m = dns.message
            var text = "DNS \(m.header.isResponse ? "response" : "query") \(m.header.id)"
            if m.header.isResponse { text += " \(m.header.responseCode)" }
            text += m.questions.map { " \($0.type)? \($0.name)" }.joined()
            let answers = m.answers.enumerated().map { index, answer in
                "\(answer.name) \(answer.type)" + (index < dns.answerData.count ? dns.answerData[index].map { " \($0)" } ?? "" : "")
            }
            if !answers.isEmpty { text += " -> " + answers.joined(separator: ", ") }
            parts.append(text)
        }
        if let error { parts.append("!! " + error) }
        return parts.joined(separator: " | ")
    }
}

extension DecodedFrame {
    /// The fields of a neighbour discovery message worth a glance, with a leading space.
    static func text(_ message: NDPMessage) -> String {
        var text = ""
        switch message {
        case .routerSolicitation:
            break
        case .routerAdvertisement(let ra):
            text += " lifetime \(ra.routerLifetime)"
            for option in ra.options {
                switch option {
                case .prefixInformation(let info): text += " prefix \(info.prefix)/\(info.prefixLength)"
                case .mtu(let mtu): text += " mtu \(mtu)"
                case .recursiveDNSServers(_, let servers): text += " rdnss " + servers.map(\.description).joined(separator: ",")
                case .dnsSearchList(_, let domains): text += " dnssl " + domains.joined(separator: ",")
                default: continue
                }
            }
        case .neighborSolicitation(let target, _):
            text += " who-has \(target)"
        case .neighborAdvertisement(let na):
            let flags = (na.router ? "R" : "") + (na.solicited ? "S" : "") + (na.override ? "O" : "")
            text += " \(na.target)" + (flags.isEmpty ? "" : " [\(flags)]")
        }
        if let mac = message.linkLayerAddress { text += " lladdr \(mac)" }
        return text
    }
}
