// The guest's IPv6 address for published ports: learned from the in-prefix source of its packets
// or from its duplicate address detection, never from link-local sources or our own addresses.

import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv6
import VPNKitStack

@Suite("the guest's IPv6 address, for published ports")
struct GuestIPv6AddressTests {
    let guest = Guest6()

    @Test("learned from the source of a packet in the prefix; link-local sources and other prefixes do not count")
    func fromTraffic() {
        let stack = ipv6Stack()
        #expect(stack.guestIPv6Address == nil)
        stack.receive(guest.routerSolicitation(), now: t0)
        var linkLocal = guest
        linkLocal.address = guestLinkLocal
        stack.receive(linkLocal.udp(Array("x".utf8), to: 9, destination: gatewayLinkLocal), now: t0)
        var outside = guest
        outside.address = IPv6Address("2001:db8::3")!
        stack.receive(outside.udp(Array("x".utf8), to: 9), now: t0)
        #expect(stack.guestIPv6Address == nil)
        stack.receive(guest.udp(Array("x".utf8), to: 9), now: t0)
        #expect(stack.guestIPv6Address == guest6)
        // The most recent one wins (a guest that changed its address).
        var renumbered = guest
        renumbered.address = IPv6Address("fd00:65::77")!
        stack.receive(renumbered.echoRequest(size: 8), now: t0)
        #expect(stack.guestIPv6Address == IPv6Address("fd00:65::77"))
    }

    @Test("learned from duplicate address detection before the guest sends anything from the address; not for our own addresses or other prefixes")
    func fromDuplicateAddressDetection() {
        let stack = ipv6Stack()
        stack.receive(guest.duplicateAddressProbe(for: gateway6), now: t0)
        stack.receive(guest.duplicateAddressProbe(for: IPv6Address("2001:db8::5")!), now: t0)
        stack.receive(guest.duplicateAddressProbe(for: IPv6Address("fe80::5")!), now: t0)
        #expect(stack.guestIPv6Address == nil)
        stack.receive(guest.duplicateAddressProbe(for: IPv6Address("fd00:65::abcd")!), now: t0)
        #expect(stack.guestIPv6Address == IPv6Address("fd00:65::abcd"))
    }

    @Test("none without IPv6")
    func noIPv6() {
        var configuration = StackConfiguration()
        configuration.gratuitousARPOnStart = false
        let stack = NetworkStack(configuration: configuration)
        stack.receive(guest.udp(Array("x".utf8), to: 9), now: t0)
        #expect(stack.guestIPv6Address == nil)
    }
}
