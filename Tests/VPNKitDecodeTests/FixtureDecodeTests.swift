import Foundation
import NIOCore
import Testing
import VPNKitBase
import VPNKitDecode
import VPNKitPcap
import VPNKitTestSupport

/// The package root, found from this file's path (Tests/VPNKitDecodeTests/…).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
let fixtures = packageRoot.appendingPathComponent("Fixtures")

func fixtureCaptures() -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: fixtures.path)) ?? []
    return names.filter { $0.hasSuffix(".pcap") || $0.hasSuffix(".pcapng") }.sorted()
}

/// JSON text in a canonical form (sorted keys) so two encodings of the same object compare equal.
func canonical(_ text: String) throws -> String {
    let object = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .fragmentsAllowed])
    return String(decoding: data, as: UTF8.self)
}

@Suite("Decoding the recorded kernel captures")
struct FixtureDecodeTests {
    @Test("the fixtures are there (a clone without them is broken)")
    func fixturesPresent() {
        #expect(fixtureCaptures().count >= 10, "Fixtures/ at \(fixtures.path)")
    }

    @Test("every frame decodes to exactly the tshark-derived expectation", arguments: fixtureCaptures())
    func matchesTshark(capture: String) throws {
        let expectedPath = fixtures.appendingPathComponent(
            capture.replacingOccurrences(of: ".pcapng", with: "").replacingOccurrences(of: ".pcap", with: "") + ".expected.jsonl")
        let expected = try String(contentsOf: expectedPath, encoding: .utf8).split(separator: "\n").map(String.init)
        var decoder = try CaptureDecoder(path: fixtures.appendingPathComponent(capture).path)
        var index = 0
        while let frame = decoder.next() {
            try #require(index < expected.count, "more frames than expected in \(capture)")
            let ours = try canonical(frame.json.serialized)
            let theirs = try canonical(expected[index])
            #expect(ours == theirs, "\(capture) frame \(index + 1)")
            index += 1
        }
        #expect(decoder.reader.readError == nil)
        #expect(index == expected.count, "\(capture): decoded \(index) frames, expected \(expected.count)")
    }
}

@Suite("Decoding hostile captures")
struct CorpusDecodeTests {
    @Test(
        "every capture in tcpdump's corpus decodes without a trap",
        .enabled(if: runsHere(hasTcpdumpCorpus), corpusSkipReason), .requires(hasTcpdumpCorpus, corpusSkipReason))
    func tcpdumpCorpus() throws {
        let corpus = try #require(tcpdumpCorpusDirectory)
        let names = try FileManager.default.contentsOfDirectory(atPath: corpus.path)
            .filter { $0.hasSuffix(".pcap") || $0.hasSuffix(".pcapng") }.sorted()
        #expect(names.count > 10)
        var frames = 0
        var errors = 0
        var opened = 0
        for name in names {
            guard var decoder = try? CaptureDecoder(path: corpus.appendingPathComponent(name).path) else { continue }
            opened += 1
            while let frame = decoder.next() {
                frames += 1
                // Rendering both forms must not trap either.
                _ = frame.json.serialized
                _ = frame.line
                if frame.error != nil { errors += 1 }
            }
        }
        print("tcpdump corpus: \(opened) of \(names.count) captures opened, \(frames) frames, \(errors) with a decode error")
        #expect(opened > 10)
        #expect(frames > 100)
        #expect(errors > 0, "the corpus holds malformed frames; none reported means errors are swallowed")
    }

    @Test("every truncation of every fixture frame decodes without a trap, and errors name their layer")
    func truncations() throws {
        let layers = ["eth:", "arp:", "ipv4:", "ipv6:", "icmp:", "icmpv6:", "ndp:", "udp:", "tcp:", "dhcp:", "dns:"]
        for capture in fixtureCaptures() {
            let reader = try PcapReader(path: fixtures.appendingPathComponent(capture).path)
            let decoder = FrameDecoder(linkType: reader.linkType.rawValue)
            for record in reader.prefix(40) {
                for length in stride(from: 0, through: record.data.readableBytes, by: 1) {
                    let frame = decoder.decode(record.data.getSlice(at: record.data.readerIndex, length: length)!, number: 1)
                    if let error = frame.error {
                        #expect(layers.contains { error.hasPrefix($0) }, "\(error)")
                    }
                }
            }
        }
    }

    @Test("the documented error text for a total length past the frame")
    func errorText() {
        var bytes: [UInt8] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]
        var ip = [UInt8](repeating: 0, count: 98)
        ip[0] = 0x45
        ip[2] = 0x01; ip[3] = 0x2C  // 300
        bytes += ip
        let frame = FrameDecoder().decode(ByteBuffer(bytes: bytes), number: 1)
        #expect(frame.error == "ipv4: total length 300 exceeds frame (98)")
        #expect(frame.ethernet != nil && frame.ipv4 == nil)
        #expect(frame.json.serialized.hasSuffix("\"error\":\"ipv4: total length 300 exceeds frame (98)\"}"))
    }

    @Test("raw IPv4 captures decode without an eth layer; unknown link types are an error per frame")
    func linkTypes() {
        let ip: [UInt8] = [0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
        let raw = FrameDecoder(linkType: 101).decode(ByteBuffer(bytes: ip), number: 1)
        #expect(raw.ethernet == nil && raw.ipv4 != nil)
        #expect(raw.ipv4?.checksumValid == false)
        let other = FrameDecoder(linkType: 113).decode(ByteBuffer(bytes: ip), number: 1)
        #expect(other.error == "link: unsupported link type 113")
    }
}
