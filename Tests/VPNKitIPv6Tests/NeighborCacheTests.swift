// The neighbour cache's states (RFC 4861 §7.3) on a virtual clock: resolution, the table of
// §7.2.5 for advertisements, unreachability detection, and its bounds.

import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv6

@Suite struct NeighborCacheTests {
    private let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    private let guest = IPv6Address("fd00:65::3")!
    private let mac = MACAddress("92:ed:1a:1b:ec:83")!
    private let other = MACAddress("36:42:5c:53:6b:55")!

    private func packet(_ tag: UInt8) -> ByteBuffer { ByteBuffer(bytes: [tag]) }

    private func released(_ actions: [NeighborCacheAction]) -> [UInt8] {
        actions.flatMap { action -> [UInt8] in
            if case .release(_, _, let packets) = action { return packets.flatMap { Array($0.readableBytesView) } }
            return []
        }
    }

    private func solicitations(_ actions: [NeighborCacheAction]) -> [MACAddress?] {
        actions.compactMap { if case .solicit(_, let to) = $0 { return .some(to) } else { return nil } }
    }

    @Test func resolutionHoldsPacketsUntilTheSolicitedAdvertisement() {
        var cache = NeighborCache()
        #expect(solicitations(cache.resolve(guest, holding: packet(1), now: start)) == [nil])
        #expect(cache.resolve(guest, holding: packet(2), now: start).isEmpty)
        #expect(cache.entry(guest)?.state == .incomplete)
        // An advertisement without a target link-layer address says nothing to an INCOMPLETE entry.
        #expect(cache.advertised(guest, mac: nil, solicited: true, override: true, now: start).isEmpty)
        let actions = cache.advertised(guest, mac: mac, solicited: true, override: false, now: start + .milliseconds(5))
        #expect(released(actions) == [1, 2])
        #expect(cache.entry(guest)! == (.reachable, mac))
        #expect(released(cache.resolve(guest, holding: packet(3), now: start + .seconds(1))) == [3])
    }

    @Test func unansweredResolutionGivesUpAfterThreeSolicitations() {
        var cache = NeighborCache()
        _ = cache.resolve(guest, holding: packet(1), now: start)
        #expect(solicitations(cache.poll(now: start + .milliseconds(999))).isEmpty)
        #expect(solicitations(cache.poll(now: start + .seconds(1))) == [nil])
        #expect(solicitations(cache.poll(now: start + .seconds(2))) == [nil])
        let last = cache.poll(now: start + .seconds(3))
        guard case .failed(let address, let dropped)? = last.first else {
            Issue.record("expected failure, got \(last)")
            return
        }
        #expect(address == guest && dropped.count == 1)
        #expect(cache.count == 0 && cache.nextDeadline == nil)
    }

    @Test func unreachabilityDetection() {
        var cache = NeighborCache()
        _ = cache.resolve(guest, holding: packet(1), now: start)
        _ = cache.advertised(guest, mac: mac, solicited: true, override: true, now: start)
        // REACHABLE for 30 s, then STALE.
        _ = cache.poll(now: start + .seconds(30))
        #expect(cache.entry(guest)?.state == .stale)
        // Traffic to a STALE neighbour goes at once and starts DELAY.
        #expect(released(cache.resolve(guest, holding: packet(2), now: start + .seconds(40))) == [2])
        #expect(cache.entry(guest)?.state == .delay)
        // No confirmation within 5 s: PROBE, unicast to the cached address.
        #expect(solicitations(cache.poll(now: start + .seconds(45))) == [mac])
        #expect(cache.entry(guest)?.state == .probe)
        #expect(solicitations(cache.poll(now: start + .seconds(46))) == [mac])
        #expect(solicitations(cache.poll(now: start + .seconds(47))) == [mac])
        // Three probes unanswered: the entry is deleted.
        #expect(cache.poll(now: start + .seconds(48)).isEmpty)
        #expect(cache.entry(guest) == nil)
    }

    @Test func upperLayerConfirmationEndsDelay() {
        var cache = NeighborCache()
        _ = cache.learnedFromSolicitation(guest, is: mac, now: start)
        #expect(cache.entry(guest)! == (.stale, mac))
        _ = cache.resolve(guest, holding: packet(1), now: start + .seconds(1))
        cache.confirm(guest, now: start + .seconds(2))
        #expect(cache.entry(guest)?.state == .reachable)
        #expect(cache.poll(now: start + .seconds(7)).isEmpty)
    }

    @Test func advertisementTableOfRFC4861() {
        var cache = NeighborCache()
        // No entry: an unsolicited advertisement makes none.
        #expect(cache.advertised(guest, mac: mac, solicited: false, override: true, now: start).isEmpty)
        #expect(cache.entry(guest) == nil)
        _ = cache.learnedFromSolicitation(guest, is: mac, now: start)
        cache.confirm(guest, now: start)
        // O clear, a different address: REACHABLE becomes STALE, the address is kept.
        _ = cache.advertised(guest, mac: other, solicited: true, override: false, now: start + .seconds(1))
        #expect(cache.entry(guest)! == (.stale, mac))
        // O clear, different, not REACHABLE: ignored.
        _ = cache.advertised(guest, mac: other, solicited: true, override: false, now: start + .seconds(2))
        #expect(cache.entry(guest)! == (.stale, mac))
        // O set, different, unsolicited: the address is replaced and the entry STALE.
        _ = cache.advertised(guest, mac: other, solicited: false, override: true, now: start + .seconds(3))
        #expect(cache.entry(guest)! == (.stale, other))
        // Solicited, same address: REACHABLE.
        _ = cache.advertised(guest, mac: other, solicited: true, override: false, now: start + .seconds(4))
        #expect(cache.entry(guest)! == (.reachable, other))
        // Unsolicited, no address: no change.
        _ = cache.advertised(guest, mac: nil, solicited: false, override: true, now: start + .seconds(5))
        #expect(cache.entry(guest)! == (.reachable, other))
    }

    @Test func solicitationWithANewAddressMakesTheEntryStale() {
        var cache = NeighborCache()
        _ = cache.resolve(guest, holding: packet(9), now: start)
        // A solicitation from the address we are resolving resolves it (STALE, packets released).
        #expect(released(cache.learnedFromSolicitation(guest, is: mac, now: start + .milliseconds(1))) == [9])
        #expect(cache.entry(guest)! == (.stale, mac))
        cache.confirm(guest, now: start + .seconds(1))
        // The same address again: no change; a new one: recorded, STALE.
        _ = cache.learnedFromSolicitation(guest, is: mac, now: start + .seconds(2))
        #expect(cache.entry(guest)?.state == .reachable)
        _ = cache.learnedFromSolicitation(guest, is: other, now: start + .seconds(3))
        #expect(cache.entry(guest)! == (.stale, other))
    }

    @Test func boundsHoldAtTheirLimits() {
        var configuration = NeighborCacheConfiguration()
        configuration.maximumEntries = 4
        configuration.maximumPendingPerAddress = 2
        configuration.maximumPendingTotal = 3
        var cache = NeighborCache(configuration: configuration)
        let addresses = (1...6).map { IPv6Address(0xFD00, 0x65, 0, 0, 0, 0, 0, UInt16($0)) }
        // Per address: the third packet is refused.
        _ = cache.resolve(addresses[0], holding: packet(1), now: start)
        _ = cache.resolve(addresses[0], holding: packet(2), now: start)
        _ = cache.resolve(addresses[0], holding: packet(3), now: start)
        #expect(cache.queueFullDrops == 1)
        // In total: three held, the next resolution is refused.
        _ = cache.resolve(addresses[1], holding: packet(4), now: start)
        #expect(cache.resolve(addresses[2], holding: packet(5), now: start).isEmpty)
        #expect(cache.queueFullDrops == 2 && cache.count == 2)
        // Resolved entries fill the table; the oldest gives way to a new one.
        for (index, address) in addresses[2...3].enumerated() {
            _ = cache.learnedFromSolicitation(address, is: mac, now: start + .seconds(Int64(index)))
        }
        #expect(cache.count == 4)
        _ = cache.learnedFromSolicitation(addresses[4], is: mac, now: start + .seconds(5))
        #expect(cache.count == 4 && cache.evictions == 1 && cache.entry(addresses[2]) == nil)
        // A table of INCOMPLETE entries only refuses.
        var full = NeighborCache(configuration: configuration)
        for address in addresses[0...3] { _ = full.resolve(address, holding: packet(0), now: start) }
        configuration.maximumPendingTotal = 100
        #expect(full.count == 3)  // the pending total (3) stopped the fourth
        var incomplete = NeighborCache(configuration: configuration)
        for address in addresses[0...3] { _ = incomplete.resolve(address, holding: packet(0), now: start) }
        #expect(incomplete.resolve(addresses[4], holding: packet(0), now: start).isEmpty)
        #expect(incomplete.tableFullDrops == 1 && incomplete.count == 4)
        _ = incomplete.learnedFromSolicitation(addresses[5], is: mac, now: start)
        #expect(incomplete.tableFullDrops == 2 && incomplete.entry(addresses[5]) == nil)
    }
}
