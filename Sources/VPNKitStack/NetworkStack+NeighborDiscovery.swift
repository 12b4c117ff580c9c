// Neighbour discovery on the stack's side (RFC 4861): we answer solicitations for our addresses,
// defend them against duplicate address detection, learn guests' link-layer addresses, and act as
// the link's router, answering router solicitations and advertising the prefix.

import NIOCore
import VPNKitBase
import VPNKitIPv6

extension NetworkStack {
    /// A neighbour or router solicitation or a neighbour advertisement, checked as RFC 4861 §6.1.1
    /// and §7.1 ask before anything is learned from it.
    func receiveNeighborDiscovery(_ icmp: ICMPv6Packet, in packet: IPv6Packet, linkSource: MACAddress, now: NIODeadline) {
        // Hop limit 255 proves the message was not forwarded onto the link from elsewhere.
        guard packet.hopLimit == 255, ipv6 != nil else {
            counters.increment(.ndpInvalid)
            return
        }
        let message: NDPMessage
        do { message = try NDPMessage(parsing: icmp) } catch {
            counters.increment(.ndpInvalid)
            return
        }
        let source = packet.source
        let linkAddress = message.linkLayerAddress
        switch message {
        case .neighborSolicitation(let target, _):
            if source.isUnspecified {
                // Duplicate address detection: to a solicited-node group, with no source address option.
                guard packet.destination.isMulticast, linkAddress == nil else {
                    counters.increment(.ndpInvalid)
                    return
                }
                // A guest probing an address of ours is told it is taken; a guest's own address
                // is never claimed.
                guard ownsIPv6(target) else {
                    counters.increment(.ndpSolicitationsIgnored)
                    return
                }
                counters.increment(.ndpDuplicateAddressDefended)
                sendNeighborAdvertisement(for: target, to: .allNodes, at: IPv6Address.allNodes.multicastMAC, solicited: false, now: now)
                return
            }
            guard ownsIPv6(target) else {
                counters.increment(.ndpSolicitationsIgnored)
                return
            }
            if let linkAddress { handle(ipv6?.neighbors.learnedFromSolicitation(source, is: linkAddress, now: now) ?? [], now: now) }
            counters.increment(.ndpSolicitationsAnswered)
            sendNeighborAdvertisement(for: target, to: source, at: linkAddress ?? linkSource, solicited: true, now: now)
        case .neighborAdvertisement(let advertisement):
            // A solicited advertisement is never multicast; one for our own address is a guest
            // claiming it, which we do not accept.
            guard !(packet.destination.isMulticast && advertisement.solicited), !ownsIPv6(advertisement.target) else {
                counters.increment(.ndpInvalid)
                return
            }
            counters.increment(.ndpAdvertisementsReceived)
            handle(
                ipv6?.neighbors.advertised(
                    advertisement.target, mac: linkAddress, solicited: advertisement.solicited, override: advertisement.override, now: now)
                    ?? [],
                now: now)
        case .routerSolicitation:
            guard !(source.isUnspecified && linkAddress != nil) else {
                counters.increment(.ndpInvalid)
                return
            }
            counters.increment(.ndpRouterSolicitationsReceived)
            if source.isUnspecified {
                sendRouterAdvertisement(to: nil, now: now)
            } else {
                if let linkAddress { handle(ipv6?.neighbors.learnedFromSolicitation(source, is: linkAddress, now: now) ?? [], now: now) }
                sendRouterAdvertisement(to: (source, linkAddress ?? linkSource), now: now)
            }
        case .routerAdvertisement:
            counters.increment(.icmpv6OtherReceived)
        }
    }

    /// Advertises that `target` (ours) is at our MAC: as a router, overriding, solicited or not.
    func sendNeighborAdvertisement(for target: IPv6Address, to destination: IPv6Address, at mac: MACAddress, solicited: Bool, now: NIODeadline) {
        var message = ByteBuffer.withHeadroom(capacity: 32)
        NDPMessage.neighborAdvertisement(
            NDPNeighborAdvertisement(
                router: true, solicited: solicited, override: true, target: target, options: [.targetLinkLayerAddress(macAddress)])
        ).prepend(to: &message, source: target, destination: destination)
        sendIPv6(payload: message, nextHeader: .icmpv6, from: target, to: destination, hopLimit: 255, linkDestination: mac, now: now)
    }

    /// A router advertisement (RFC 4861 §6.2.3): to one guest answering its solicitation, or to all
    /// nodes (then the next unsolicited one is scheduled). It carries our link-layer address, the
    /// MTU, the prefix for SLAAC, and the gateway as DNS server with the search list (RFC 8106).
    func sendRouterAdvertisement(to unicast: (address: IPv6Address, mac: MACAddress)?, now: NIODeadline) {
        guard let link = ipv6?.configuration else { return }
        if unicast == nil {
            // All-nodes advertisements at least 3 s apart (MIN_DELAY_BETWEEN_RAS); one asked for
            // sooner goes at the 3 s mark instead.
            if let last = ipv6?.lastMulticastAdvertisement, now - last < .seconds(3) {
                let soonest = last + .seconds(3)
                if ipv6?.nextAdvertisement.map({ soonest < $0 }) ?? true { ipv6?.nextAdvertisement = soonest }
                return
            }
            ipv6?.lastMulticastAdvertisement = now
            let delay = ipv6?.advertisementDelay() ?? .seconds(600)
            ipv6?.nextAdvertisement = now + delay
        }
        let dnsLifetime = UInt32(clamping: 3 * link.maximumAdvertisementInterval.nanoseconds / 1_000_000_000)
        var options: [NDPOption] = [
            .sourceLinkLayerAddress(macAddress),
            .mtu(UInt32(clamping: configuration.mtu)),
            .prefixInformation(
                NDPPrefixInformation(
                    prefix: link.prefix, prefixLength: 64, onLink: true, autonomous: true,
                    validLifetime: link.prefixValidLifetime, preferredLifetime: link.prefixPreferredLifetime)),
        ]
        if link.advertisesDNS { options.append(.recursiveDNSServers(lifetime: dnsLifetime, servers: [link.dnsServer ?? link.gateway])) }
        if !link.searchDomains.isEmpty { options.append(.dnsSearchList(lifetime: dnsLifetime, domains: link.searchDomains)) }
        var advertisement = NDPRouterAdvertisement(routerLifetime: link.routerLifetime, options: options)
        advertisement.currentHopLimit = 64
        advertisement.otherConfiguration = link.otherConfiguration
        let destination = unicast?.address ?? .allNodes
        var message = ByteBuffer.withHeadroom(capacity: 128)
        NDPMessage.routerAdvertisement(advertisement).prepend(to: &message, source: link.linkLocal, destination: destination)
        counters.increment(.ndpRouterAdvertisementsSent)
        sendIPv6(
            payload: message, nextHeader: .icmpv6, from: link.linkLocal, to: destination, hopLimit: 255,
            linkDestination: unicast?.mac ?? IPv6Address.allNodes.multicastMAC, now: now)
    }
}
