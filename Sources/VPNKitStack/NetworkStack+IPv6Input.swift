// IPv6 input: a packet is checked once (header, source, destination), its extension headers
// walked within bounds, reassembled when it is a fragment, and handed to ICMPv6 or UDP.

import NIOCore
public import VPNKitBase
public import VPNKitIPv6

extension NetworkStack {
    func receiveIPv6(_ bytes: ByteView, linkSource: MACAddress, now: NIODeadline) {
        counters.increment(.ipv6Received)
        let packet: IPv6Packet
        do { packet = try IPv6Packet(bytes) } catch {
            counters.increment(.ipv6Malformed)
            return
        }
        // The state is read through `ipv6?` and never copied out: a copy alive while reassembly or
        // the neighbour cache changes would copy their tables.
        guard let limits = ipv6?.configuration.extensionHeaders else { return }
        let source = packet.source
        let destination = packet.destination
        // A multicast source is impossible; one of ours means a guest is spoofing us (or looping).
        guard !source.isMulticast, !ownsIPv6(source) else {
            counters.increment(.ipv6BadSource)
            return
        }
        // The guest's global address, for published ports: not link-local, in our prefix.
        if source.high == ipv6?.configuration.prefix.high, source != ipv6?.guestAddress { ipv6?.guestAddress = source }
        // Beyond the link (or to the host alias) a unicast destination may go to the forwarder.
        let forwarded = isForwarded(.v6(destination))
        guard forwarded || ownsIPv6(destination) || ipv6?.listens(to: destination) == true else {
            counters.increment(.ipv6NotForUs)
            if source.isUnspecified { noteDuplicateAddressDetection(packet) }
            // Beyond the link and not forwarded there is no route: say so at once (ICMPv6 no route,
            // code 0), so a guest's connect fails now and it tries IPv4, instead of waiting out a timeout.
            if !destination.isMulticast, !destination.isLinkLocal, ipv6?.configuration.onLink(destination) == false {
                counters.increment(.ipv6NoRoute)
                sendICMPv6Error(type: .destinationUnreachable, code: 0, about: packet, now: now)
            }
            return
        }
        // Only the guest's own prefix or link-local sources are carried to host sockets: a spoofed
        // outside source would make the NAT open flows whose replies go nowhere.
        if forwarded, ipv6?.configuration.onLink(source) != true {
            counters.increment(.forwardedBadSource)
            return
        }
        let chain: IPv6HeaderChain
        do { chain = try packet.headerChain(limits: limits) } catch {
            counters.increment(.ipv6ExtensionHeaderDrops)
            if case .parameterProblem(let code, let pointer, let unlessMulticast) = error, !(unlessMulticast && destination.isMulticast) {
                sendICMPv6Error(type: .parameterProblem, code: code, restOfHeader: UInt32(pointer), about: packet, now: now)
            }
            return
        }
        if let fragment = chain.fragment, !fragment.isAtomic {
            counters.increment(.ipv6FragmentsReceived)
            switch ipv6?.reassembler.add(packet, chain: chain, now: now) ?? .dropped(.limit) {
            case .incomplete:
                return
            case .dropped:
                counters.increment(.ipv6ReassemblyDrops)
                return
            case .complete(let whole):
                counters.increment(.ipv6Reassembled)
                guard let reassembled = try? IPv6Packet(whole), let wholeChain = try? reassembled.headerChain(limits: limits),
                    wholeChain.fragment == nil
                else {
                    counters.increment(.ipv6ExtensionHeaderDrops)
                    return
                }
                deliverIPv6(reassembled, chain: wholeChain, linkSource: linkSource, now: now)
                return
            }
        }
        deliverIPv6(packet, chain: chain, linkSource: linkSource, now: now)
    }

    /// Hands a whole packet to its upper layer.
    private func deliverIPv6(_ packet: IPv6Packet, chain: IPv6HeaderChain, linkSource: MACAddress, now: NIODeadline) {
        let upper = packet.bytes.view(from: chain.upperLayerOffset, length: 40 + packet.payloadLength - chain.upperLayerOffset)
        switch chain.upperLayer {
        case .icmpv6:
            receiveICMPv6(upper, in: packet, linkSource: linkSource, now: now)
        case .udp:
            receiveUDP(upper, in: packet, linkSource: linkSource, now: now)
        case .tcp:
            receiveTCP(upper, from: .v6(packet.source), to: .v6(packet.destination), broadcast: packet.destination.isMulticast, now: now)
        case .ipv6NoNextHeader:
            return
        default:
            counters.increment(.ipv6UnknownNextHeader)
            if !packet.destination.isMulticast {
                sendICMPv6Error(
                    type: .parameterProblem, code: 1, restOfHeader: UInt32(chain.nextHeaderFieldOffset), about: packet, now: now)
            }
        }
    }

    /// A guest's duplicate address detection for an address in our prefix (a neighbour
    /// solicitation from `::` to the address's solicited-node group, RFC 4862 §5.4.2) names the
    /// address it is about to take: a guest that has sent nothing from it yet can still be reached
    /// there by published ports. Not validated further: it only ever names the guest's own choice.
    private func noteDuplicateAddressDetection(_ packet: IPv6Packet) {
        guard let prefix = ipv6?.configuration.prefix, packet.nextHeader == .icmpv6, packet.hopLimit == 255,
            packet.payloadLength >= 24, packet.destination.high == 0xFF02_0000_0000_0000,
            packet.destination.low >> 24 == 0x0000_0001_FF, packet.bytes.loadU8(at: 40) == 135
        else { return }
        let target = packet.bytes.loadIPv6Address(at: 48)
        guard target.high == prefix.high, !ownsIPv6(target), packet.destination == target.solicitedNode else { return }
        ipv6?.guestAddress = target
    }

    /// The guest's IPv6 address in the prefix (not link-local) most recently seen as the source of
    /// its packets or the target of its duplicate address detection; nil before any, or without IPv6.
    /// What a published port reaches the guest at over IPv6.
    public var guestIPv6Address: IPv6Address? { ipv6?.guestAddress }

    /// The IPv6 neighbour cache (read-only, for inspection); nil without IPv6.
    public var neighborCache: NeighborCache? { ipv6?.neighbors }
    /// The IPv6 packets being reassembled (read-only, for inspection); nil without IPv6.
    public var ipv6Reassembler: IPv6Reassembler? { ipv6?.reassembler }

    /// Whether `address` is one of our IPv6 addresses.
    func ownsIPv6(_ address: IPv6Address) -> Bool { ipv6?.owns(address) ?? false }

    /// IPv6's timers: neighbour discovery, reassembly, router advertisements.
    func pollIPv6(now: NIODeadline) {
        handle(ipv6?.neighbors.poll(now: now) ?? [], now: now)
        counters.increment(.ipv6ReassemblyDrops, by: UInt64(ipv6?.reassembler.poll(now: now) ?? 0))
        ipv6?.expirePathMTUs(now: now)
        if let due = ipv6?.nextAdvertisement, due <= now { sendRouterAdvertisement(to: nil, now: now) }
    }
}
