// Sequence number arithmetic modulo 2^32 (RFC 9293 §3.4), across the wrap.

import Testing
@testable import VPNKitTCP

@Suite struct SequenceNumberTests {
    @Test func comparesInModularOrderAcrossTheWrap() {
        let beforeWrap = SequenceNumber(0xFFFF_FFF0)
        let afterWrap = SequenceNumber(0x10)
        #expect(beforeWrap < afterWrap)
        #expect(!(afterWrap < beforeWrap))
        #expect(afterWrap > beforeWrap)
        #expect(!(beforeWrap < beforeWrap))
        // Ordinary numbers compare as integers.
        #expect(SequenceNumber(100) < SequenceNumber(200))
        #expect(!(SequenceNumber(200) < SequenceNumber(100)))
    }

    @Test func addsAndSubtractsWrapping() {
        let near = SequenceNumber(0xFFFF_FFFE)
        #expect((near + 5).rawValue == 3)
        #expect((SequenceNumber(3) + -5).rawValue == 0xFFFF_FFFE)
        #expect(SequenceNumber(3) - near == 5)
        #expect(near - SequenceNumber(3) == -5)
        // rhs + (lhs - rhs) == lhs, whichever side of the wrap.
        for (a, b) in [(UInt32(10), UInt32(0xFFFF_FF00)), (0x8000_0000, 0x7FFF_FFFF), (0, 0)] {
            let lhs = SequenceNumber(a), rhs = SequenceNumber(b)
            #expect(rhs + (lhs - rhs) == lhs)
        }
    }

    @Test func halfTheSpaceAheadIsStillAhead() {
        let base = SequenceNumber(0xC000_0000)
        // Up to 2^31 − 1 ahead counts as later; further ahead is taken as behind.
        #expect(base < base + Int(Int32.max))
        #expect(base + Int(Int32.max) - base == Int(Int32.max))
        let tooFar = base + (1 << 31) + 1
        #expect(!(base < tooFar))
        #expect(tooFar < base)
        #expect(tooFar - base == -Int(Int32.max))
    }

    @Test func describesItselfInDecimal() {
        #expect(SequenceNumber(4_294_967_295).description == "4294967295")
    }
}
