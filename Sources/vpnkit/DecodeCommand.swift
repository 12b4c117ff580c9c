import ArgumentParser
import VPNKitDecode
import VPNKitPcap

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct DecodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Decode every frame of a pcap or pcapng capture with SwiftVPNKit's own parsers.",
        discussion: """
            Plain output is one line per frame. With --json, one JSON object per frame with the keys \
            frame, len, eth, arp, ipv4, icmp, udp, tcp, dhcp and error (absent layers are omitted). \
            Exit status 0 when the file was read, 1 when it cannot be opened or is not a capture.
            """
    )

    @Argument(help: "The capture file (pcap or pcapng; Ethernet or raw IPv4 link type).")
    var file: String

    @Flag(help: "Print one JSON object per frame.")
    var json = false

    func run() throws {
        var decoder: CaptureDecoder
        do {
            decoder = try CaptureDecoder(path: file)
        } catch {
            printError("vpnkit decode: \(error)")
            throw ExitCode(1)
        }
        var output = ""
        output.reserveCapacity(1 << 16)
        while let frame = decoder.next() {
            if json { frame.json.write(to: &output) } else { output += frame.line }
            output += "\n"
            if output.utf8.count >= 1 << 16 {
                print(output, terminator: "")
                output.removeAll(keepingCapacity: true)
            }
        }
        print(output, terminator: "")
        if let error = decoder.reader.readError {
            // A capture cut short still decodes what it holds; say so without failing.
            printError("vpnkit decode: \(error) (the capture ends early)")
        }
    }
}

/// Writes a line to standard error (fd 2).
func printError(_ message: String) {
    let line = Array((message + "\n").utf8)
    var written = 0
    while written < line.count {
        let n = line[written...].withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        written += n
    }
}
