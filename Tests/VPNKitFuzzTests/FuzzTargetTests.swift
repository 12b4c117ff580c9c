import Foundation
import Testing
import VPNKitBase
import VPNKitFuzzTargets
import VPNKitTestSupport

let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func captures(in folder: URL) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
        .filter { $0.hasSuffix(".pcap") || $0.hasSuffix(".pcapng") }.sorted().map { folder.appendingPathComponent($0).path }
}

@Suite("Fuzz targets on seeds, mutations and regressions")
struct FuzzTargetTests {
    @Test("Every target runs clean on the seeds cut from our own kernel captures")
    func ownFixtures() {
        var inputs: [FuzzTarget: Int] = [:]
        for path in captures(in: root.appendingPathComponent("Fixtures")) {
            for (target, seeds) in FuzzSeeds.extract(fromCapture: path) {
                for seed in seeds { target.run(seed) }
                inputs[target, default: 0] += seeds.count
            }
        }
        // Every target got seeds from the fixtures (they hold ARP, ICMP, ICMPv6 with neighbour
        // discovery, UDP, TCP, DHCP and DNS traffic over both families).
        for target in FuzzTarget.allCases {
            #expect((inputs[target] ?? 0) > 0, "no seeds for \(target)")
        }
    }

    @Test(
        "Every target runs clean on tcpdump's malformed captures",
        .enabled(if: runsHere(hasTcpdumpCorpus), corpusSkipReason), .requires(hasTcpdumpCorpus, corpusSkipReason))
    func tcpdumpCaptures() throws {
        let paths = captures(in: try #require(tcpdumpCorpusDirectory))
        try #require(!paths.isEmpty, "the corpus folder holds no captures")
        var total = 0
        for path in paths {
            for (target, seeds) in FuzzSeeds.extract(fromCapture: path) {
                for seed in seeds { target.run(seed) }
                total += seeds.count
            }
        }
        #expect(total > 100)
    }

    @Test("Seeded mutations: 300 per target (byte flips, truncations, splices), none traps")
    func mutations() {
        var seedsByTarget: [FuzzTarget: [[UInt8]]] = [:]
        for path in captures(in: root.appendingPathComponent("Fixtures")) {
            for (target, seeds) in FuzzSeeds.extract(fromCapture: path, maximumFrames: 60) { seedsByTarget[target, default: []] += seeds }
        }
        var random = SplitMix64(seed: 0x5EED)
        for target in FuzzTarget.allCases {
            let seeds = seedsByTarget[target] ?? [[0]]
            let runs = target == .stack ? 40 : 300
            for _ in 0..<runs {
                var input = seeds[Int(random.next() % UInt64(seeds.count))]
                switch random.next() % 3 {
                case 0:
                    for _ in 0..<(1 + random.next() % 8) where !input.isEmpty {
                        input[Int(random.next() % UInt64(input.count))] ^= UInt8(truncatingIfNeeded: random.next() | 1)
                    }
                case 1:
                    input = Array(input.prefix(Int(random.next() % UInt64(input.count + 1))))
                default:
                    let other = seeds[Int(random.next() % UInt64(seeds.count))]
                    input = Array(input.prefix(Int(random.next() % UInt64(input.count + 1)))) + other.suffix(Int(random.next() % UInt64(other.count + 1)))
                }
                target.run(input)
            }
        }
    }

    @Test("Inputs that once crashed a target (Fuzz/Regressions/TARGET/*) run clean")
    func regressions() throws {
        let folder = root.appendingPathComponent("Fuzz/Regressions")
        var count = 0
        for target in FuzzTarget.allCases {
            let directory = folder.appendingPathComponent(target.rawValue)
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).sorted() {
                let data = try Data(contentsOf: directory.appendingPathComponent(name))
                target.run([UInt8](data))
                count += 1
            }
        }
        print("fuzz regressions: \(count) inputs")
    }
}
