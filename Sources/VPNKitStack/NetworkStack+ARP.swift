import NIOCore
import VPNKitARP
import VPNKitBase
import VPNKitEthernet

// ARP in the stack: answering for owned addresses, learning senders, resolving next hops.
extension NetworkStack {
    func receiveARP(_ frame: EthernetFrame, now: NIODeadline) {
        let arp: ARPPacket
        do { arp = try ARPPacket(frame.payload) } catch {
            counters.increment(.arpMalformed)
            return
        }
        let sender = arp.senderProtocolAddress
        let target = arp.targetProtocolAddress
        arpObserver?(ARPHeader(parsing: arp), now)
        let forUs = owns(target)
        // RFC 826: update an existing entry from any ARP; create one only when addressed to us. Never
        // learn an owned address, the zero address (probes) or a group MAC.
        // Entries are created only for addresses on our subnet (not its network or broadcast address),
        // so a guest cannot fill the table with arbitrary senders.
        let onLink = configuration.subnet.contains(sender) && sender != configuration.subnet.network
            && sender != configuration.subnet.broadcast
        if sender != .any, !owns(sender), !arp.senderHardwareAddress.isMulticast, onLink || configuration.addresses.isEmpty,
            isFromLeaseHolder(sender, arp.senderHardwareAddress, frame.source, now: now)
        {
            if onLink, sender != guestIPv4Address { guestIPv4Address = sender }
            for action in arpCache.learn(sender, is: arp.senderHardwareAddress, create: forUs, now: now) {
                handle(action, now: now)
            }
        }
        switch arp.operation {
        case .request:
            guard forUs else {
                counters.increment(.arpRequestsIgnored)
                return
            }
            counters.increment(.arpRequestsAnswered)
            emitARP(
                ARPHeader(
                    operation: .reply, senderHardwareAddress: macAddress, senderProtocolAddress: target,
                    targetHardwareAddress: arp.senderHardwareAddress, targetProtocolAddress: sender),
                to: arp.senderHardwareAddress)
        case .reply:
            counters.increment(.arpRepliesReceived)
        default:
            counters.increment(.arpMalformed)
        }
    }

    func emitARP(_ header: ARPHeader, to destination: MACAddress) {
        var buffer = ByteBuffer.withHeadroom(Headroom.ethernet + ARPPacket.length, capacity: 0)
        header.prepend(to: &buffer)
        EthernetHeader(destination: destination, source: macAddress, etherType: .arp).prepend(to: &buffer)
        transmit(buffer)
    }

    func handle(_ action: ARPCacheAction, now: NIODeadline) {
        switch action {
        case .sendRequest(let address):
            counters.increment(.arpRequestsSent)
            emitARP(
                ARPHeader(
                    operation: .request, senderHardwareAddress: macAddress, senderProtocolAddress: configuration.gateway,
                    targetHardwareAddress: .zero, targetProtocolAddress: address), to: .broadcast)
        case .release(_, let mac, var packets):
            // Taken out of the array one by one, so each is the only reference to its storage.
            for index in packets.indices {
                let packet = packets[index]
                packets[index] = ByteBuffer()
                transmitIPv4(packet, to: mac)
            }
        case .failed(_, let dropped):
            counters.increment(.arpResolutionFailed)
            counters.increment(.arpHeldPacketsDropped, by: UInt64(dropped))
        }
    }

    /// Whether an ARP packet naming `address` at `mac`, in a frame from `linkSource`, may be learned:
    /// when `leaseHolder` says a lease holds the address, only from that lease's MAC (as the ARP
    /// sender and as the frame's source). Counts a refusal (`arpNotFromLeaseHolder`).
    private func isFromLeaseHolder(_ address: IPv4Address, _ mac: MACAddress, _ linkSource: MACAddress, now: NIODeadline) -> Bool {
        guard let leaseHolder, let holder = leaseHolder(address, now) else { return true }
        guard mac == holder, linkSource == holder else {
            counters.increment(.arpNotFromLeaseHolder)
            return false
        }
        return true
    }
}
