// The extension header walk against hostile chains: its bounds, RFC 8200's ordering rule, option
// actions and routing headers.

import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv6

@Suite struct IPv6ExtensionHeaderTests {
    /// A packet whose payload is `headers` (each a next-header type and the header's bytes after
    /// its first byte) followed by 8 bytes of UDP-ish upper layer.
    private func packet(first: UInt8, _ headers: [(next: UInt8, rest: [UInt8])]) throws -> IPv6Packet {
        var payload: [UInt8] = []
        for header in headers { payload += [header.next] + header.rest }
        payload += [UInt8](repeating: 0, count: 8)
        var bytes: [UInt8] = [0x60, 0, 0, 0, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF), first, 64]
        bytes += IPv6Address("fd00:65::3")!.octets + IPv6Address("fd00:65::1")!.octets
        return try IPv6Packet(ByteBuffer(bytes: bytes + payload))
    }

    /// An 8-byte options header (length field 0) with these option bytes after the two fixed ones,
    /// padded with Pad1.
    private func options(_ content: [UInt8]) -> [UInt8] {
        [0] + content + [UInt8](repeating: 0, count: 6 - content.count)
    }

    @Test func destinationOptionsThenUDP() throws {
        let chain = try packet(first: 60, [(17, options([1, 2, 0, 0]))]).headerChain()
        #expect(chain.upperLayer == .udp && chain.upperLayerOffset == 48 && chain.nextHeaderFieldOffset == 40 && chain.headerCount == 1)
    }

    @Test func theChainIsBoundedInHeadersAndBytes() throws {
        let nine = Array(repeating: (next: UInt8(60), rest: options([])), count: 8) + [(next: UInt8(17), rest: options([]))]
        #expect(throws: IPv6HeaderChainError.limitExceeded("more than 8 headers")) { try packet(first: 60, nine).headerChain() }
        var limits = IPv6ExtensionLimits()
        limits.maximumHeaders = 9
        #expect(try packet(first: 60, nine).headerChain(limits: limits).headerCount == 9)
        limits.maximumBytes = 64
        #expect(throws: IPv6HeaderChainError.limitExceeded("more than 64 bytes of headers")) { try packet(first: 60, nine).headerChain(limits: limits) }
        // Options one after another: PadN of length 0 is one option each.
        var many = IPv6ExtensionLimits()
        many.maximumOptions = 2
        #expect(throws: IPv6HeaderChainError.limitExceeded("more than 2 options")) {
            try packet(first: 60, [(17, options([1, 0, 1, 0, 1, 0]))]).headerChain(limits: many)
        }
    }

    @Test func hopByHopAnywhereButFirstIsAParameterProblem() {
        #expect(throws: IPv6HeaderChainError.parameterProblem(code: 1, pointer: 40, unlessMulticast: false)) {
            try packet(first: 60, [(0, options([])), (17, options([]))]).headerChain()
        }
    }

    @Test func unrecognizedOptionsFollowTheirActionBits() throws {
        // 00: skipped.
        #expect(try packet(first: 60, [(17, options([0x1E, 0]))]).headerChain().upperLayer == .udp)
        // 01: dropped silently.
        #expect(throws: IPv6HeaderChainError.discard(optionType: 0x5E)) { try packet(first: 60, [(17, options([0x5E, 0]))]).headerChain() }
        // 10: a parameter problem pointing at the option's type byte (40 + 2).
        #expect(throws: IPv6HeaderChainError.parameterProblem(code: 2, pointer: 42, unlessMulticast: false)) {
            try packet(first: 60, [(17, options([0x9E, 0]))]).headerChain()
        }
        // 11: the same, unless the packet went to a multicast address.
        #expect(throws: IPv6HeaderChainError.parameterProblem(code: 2, pointer: 42, unlessMulticast: true)) {
            try packet(first: 60, [(17, options([0xDE, 0]))]).headerChain()
        }
        // An option running past its header is malformed.
        #expect(throws: IPv6HeaderChainError.malformed(.malformedOption(kind: 1, reason: "length 9 runs past its header"))) {
            try packet(first: 60, [(17, options([1, 9]))]).headerChain()
        }
    }

    @Test func routingHeaderWithSegmentsLeftIsRefused() throws {
        // Type 4 (segment routing), segments left 1: we would have to route.
        #expect(throws: IPv6HeaderChainError.parameterProblem(code: 0, pointer: 42, unlessMulticast: false)) {
            try packet(first: 43, [(17, [0, 4, 1, 0, 0, 0, 0])]).headerChain()
        }
        // Segments left 0: ignored, the walk goes on.
        #expect(try packet(first: 43, [(17, [0, 4, 0, 0, 0, 0, 0])]).headerChain().upperLayer == .udp)
    }

    @Test func atomicFragmentIsWalkedThrough() throws {
        let chain = try packet(first: 44, [(17, [0, 0, 0, 0, 0, 0, 7])]).headerChain()
        #expect(chain.upperLayer == .udp && chain.upperLayerOffset == 48)
        #expect(chain.fragment?.isAtomic == true && chain.fragment?.identification == 7)
    }

    @Test func laterFragmentCarriesNoUpperLayerHeader() throws {
        // Offset 1448 (0x05A8), no more fragments.
        let chain = try packet(first: 44, [(58, [0, 0x05, 0xA8, 0, 0, 0, 1])]).headerChain()
        #expect(chain.fragment == IPv6FragmentHeader(nextHeader: .icmpv6, offset: 1448, moreFragments: false, identification: 1))
        #expect(chain.upperLayerOffset == 48)
    }

    @Test func aHeaderRunningPastThePacketIsMalformed() throws {
        // A destination options header claiming 16 bytes where 16 are present (8 header + 8 upper)
        // is fine; claiming 24 is not.
        #expect(try packet(first: 60, [(59, [1, 0, 0, 0, 0, 0, 0])]).headerChain().upperLayer == .ipv6NoNextHeader)
        #expect(throws: IPv6HeaderChainError.malformed(.lengthExceedsBuffer(field: "extension header length", value: 24, available: 16))) {
            try packet(first: 60, [(17, [2, 0, 0, 0, 0, 0, 0])]).headerChain()
        }
    }
}
