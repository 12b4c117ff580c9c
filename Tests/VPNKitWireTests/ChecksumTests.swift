import NIOCore
import Testing
import VPNKitBase

@Suite("Internet checksum")
struct ChecksumTests {
    @Test("RFC 1071 §3 example: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2")
    func rfc1071Example() {
        let data = hex("00 01 f2 03 f4 f5 f6 f7")
        var c = InternetChecksum()
        data.withUnsafeBytes { c.add(bytes: $0) }
        #expect(c.sum == 0xDDF2)
        #expect(c.value == 0x220D)
    }

    @Test("agrees with the reference for every length 0…300 and random contents")
    func matchesReference() {
        var rng = SeededGenerator(seed: 1071)
        for length in 0...300 {
            let data = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(InternetChecksum.checksum(of: buffer(data)) == referenceChecksum(data), "length \(length)")
        }
        for length in [1499, 1500, 9000, 65535, 65536] {
            let data = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(InternetChecksum.checksum(of: buffer(data)) == referenceChecksum(data), "length \(length)")
        }
    }

    @Test("all-0xFF data sums without losing carries")
    func carries() {
        let data = [UInt8](repeating: 0xFF, count: 65536)
        #expect(InternetChecksum.checksum(of: buffer(data)) == referenceChecksum(data))
        let big = [UInt8](repeating: 0xFF, count: 65537)
        #expect(InternetChecksum.checksum(of: buffer(big)) == referenceChecksum(big))
    }

    @Test("splitting the data anywhere, odd splits included, gives the same sum")
    func splitAnywhere() {
        var rng = SeededGenerator(seed: 7)
        let data = (0..<257).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let whole = referenceChecksum(data)
        for cut1 in stride(from: 0, through: 257, by: 3) {
            for cut2 in stride(from: cut1, through: 257, by: 7) {
                var c = InternetChecksum()
                c.add(buffer(data), offset: 0, length: cut1)
                c.add(buffer(data), offset: cut1, length: cut2 - cut1)
                c.add(buffer(data), offset: cut2)
                #expect(c.value == whole, "cuts \(cut1) \(cut2)")
            }
        }
    }

    @Test("16- and 32-bit additions equal adding their big-endian bytes")
    func wordAdds() {
        var a = InternetChecksum()
        a.add(UInt32(0xC0A8_0001))
        a.add(UInt16(0x0011))
        #expect(a.value == referenceChecksum([0xC0, 0xA8, 0x00, 0x01, 0x00, 0x11]))
    }

    @Test("a range outside the buffer is clamped, never trapping")
    func clampedRange() {
        let data = buffer([1, 2, 3, 4])
        var c = InternetChecksum()
        c.add(data, offset: 2, length: 100)
        c.add(data, offset: 50, length: 10)
        c.add(data, offset: -3, length: 1)
        c.add(data, offset: 3, length: Int.max)  // overflowing end: to the end of the buffer
        c.add(data, offset: Int.max, length: Int.max)
        #expect(c.value == referenceChecksum([3, 4, 4]))
    }

    @Test("RFC 1624 incremental update equals recomputation")
    func incremental() {
        var rng = SeededGenerator(seed: 1624)
        for _ in 0..<500 {
            var data = (0..<40).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let before = referenceChecksum(data)
            let position = Int.random(in: 0..<20, using: &rng) * 2
            let old = UInt16(data[position]) << 8 | UInt16(data[position + 1])
            let new = UInt16.random(in: 0...0xFFFF, using: &rng)
            data[position] = UInt8(new >> 8)
            data[position + 1] = UInt8(new & 0xFF)
            let updated = InternetChecksum.updated(before, old: old, new: new)
            // Both encodings of zero are the same ones'-complement number.
            let recomputed = referenceChecksum(data)
            #expect(updated == recomputed || (updated ^ recomputed) == 0xFFFF && (updated == 0 || recomputed == 0))
        }
        // A 32-bit field (an address), as NAT rewrites it.
        var data = hex("c0a8 0001 0a00 0002 1234")
        let before = referenceChecksum(data)
        data.replaceSubrange(0..<4, with: [10, 0, 0, 9])
        #expect(InternetChecksum.updated(before, old: UInt32(0xC0A8_0001), new: UInt32(0x0A00_0009)) == referenceChecksum(data))
    }
}

@Suite("Addresses and byte loads")
struct AddressTests {
    @Test func ipv4Text() {
        #expect(IPv4Address("192.168.65.1") == IPv4Address(192, 168, 65, 1))
        #expect(IPv4Address(192, 168, 65, 1).description == "192.168.65.1")
        #expect(IPv4Address(0, 0, 0, 0).description == "0.0.0.0")
        for bad in ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1..2.3", "a.b.c.d", "1.2.3.4 ", "-1.2.3.4", "1234.1.1.1"] {
            #expect(IPv4Address(bad) == nil, "\(bad)")
        }
        #expect(IPv4Address(224, 0, 0, 1).isMulticast)
        #expect(IPv4Address(127, 0, 0, 1).isLoopback)
    }

    @Test func macText() {
        let mac = MACAddress("52:54:00:12:34:56")
        #expect(mac?.rawValue == 0x5254_0012_3456)
        #expect(mac?.description == "52:54:00:12:34:56")
        #expect(MACAddress("52-54-00-12-34-5a")?.description == "52:54:00:12:34:5a")
        #expect(MACAddress("52:54:00:12:34") == nil)
        #expect(MACAddress("52:54:00:12:34:5g") == nil)
        #expect(MACAddress.broadcast.isBroadcast && MACAddress.broadcast.isMulticast)
        #expect(!(mac?.isMulticast ?? true))
    }

    @Test("view loads are big-endian, relative to the reader index, and out-of-range reads give 0")
    func loads() {
        var data = buffer([0xAA, 1, 2, 3, 4, 5, 6, 7])
        data.moveReaderIndex(forwardBy: 1)
        let view = ByteView(data)
        #expect(view.count == 7)
        #expect(view.loadU8(at: 0) == 1)
        #expect(view.loadU16(at: 0) == 0x0102)
        #expect(view.loadU32(at: 1) == 0x0203_0405)
        #expect(view.loadU48(at: 1) == 0x0203_0405_0607)
        #expect(view.loadU32(at: 4) == 0)  // one byte short
        #expect(view.loadU16(at: -1) == 0)
        #expect(view.loadU8(at: 7) == 0)
        #expect(view.loadU8(at: Int.max) == 0 && view.loadU32(at: Int.max - 1) == 0)
        // Sub-views are clamped to their parent and share its bytes.
        let sub = view.view(from: 2, length: 3)
        #expect(sub.array == [3, 4, 5])
        #expect(sub.loadU16(at: 2) == 0)
        #expect(sub.buffer.readableByteArray == [3, 4, 5])
        #expect(view.view(from: 5, length: 100).array == [6, 7])
        #expect(view.view(from: 9).count == 0)
        #expect(view.view(from: -4, length: 5).array == [1])
        #expect(view.view(from: 2, length: Int.max).array == [3, 4, 5, 6, 7])
        #expect(view.view(from: Int.max, length: Int.max).count == 0)
        #expect(view.view(from: Int.min, length: Int.max).count == 0)
        #expect(ByteView(ByteBuffer()).loadU8(at: 0) == 0)
    }

    @Test("a view keeps its bytes when the buffer it came from is changed afterwards")
    func viewIsImmutable() {
        var data = buffer([1, 2, 3, 4])
        let view = ByteView(data)
        data.setInteger(UInt8(9), at: data.readerIndex)
        data.writeBytes([5, 6])
        #expect(view.array == [1, 2, 3, 4])
        #expect(data.readableByteArray == [9, 2, 3, 4, 5, 6])
    }

    @Test("the header writer stores big-endian and ignores out-of-range stores")
    func writer() {
        var data = ByteBuffer.withHeadroom(8, capacity: 2)
        data.writeBytes([0xEE, 0xEE])
        data.withHeaderWriter(length: 8) { header in
            #expect(header.count == 10)
            header.storeU16(0xBEEF, at: 0)
            header.storeU32(0xDEAD_BEEF, at: 2)
            header.storeU8(7, at: 6)
            header.storeU48(0x0102_0304_0506, at: 9)  // out of range: ignored
            header.storeU16(1, at: -1)  // ignored
            header.storeBytes([1, 2, 3], at: 8)  // clamped to two bytes
        }
        #expect(data.readableByteArray == [0xBE, 0xEF, 0xDE, 0xAD, 0xBE, 0xEF, 7, 0, 1, 2])
    }

    @Test("prepending uses the headroom in place, or copies once when there is none")
    func prepend() {
        var withRoom = ByteBuffer.withHeadroom(20, capacity: 4)
        withRoom.writeBytes([9, 9, 9, 9])
        let storageBefore = withRoom.storageCapacity
        withRoom.prependHeader(length: 8)
        #expect(withRoom.readableByteArray == [0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9])
        #expect(withRoom.readerIndex == 12)
        #expect(withRoom.storageCapacity == storageBefore)

        var noRoom = buffer([7, 7])
        noRoom.prependHeader(length: 3)
        #expect(noRoom.readableByteArray == [0, 0, 0, 7, 7])
        #expect(noRoom.readerIndex >= Headroom.maximum)
    }
}
