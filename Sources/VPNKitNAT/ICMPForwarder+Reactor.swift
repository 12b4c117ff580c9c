// The ping forwarder on the daemon's reactor: the same host sockets as on SwiftNIO's loop (a raw
// ICMP or ICMPv6 socket with CAP_NET_RAW, else an ICMP datagram socket where the host's
// `net.ipv4.ping_group_range` admits our group), registered as a `ReactorDatagram`.

#if os(Linux)
import Glibc
import NIOCore
import VPNKitBase
import VPNKitReactor
import VPNKitSystem

extension ICMPForwarder {
    /// Opens a raw socket of `family`, or failing that a ping socket, on `reactor` and installs the
    /// forwarder in `nat`; the mode's description, or nil when neither socket is allowed.
    static func open(nat: NAT, family: IPAddress.Family, on reactor: Reactor) -> String? {
        let proto = family == .v6 ? CInt(IPPROTO_ICMPV6) : CInt(IPPROTO_ICMP)
        let any = SocketAddressStorage(family == .v6 ? .v6(.unspecified) : .v4(.any), port: 0)
        for (type, raw) in [(CInt(SOCK_RAW.rawValue), true), (CInt(SOCK_DGRAM.rawValue), false)] {
            // EPERM (raw without CAP_NET_RAW), EACCES (ping outside ping_group_range): the next kind.
            guard let datagram = try? ReactorDatagram.bind(on: reactor, to: any, type: type, protocol: proto, reuseAddress: false) else { continue }
            let forwarder = ICMPForwarder(nat: nat, channel: nil, raw: raw, family: family)
            forwarder.datagram = datagram
            datagram.delegate = forwarder
            if family == .v6 { nat.icmp6 = forwarder } else { nat.icmp = forwarder }
            return forwarder.mode
        }
        return nil
    }
}

extension ICMPForwarder: ReactorDatagramDelegate {
    /// Messages read in one wakeup: to the guest in one driver call.
    func datagramsArrived(_ socket: ReactorDatagram, _ forEach: ((ByteBuffer, IPAddress, UInt16) -> Void) -> Void) {
        guard let nat else { return forEach { _, _, _ in } }
        nat.driver.perform { _, now in
            forEach { data, from, _ in received(data, from: from, nat: nat, now: now) }
        }
    }

    /// An ICMP error about a request sent: the request times out, as on SwiftNIO's loop.
    func datagramError(_ socket: ReactorDatagram, _ error: SystemError) {}
}
#endif
