// A stack over a descriptor the embedder hands over: one end of a socketpair, in both framings.
// The test is the guest on the other end: it writes an ARP answer and an ICMP echo request as
// raw frames and expects the echo reply, as a VM behind Virtualization.framework's file-handle
// attachment (datagrams) or `qemu -netdev socket,fd=` (qemu's stream framing) would.

import Foundation
import Testing
import VPNKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("Link over an embedder's descriptor")
struct DescriptorLinkTests {
    static let guestMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x07]
    static let guestIP: [UInt8] = [10, 9, 0, 7]

    @Test("socketpair (datagram, then qemu stream framing): the stack answers ARP and ping; shutdown closes the descriptor", arguments: [false, true])
    func ping(stream: Bool) async throws {
        var fds: [Int32] = [-1, -1]
        let type = stream ? Int32(SOCK_STREAM.rawValue) : Int32(SOCK_DGRAM.rawValue)
        #expect(socketpair(AF_UNIX, type, 0, &fds) == 0)
        let guest = GuestEnd(fd: fds[1], stream: stream)
        defer { close(fds[1]) }
        let configuration = StackConfiguration(subnet: IPv4Subnet("10.9.0.0/24")!)
        let stack = try await UserspaceStack.start(
            configuration: configuration, link: .fileDescriptor(fds[0], framing: stream ? .qemuStream : .datagram))
        let gateway = configuration.gateway
        let gatewayIP = [UInt8(gateway.rawValue >> 24), UInt8(gateway.rawValue >> 16 & 0xFF), UInt8(gateway.rawValue >> 8 & 0xFF), UInt8(gateway.rawValue & 0xFF)]

        let stackMAC = (0..<6).map { UInt8(configuration.macAddress.rawValue >> (40 - 8 * UInt64($0)) & 0xFF) }
        var replies = 0
        for sequence in 1...3 as ClosedRange<UInt16> {
            let payload = Array("ping \(sequence) through a socketpair".utf8)
            try guest.write(Self.echoRequest(to: gatewayIP, stackMAC: stackMAC, sequence: sequence, payload: payload))
            // Answer the stack's ARP requests for us until the echo reply comes.
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline, let frame = try guest.read(timeout: 1) {
                if frame.count >= 42, frame[12] == 0x08, frame[13] == 0x06, frame[21] == 1, Array(frame[38..<42]) == Self.guestIP {
                    try guest.write(Self.arpReply(to: Array(frame[6..<12]), senderIP: Self.guestIP, targetIP: Array(frame[28..<32])))
                    continue
                }
                guard frame.count >= 42, frame[12] == 0x08, frame[13] == 0x00, frame[23] == 1 else { continue }
                let ihl = Int(frame[14] & 0x0F) * 4
                let icmp = Array(frame[(14 + ihl)...])
                #expect(icmp[0] == 0, "ICMP type \(icmp[0])")
                #expect(UInt16(icmp[6]) << 8 | UInt16(icmp[7]) == sequence)
                #expect(Array(icmp[8...]) == payload)
                #expect(Self.checksum(icmp) == 0, "ICMP checksum")
                #expect(Array(frame[0..<6]) == Self.guestMAC)
                replies += 1
                break
            }
        }
        #expect(replies == 3)
        let report = try await stack.report()
        let received = report[group: "link"]?.counters.first { $0.name == "frames_received" }?.value ?? 0
        #expect(received >= 3, "\(report.summary)")
        await stack.shutdown()
        // The link owned fds[0]: after shutdown our end sees the peer gone.
        #expect(try guest.peerClosed(), "the stack's end is still open after shutdown")
    }

    static func echoRequest(to destination: [UInt8], stackMAC: [UInt8]?, sequence: UInt16, payload: [UInt8]) -> [UInt8] {
        var icmp: [UInt8] = [8, 0, 0, 0, 0x12, 0x34, UInt8(sequence >> 8), UInt8(sequence & 0xFF)] + payload
        let sum = checksum(icmp)
        icmp[2] = UInt8(sum >> 8)
        icmp[3] = UInt8(sum & 0xFF)
        let length = 20 + icmp.count
        var ip: [UInt8] = [0x45, 0, UInt8(length >> 8), UInt8(length & 0xFF), 0, 1, 0x40, 0, 64, 1, 0, 0] + guestIP + destination
        let ipSum = checksum(ip)
        ip[10] = UInt8(ipSum >> 8)
        ip[11] = UInt8(ipSum & 0xFF)
        return (stackMAC ?? [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]) + guestMAC + [0x08, 0x00] + ip + icmp
    }

    static func arpReply(to mac: [UInt8], senderIP: [UInt8], targetIP: [UInt8]) -> [UInt8] {
        mac + guestMAC + [0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2] + guestMAC + senderIP + mac + targetIP
    }

    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var index = 0
        while index + 1 < bytes.count {
            sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }
}

/// The guest's end of the socketpair: frames as datagrams, or behind a 4-byte big-endian length.
struct GuestEnd {
    let fd: Int32
    let stream: Bool

    func write(_ frame: [UInt8]) throws {
        let bytes = stream ? [UInt8(frame.count >> 24), UInt8(frame.count >> 16 & 0xFF), UInt8(frame.count >> 8 & 0xFF), UInt8(frame.count & 0xFF)] + frame : frame
        let written = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard written == bytes.count else { throw POSIXError(.EIO) }
    }

    /// The next frame, or nil when none came within `timeout` seconds.
    func read(timeout: Double) throws -> [UInt8]? {
        if stream {
            guard let header = try readExactly(4, timeout: timeout) else { return nil }
            let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
            return try readExactly(length, timeout: timeout)
        }
        guard wait(timeout: timeout) else { return nil }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count >= 0 else { throw POSIXError(.EIO) }
        return Array(buffer[..<count])
    }

    /// Whether the other end has closed: a read that returns end of stream, or (datagrams) a send
    /// that fails because nobody is connected.
    func peerClosed() throws -> Bool {
        if stream {
            guard wait(timeout: 2) else { return false }
            var byte: UInt8 = 0
            return recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) == 0
        }
        var byte: UInt8 = 0
        for _ in 0..<20 {
            if send(fd, &byte, 1, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) < 0 && (errno == ECONNREFUSED || errno == ENOTCONN || errno == EPIPE) {
                return true
            }
            usleep(100_000)
        }
        return false
    }

    private func readExactly(_ count: Int, timeout: Double) throws -> [UInt8]? {
        var bytes: [UInt8] = []
        while bytes.count < count {
            guard wait(timeout: timeout) else { return nil }
            var chunk = [UInt8](repeating: 0, count: count - bytes.count)
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard got > 0 else { throw POSIXError(.EPIPE) }
            bytes += chunk[..<got]
        }
        return bytes
    }

    private func wait(timeout: Double) -> Bool {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, Int32(timeout * 1000)) > 0
    }
}
