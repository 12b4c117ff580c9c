import Benchmark
import Foundation
import NIOCore
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv4
import VPNKitTCP

// Wall-clock derived throughput and allocation counts; this machine has no hardware instruction
// counter, so no instruction metrics are listed.
let metrics: [BenchmarkMetric] = [.throughput, .wallClock, .cpuTotal, .mallocCountTotal]

let source = IPv4Address(192, 168, 65, 3)
let destination = IPv4Address(192, 168, 65, 1)

/// A 1514-byte Ethernet/IPv4/TCP frame with the timestamps option, as a bulk data segment looks.
func sampleFrame() -> ByteBuffer {
    var frame = ByteBuffer.withHeadroom(capacity: 1448)
    frame.writeRepeatingByte(0x61, count: 1448)
    TCPHeader(
        sourcePort: 40000, destinationPort: 80, sequenceNumber: SequenceNumber(1), acknowledgmentNumber: SequenceNumber(1),
        flags: [.ack, .psh], window: 502,
        options: TCPHeader.standardOptions(timestamps: (1, 2))
    ).prepend(to: &frame, source: .v4(source), destination: .v4(destination))
    IPv4Header(source: source, destination: destination, protocol: .tcp, identification: 7, dontFragment: true)
        .prepend(to: &frame)
    EthernetHeader(
        destination: MACAddress(rawValue: 0x5255_0A00_0201), source: MACAddress(rawValue: 0x5254_0012_3456),
        etherType: .ipv4
    ).prepend(to: &frame)
    return frame
}

func randomBytes(_ count: Int) -> ByteBuffer {
    var generator = SystemRandomNumberGenerator()
    var buffer = ByteBuffer()
    buffer.writeBytes((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
    return buffer
}

/// CI sets VPNKIT_BENCH_SMOKE=1: every benchmark runs briefly, to prove it builds and runs; the
/// figures then mean nothing.
let smoke = ProcessInfo.processInfo.environment["VPNKIT_BENCH_SMOKE"] == "1"

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: metrics, warmupIterations: smoke ? 0 : 3, scalingFactor: .mega,
        maxDuration: smoke ? .milliseconds(50) : .seconds(2), maxIterations: smoke ? 3 : 1_000)

    stackBenchmarks()
    natBenchmarks()
    gatewayBenchmarks()
    tcpBenchmarks()
    connectionBenchmarks()

    // Parse: validate the three views and read the fields a forwarding decision needs.
    Benchmark("Parse Ethernet+IPv4+TCP views (frames)") { benchmark in
        let frame = sampleFrame()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            do {
                let ethernet = try EthernetFrame(frame)
                let ip = try IPv4Packet(ethernet.payload)
                let tcp = try TCPSegment(ip.payload)
                blackHole(ip.source.rawValue ^ ip.destination.rawValue ^ UInt32(tcp.sourcePort) ^ tcp.sequenceNumber.rawValue)
                blackHole(tcp.payloadLength)
            } catch {
                fatalError("sample frame failed to parse: \(error)")
            }
        }
    }

    // Parse and verify both checksums: what the stack does for every received segment.
    Benchmark("Parse + verify IPv4 and TCP checksums, 1514 B (frames)", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let frame = sampleFrame()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            do {
                let ethernet = try EthernetFrame(frame)
                let ip = try IPv4Packet(ethernet.payload)
                let tcp = try TCPSegment(ip.payload)
                blackHole(ip.isHeaderChecksumValid && tcp.isChecksumValid(source: .v4(ip.source), destination: .v4(ip.destination)))
            } catch {
                fatalError("sample frame failed to parse: \(error)")
            }
        }
    }

    for size in [64, 1500, 65536] {
        // Throughput is reported per iteration; one iteration = one pass over `size` bytes, so
        // bytes/s = throughput × size.
        Benchmark(
            "Checksum \(size) B (passes; × \(size) = bytes/s)",
            configuration: .init(scalingFactor: size >= 65536 ? .kilo : .mega)
        ) { benchmark in
            let data = randomBytes(size)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(InternetChecksum.checksum(of: data))
            }
        }
    }

    // Emit: write TCP, IPv4 and Ethernet headers in place in front of a payload that already sits in a
    // buffer with headroom (the buffer is reused: reset the reader index each time).
    Benchmark("Emit TCP segment in place, 1448 B payload (frames)", configuration: .init(scalingFactor: .kilo)) { benchmark in
        var buffer = ByteBuffer.withHeadroom(capacity: 1448)
        buffer.writeRepeatingByte(0x61, count: 1448)
        let payloadStart = buffer.readerIndex
        let tcp = TCPHeader(
            sourcePort: 80, destinationPort: 40000, sequenceNumber: SequenceNumber(1), acknowledgmentNumber: SequenceNumber(1),
            flags: [.ack], window: 502, options: TCPHeader.standardOptions(timestamps: (1, 2)))
        let ip = IPv4Header(source: destination, destination: source, protocol: .tcp, dontFragment: true)
        let ethernet = EthernetHeader(
            destination: MACAddress(rawValue: 0x5254_0012_3456), source: MACAddress(rawValue: 0x5255_0A00_0201),
            etherType: .ipv4)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            buffer.moveReaderIndex(to: payloadStart)
            tcp.prepend(to: &buffer, source: .v4(destination), destination: .v4(source))
            ip.prepend(to: &buffer)
            ethernet.prepend(to: &buffer)
            blackHole(buffer.readableBytes)
        }
    }
}
