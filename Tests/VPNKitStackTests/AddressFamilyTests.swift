import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv4
import VPNKitRuntime
import VPNKitStack

let documentationV6 = IPAddress.v6(IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))

@Suite("Address families: identities are IPAddress, the stack carries IPv4 only")
struct AddressFamilyTests {
    @Test("IPv6 at the socket API: each call throws addressFamilyNotSupported, counts it, and sends nothing")
    func ipv6Refused() throws {
        let stack = stackKnowingGuest()
        let v6 = documentationV6
        let refused = StackError.addressFamilyNotSupported(v6)
        #expect(throws: refused) { _ = try stack.bindUDP(port: 53, address: v6) { _ in } }
        let socket = try stack.bindUDP(port: 5000) { _ in }
        #expect(throws: refused) { try socket.send(ByteBuffer(string: "x"), to: v6, port: 53, now: t0) }
        #expect(throws: refused) { try socket.send(ByteBuffer(string: "x"), to: .v4(guestIP), port: 53, from: v6, now: t0) }
        #expect(throws: refused) { try stack.sendUDP(ByteBuffer(string: "x"), from: .v4(gatewayIP), port: 1, to: v6, port: 2, now: t0) }
        #expect(throws: refused) { try stack.sendUDP(ByteBuffer(string: "x"), from: v6, port: 1, to: .v4(guestIP), port: 2, now: t0) }
        #expect(throws: refused) { _ = try stack.connectTCP(to: v6, port: 80, now: t0) }
        #expect(throws: refused) { _ = try stack.connectTCP(to: .v4(guestIP), port: 80, from: v6, now: t0) }
        #expect(throws: refused) {
            try stack.sendForwardedUDP(ByteBuffer(string: "x"), from: v6, port: 53, to: .v4(guestIP), port: 4000, now: t0)
        }
        #expect(throws: refused) {
            try stack.sendForwardedUDP(ByteBuffer(string: "x"), from: .v4(IPv4Address(8, 8, 8, 8)), port: 53, to: v6, port: 4000, now: t0)
        }
        // The calls that do not throw drop and count.
        stack.sendForwardedUDPUnreachable(code: 3, guest: .v4(guestIP), guestPort: 4000, remote: v6, remotePort: 53, now: t0)
        stack.sendForwardedEchoReply(from: v6, to: .v4(guestIP), identifier: 1, sequenceNumber: 1, payload: ByteBuffer(), now: t0)
        #expect(stack.statistics[.addressFamilyNotSupported] == 11)
        #expect(stack.takeOutput().isEmpty)
        #expect(stack.tcpConnectionCount == 0)
        #expect(stack.statistics[.udpSent] == 0 && stack.statistics[.tcpSegmentsSent] == 0 && stack.statistics[.icmpErrorsSent] == 0)
        // The port bound before is still usable over IPv4.
        try socket.send(ByteBuffer(string: "x"), to: .v4(guestIP), port: 53, now: t0)
        #expect(datagrams(in: stack.takeOutput()).count == 1)
    }

    @Test("a forwarded request rebuilt with IPv6 addresses is not pending: accept gives nil, refuse does nothing")
    func ipv6Request() {
        let stack = stackKnowingGuest()
        let request = TCPConnectionRequest(guestAddress: documentationV6, guestPort: 4000, destination: documentationV6, destinationPort: 80)
        #expect(stack.acceptTCPConnectionRequest(request, now: t0) == nil)
        stack.refuseTCPConnectionRequest(request, with: .reset, now: t0)
        #expect(stack.takeOutput().isEmpty)
        #expect(stack.statistics[.forwardedTCPRefused] == 0)
    }

    @Test("ownership, sockets and messages are IPAddress; IPv4 behaves as before")
    func ipv4Identities() throws {
        let stack = stackKnowingGuest()
        #expect(stack.owns(.v4(gatewayIP)) && !stack.owns(.v4(guestIP)) && !stack.owns(documentationV6))
        #expect(throws: StackError.addressNotOwned(.v4(guestIP))) { _ = try stack.bindUDP(port: 1, address: .v4(guestIP)) { _ in } }
        var received: [UDPMessage] = []
        let socket = try stack.bindUDP(port: 7, address: .v4(gatewayIP)) { received.append($0) }
        #expect(socket.address == .v4(gatewayIP))
        stack.receive(Peer().udp([1, 2, 3], from: 40000, to: 7), now: t0)
        try #require(received.count == 1)
        #expect(received[0].source == .v4(guestIP) && received[0].destination == .v4(gatewayIP))
        let tcp = try stack.connectTCP(to: .v4(guestIP), port: 80, now: t0)
        #expect(tcp.localAddress == .v4(gatewayIP) && tcp.remoteAddress == .v4(guestIP))
        #expect(StackError.addressFamilyNotSupported(documentationV6).description.contains("IPv6"))
        #expect(StackCounter.addressFamilyNotSupported.description == "address_family_not_supported")
        #expect(stack.statistics[.addressFamilyNotSupported] == 0)
    }

    @Test("host socket addresses to and from IPAddress, both families")
    func socketAddresses() throws {
        let v6 = try #require(IPv6Address("2001:db8::1:2"))
        let six = try #require(SocketAddress.ip(.v6(v6), port: 5353))
        #expect(six.protocol == .inet6 && six.port == 5353)
        #expect(IPAddress(six) == .v6(v6) && IPv6Address(six) == v6 && IPv4Address(six) == nil)
        #expect(IPAddress(try SocketAddress(ipAddress: "2001:db8::1:2", port: 1)) == .v6(v6))
        let four = try #require(SocketAddress.ip(.v4(IPv4Address(10, 1, 2, 3)), port: 80))
        #expect(four.protocol == .inet && four.port == 80)
        #expect(IPAddress(four) == .v4(IPv4Address(10, 1, 2, 3)) && IPv6Address(four) == nil)
        #expect(IPAddress(try SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 1)) == .v6(IPv6Address(ipv4Mapped: IPv4Address(10, 1, 2, 3))))
    }
}
