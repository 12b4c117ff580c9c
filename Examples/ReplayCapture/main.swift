// Replays a capture of a real host against the stack, the way a test suite would, and checks that
// the stack answers every frame exactly as the real host did.
//
//   replay-capture [CAPTURE.pcap] [--host-mac MAC] [--host-ip IP] [--subnet CIDR]
//
// With no arguments it replays Fixtures/ping.pcap (ARP and pings, many fragmented, answered by a
// Linux kernel) with the stack in place of that kernel. Exit status 0 when every answer matches.
import Foundation
import VPNKit

var arguments = Array(CommandLine.arguments.dropFirst())
@MainActor func option(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    defer { arguments.removeSubrange(index...index + 1) }
    return arguments[index + 1]
}
let hostMAC = MACAddress(option("--host-mac") ?? "02:00:00:00:00:0b")
let hostIP = IPv4Address(option("--host-ip") ?? "10.200.2.2")
let subnet = IPv4Subnet(option("--subnet") ?? "10.200.2.0/24")
let capture = arguments.first
    ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fixtures/ping.pcap").standardized.path
guard let hostMAC, let hostIP, let subnet else {
    FileHandle.standardError.write(Data("usage: replay-capture [CAPTURE.pcap] [--host-mac MAC] [--host-ip IP] [--subnet CIDR]\n".utf8))
    exit(2)
}

// The stack takes the recorded host's place: same MAC, same address, no announcement of its own.
var configuration = StackConfiguration(macAddress: hostMAC, subnet: subnet, gateway: hostIP)
configuration.gratuitousARPOnStart = false
let stack = NetworkStack(configuration: configuration)

// Frames the IPv4 stack cannot be expected to answer as the kernel did are left out: IPv6, and
// datagrams with IP options (the kernel honours record-route; we answer without the option).
func replayable(_ frame: ByteBuffer) -> Bool {
    guard let ethernet = try? EthernetFrame(frame) else { return false }
    if ethernet.etherType == .arp { return true }
    guard ethernet.etherType == .ipv4, let ip = try? IPv4Packet(ethernet.payload) else { return false }
    return ip.headerLength == 20
}

/// The fields two correct stacks may choose differently: the IP identification and the header
/// checksum that covers it.
func comparable(_ frame: ByteBuffer) -> [UInt8] {
    var bytes = frame.getBytes(at: frame.readerIndex, length: frame.readableBytes) ?? []
    if let ethernet = try? EthernetFrame(frame), ethernet.etherType == .ipv4 {
        let ip = ethernet.headerLength
        for offset in [4, 5, 10, 11] { bytes[ip + offset] = 0 }
    }
    return bytes
}

do {
    let result = try CaptureReplay.run(capture: capture, against: stack, standingInFor: hostMAC, include: replayable)
    var mismatches = 0
    for (index, (ours, theirs)) in zip(result.answers, result.recordedAnswers).enumerated() where comparable(ours) != comparable(theirs) {
        mismatches += 1
        print("answer \(index + 1) differs: ours \(ours.readableBytes) bytes, recorded \(theirs.readableBytes) bytes")
    }
    let counts = result.answers.count == result.recordedAnswers.count
    print(
        "\(capture): replayed \(result.framesReplayed) frames; the stack sent \(result.answers.count) answers, the recorded host \(result.recordedAnswers.count); \(mismatches) differ"
    )
    let nonZero = stack.statistics.nonZero.map { "\($0.name)=\($0.value)" }.joined(separator: " ")
    print("counters: \(nonZero)")
    exit(counts && mismatches == 0 && result.framesReplayed > 0 ? 0 : 1)
} catch {
    print("cannot replay \(capture): \(error)")
    exit(1)
}
